import Foundation
import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink

/// A Prometheus text file rewritten in place for node_exporter's textfile collector: each
/// write goes to a file beside it that is then renamed over it, so a reader never sees half
/// of one. A write that fails is reported once, on one line, and the command goes on.
final class MetricsFile {
    let path: String
    private var reported = false

    init(path: String) { self.path = path }

    func write(_ snapshot: MetricsSnapshot) {
        do {
            try snapshot.prometheus.write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            guard !reported else { return }
            reported = true
            print("metrics: cannot write \(path): \(error.localizedDescription)")
        }
    }
}

extension MetricsSnapshot.Section {
    /// An engine's counters, with its table's entries and its buffers held as levels.
    static func engine<P: Link & ~Copyable>(_ engine: Engine<P>) -> Self {
        Self.engine(counters: engine.counters, entries: engine.table.count, buffered: engine.buffered)
    }

    static func engine(counters: EngineCounters, entries: Int, buffered: Int) -> Self {
        .init("engine", counters.rows + [("entries", UInt64(entries)), ("buffered", UInt64(buffered))],
              gauges: ["entries", "buffered"])
    }
}

extension HostEndpoint where Port: ~Copyable {
    /// The counters of a host behind its engine: the engine, its TCP offload, the software,
    /// the host and its TCP.
    func metrics() -> MetricsSnapshot {
        let stack = tcp.counters
        // Copied by the engine's thread when it has one.
        let engine = engineSnapshot
        return MetricsSnapshot([
            .engine(counters: engine.counters, entries: engine.entries, buffered: engine.buffered),
            .init("tcp offload", engine.offload.rows + [("connections now", UInt64(engine.offloadedConnections))],
                  gauges: ["connections now"]),
            .init("software", [("packets handled", slowPath.processed), ("answered", slowPath.answered),
                               ("frames originated", slowPath.originated),
                               ("payload bytes copied", policy.payloadBytesCopied)]
                + slowPath.dropped.sorted { $0.key < $1.key }.map { ("dropped: \($0.key)", $0.value) }),
            .init("host", host.counters.rows),
            .init("tcp", [("connections opened", stack.connectionsOpened),
                          ("connections accepted", stack.connectionsAccepted),
                          ("connections closed", stack.connectionsClosed), ("connections failed", stack.connectionsFailed),
                          ("connections offloaded", stack.connectionsOffloaded),
                          ("connections uploaded", stack.connectionsUploaded),
                          ("segments without socket", stack.segmentsWithoutSocket), ("resets sent", stack.resetsSent),
                          ("syns dropped, backlog full", stack.synsDroppedBacklogFull),
                          ("syn cookies sent", stack.synCookiesSent), ("syn cookies accepted", stack.synCookiesAccepted),
                          ("syn cookies rejected", stack.synCookiesRejected),
                          ("control queue drops", stack.controlQueueDrops),
                          ("open connections", UInt64(tcp.connectionCount)), ("sockets", UInt64(tcp.socketCount))],
                  gauges: ["open connections", "sockets"]),
        ])
    }
}
