import Testing
import OffloadCore

@Suite struct MetricsSnapshotTests {
    static let snapshot = MetricsSnapshot([
        .init("engine", [("received", 12), ("dropped: action-drop", 3), ("entries", 7)], gauges: ["entries"]),
        .init("tcp offload", [("tcp offload: segments sent", 40), ("uploaded, no-resources", 1)]),
    ])

    @Test func prometheusTextNamesTypesAndValues() {
        let lines = Self.snapshot.prometheus.split(separator: "\n").map(String.init)
        #expect(lines.contains("# TYPE offload_engine_received_total counter"))
        #expect(lines.contains("offload_engine_received_total 12"))
        #expect(lines.contains("offload_engine_dropped_action_drop_total 3"))
        #expect(lines.contains("# TYPE offload_engine_entries gauge"))
        #expect(lines.contains("offload_engine_entries 7"))
        #expect(lines.contains("offload_tcp_offload_segments_sent_total 40"), "the section's title said once")
        #expect(lines.contains("# HELP offload_engine_dropped_action_drop_total engine: dropped: action-drop"))
        // Every sample line is a valid metric name, a space and an integer.
        for line in lines where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            #expect(parts.count == 2 && UInt64(parts[1]) != nil, "\(line)")
            #expect(parts[0].allSatisfy { $0.isLetter && $0.isLowercase || $0.isNumber || $0 == "_" }, "\(line)")
        }
    }

    @Test func jsonAndTableHoldEveryCounter() {
        let json = Self.snapshot.json
        #expect(json.contains("\"engine\": {\"received\": 12, \"dropped: action-drop\": 3, \"entries\": 7}"))
        let table = Self.snapshot.table
        #expect(table.contains("engine\n  received"))
        #expect(table.contains("  uploaded, no-resources      1"), "\(table)")
    }
}
