import ArgumentParser
import Foundation
import OffloadDemo

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Two simulated hosts talk through a simulated gateway: every byte verified, order checked, a report.",
        discussion: """
            Needs no privileges and no setup: everything runs in one process, in a deterministic \
            simulation (the same seed gives the same run). The client opens --flows TCP connections \
            at once, which both hosts offload to their engines, and sends --bytes on each as \
            zero-copy messages; as many UDP flows (every other one RTP) start at the same moment. \
            The gateway between them routes and source-NATs; its software sets up each new flow \
            while the flow's packets keep coming (the order guard's case). The exit status is 0 \
            when every check held.

            Examples:
              offload demo
              offload demo --loss 0.05 --audit
              offload demo --no-order-guard --pcap demo.pcap
            """)

    @Option(help: "Seed of the simulation: interleavings, losses, data.")
    var seed: UInt64 = 1

    @Option(help: "Fraction of frames each wire drops, both ways (0.05 is 5%). Past 0.1, TCP's exponential backoff can take hours of simulated time (a few seconds of real time); the run gives up after one.")
    var loss = 0.0

    @Option(help: "TCP connections opened at once, and as many UDP flows.")
    var flows = 16

    @Option(help: ArgumentHelp("Bytes each TCP connection sends, up to 1G (K, M and G suffixes: 1M is 1048576).", valueName: "bytes"))
    var bytes = ByteCount(value: 4 << 20)

    @Flag(help: "Audit mode on the gateway: every packet its software re-inserts is checked (B7).")
    var audit = false

    @Flag(help: "Turn the gateway's order guard off, to see the reordering it prevents (B5).")
    var noOrderGuard = false

    @Option(help: "Write every frame the gateway receives and sends to this pcap file (simulated time, from 1970).")
    var pcap: String?

    @Flag(help: "Print the report as JSON (progress goes to standard error).")
    var json = false

    private var configuration: DemoConfiguration {
        var configuration = DemoConfiguration()
        configuration.seed = seed
        configuration.loss = loss
        configuration.flows = flows
        configuration.bytesPerConnection = bytes.value
        configuration.audit = audit
        configuration.orderGuard = !noOrderGuard
        configuration.pcapPath = pcap
        return configuration
    }

    func validate() throws {
        do throws(DemoError) {
            try configuration.validate()
        } catch {
            throw ValidationError("\(error)")
        }
    }

    func run() throws {
        let report: DemoReport
        do {
            report = try Demo.run(configuration) { p in
                let line = "\(String(format: "%5.1f", 100 * Double(p.tcpBytesVerified) / Double(max(1, p.tcpBytesTotal))))% "
                    + "of TCP bytes verified, \(p.connectionsDone)/\(p.connections) connections done, "
                    + "\(p.datagramsVerified)/\(p.datagramsTotal) datagrams, "
                    + "\(String(format: "%.3f", p.simulatedSeconds)) s simulated"
                if json { printToStandardError(line) } else { print(line) }
            }
        } catch {
            throw RunError(message: "offload demo: \(error)")
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(report.text)
            if let pcap { print("capture: \(pcap)") }
        }
        if !report.passed { throw ExitCode.failure }
    }
}

/// A byte count with an optional K, M or G suffix (powers of 1024).
struct ByteCount: ExpressibleByArgument, CustomStringConvertible {
    let value: Int

    init(value: Int) { self.value = value }

    init?(argument: String) {
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        var digits = Substring(argument)
        var scale = 1
        if let last = digits.last?.uppercased().first, let unit = units[last] {
            scale = unit
            digits = digits.dropLast()
        }
        guard let n = Int(digits), n >= 0, n <= Int.max / scale else { return nil }
        value = n * scale
    }

    var description: String { "\(value)" }
    static var defaultValueDescription: String { "4M" }
}
