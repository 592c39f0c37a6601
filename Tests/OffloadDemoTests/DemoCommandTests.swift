import Foundation
import Testing
import OffloadTestSupport

/// `offload demo` as a user runs it: the built binary, its exit status and its JSON report.
@Suite struct DemoCommandTests {
    static var binary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("offload").path
    }

    struct Run {
        var status: Int32
        var output: String
        var report: [String: Any] = [:]

        func number(_ path: String) -> Double {
            var node: Any? = report
            for key in path.split(separator: ".") { node = (node as? [String: Any])?[String(key)] }
            return (node as? NSNumber)?.doubleValue ?? .nan
        }
    }

    /// Runs the demo with `--json` (progress goes to standard error, which is dropped).
    static func demo(_ arguments: String, timeout: Int = 300) -> Run {
        let result = Shell.run("\(binary) demo \(arguments) --json 2>/dev/null", timeout: timeout)
        var run = Run(status: result.status, output: result.output)
        if let data = result.output.data(using: .utf8),
           let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            run.report = object
        }
        return run
    }

    static func expectEveryByteAndOrder(_ run: Run, _ comment: Comment) {
        #expect(run.status == 0, comment)
        #expect(run.report["passed"] as? Bool == true, comment)
        let total = run.number("configuration.flows") * run.number("configuration.bytesPerConnection")
        #expect(total > 0 && run.number("tcp.bytesVerified") == total, comment)
        #expect(run.number("order.violations") == 0, comment)
        #expect(run.number("order.packetsChecked") > 1000, comment)
        #expect(run.number("udp.outOfOrderAtServer") == 0, comment)
        #expect(run.number("udp.corrupt") == 0 && run.number("udp.duplicates") == 0, comment)
        #expect(run.number("tcp.messagesCompleted") == run.number("tcp.messages"), comment)
    }

    @Test func theDefaultsPassEveryCheck() {
        let run = Self.demo("")
        Self.expectEveryByteAndOrder(run, "\(run.output)")
        #expect(run.number("udp.datagramsLost") == 0)
        #expect(run.number("tcp.hostBytesCopied") == 0, "zero copy")
        #expect(run.number("gateway.fastPath") > run.number("gateway.slowPath"))
    }

    @Test func lossAndAuditStillDeliverEveryByteInOrder() {
        let run = Self.demo("--loss 0.05 --audit")
        Self.expectEveryByteAndOrder(run, "\(run.output)")
        #expect(run.number("wires.framesLost") > 0, "the wires lost frames")
        #expect(run.number("tcp.segmentsRetransmitted") > 0, "TCP made up for them")
        #expect(run.number("gateway.validMarks") + run.number("gateway.audited") > 0, "the audit stage saw packets")
    }

    /// Seed 1 is one where, without the guard, packets of new flows overtake earlier ones
    /// still in the gateway's software; the same run with the guard keeps every flow's order.
    @Test func withoutTheOrderGuardTheReportCountsReordering() {
        let run = Self.demo("--no-order-guard --seed 1")
        #expect(run.status == 0, "\(run.output)")
        #expect(run.report["order"].flatMap { ($0 as? [String: Any])?["guardOn"] as? Bool } == false)
        #expect(run.number("order.violations") > 0, "\(run.output)")
        #expect(run.number("order.flowsReordered") > 0)
        #expect(run.number("udp.outOfOrderAtServer") > 0, "the server sees it too")
        #expect(run.number("tcp.bytesVerified") == run.number("configuration.flows") * run.number("configuration.bytesPerConnection"))
    }

    @Test(.enabled(if: Tools.shouldRun(needing: ["tshark"])))
    func theCaptureOpensInTshark() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("offload-demo-\(getpid()).pcap").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = Shell.run("\(Self.binary) demo --flows 2 --bytes 64K --pcap \(path)", timeout: 120)
        #expect(result.succeeded, "\(result.output)")
        #expect(result.output.contains("every check held"))
        #expect(Tshark.count(in: path, matching: "tcp.flags.syn == 1 && tcp.flags.ack == 0") >= 4,
                "both connections' SYNs, on each side of the gateway")
        #expect(Tshark.count(in: path, matching: "udp.dstport == 5004") > 100)
        #expect(Tshark.problems(in: path) == "", "tshark finds every frame well formed")
    }

    @Test(arguments: ["--loss 1.5", "--flows 0", "--bytes lots", "--seed -1", "--bytes 2G",
                      "--bytes 99999999999G"])
    func badFlagsGetOneClearLineAndAFailingStatus(_ arguments: String) {
        let result = Shell.run("\(Self.binary) demo \(arguments)", timeout: 30)
        #expect(result.status != 0)
        #expect(result.output.contains("Error:"), "\(result.output)")
        #expect(!result.output.contains("Fatal error") && !result.output.contains("Stack dump"), "\(result.output)")
    }
}
