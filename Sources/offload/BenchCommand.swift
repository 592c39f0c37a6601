import ArgumentParser
import COffloadShim
import OffloadCore

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "End-to-end benchmarks, each with its reference measured in the same run.")

    @Option(help: "Seconds to spend on each measurement.")
    var seconds: Double = 1

    @Flag(help: "Print the results as JSON.")
    var json = false

    @Option(help: "Run only the benchmarks whose name contains this text.")
    var filter: String?

    func validate() throws {
        try OptionChecks.seconds(seconds, "--seconds", above: true)
    }

    func run() throws {
        let all: [(String, () -> [BenchResult])] = [
            ("checksum 1500 B", { [ChecksumBenchmark.run(size: 1500, seconds: seconds)] }),
            ("checksum 65536 B", { [ChecksumBenchmark.run(size: 65536, seconds: seconds)] }),
            ("fast path, 10k flows", { [FastPathBenchmark.run(flows: 10_000, seconds: seconds)] }),
            ("fast path, 1000k flows", { [FastPathBenchmark.run(flows: 1_000_000, seconds: seconds)] }),
            ("flow setup, guard on", { [FlowSetupBenchmark.run(seconds: seconds)] }),
            // One row per storm rate, each `seconds` long; the reference is the no-storm row.
            ("upcall storm, 10k flows", { UpcallStormBenchmark.run(flows: 10_000, seconds: seconds) }),
            ("table memory", { [10_000, 65_536, 1_000_000].map { TableMemoryBenchmark.run(capacity: $0) } }),
            // Root only: namespaces, veths, the kernel as the reference (about 30 measurements).
            ("gateway vs kernel", { GatewayBenchmark(seconds: seconds * 2).run() }),
            // Root only: the references of the TCP benchmarks, each 3 x `seconds` (at least 1 s) in a
            // namespace of its own. `--filter tcp-reference` runs just these two.
            ("tcp-reference: Linux TCP over lo", { TCPReferenceBenchmarks.linuxLoopbackRows(seconds: seconds * 3) }),
            ("tcp-reference: TAP raw frame-write", { TCPReferenceBenchmarks.tapRows(seconds: seconds * 3) }),
            // Root for the references (and the TAP): each 3 x `seconds` for ours and as long for its
            // reference, one after the other. `--filter "tcp host"`: the host's own TCP (issue 5);
            // `--filter "tcp offload"`: connections offloaded to the engine (issue 6).
            ("tcp host: memory link vs Linux lo", { TCPBenchmarks.memoryRows(seconds: seconds * 3) }),
            ("tcp host: to Linux over TAP vs raw frame-write", { TCPBenchmarks.tapRows(seconds: seconds * 3) }),
            ("tcp offload: memory link vs Linux lo", { TCPOffloadBenchmarks.memoryRows(seconds: seconds * 3) }),
            ("tcp offload: to Linux over TAP vs raw frame-write, virtio-net TAP vs veth",
             { TCPOffloadBenchmarks.tapRows(seconds: seconds * 3) }),
            ("tcp offload: engine bytes per connection", { TCPOffloadBenchmarks.memoryRows() }),
        ]
        let results = all.filter { filter == nil || $0.0.contains(filter!) }.flatMap { $0.1() }
        if json {
            print("[" + results.map(\.json).joined(separator: ",\n ") + "]")
        } else {
            print(BenchResult.header)
            for r in results { print(r.line) }
        }
    }
}

/// One benchmark's figure, its reference's figure and the ratio, and the target.
struct BenchResult {
    let name: String
    let value: Double
    let unit: String
    /// The reference measured in the same run, where SPEC.md names one.
    var reference: (name: String, value: Double)?
    let target: String
    /// What else the benchmark measured, printed after the target.
    var detail: String? = nil

    /// None where the reference is 0 (a loss or a count that the reference did not have).
    var ratio: Double? { reference.flatMap { $0.value != 0 ? value / $0.value : nil } }

    static let header = "benchmark".padding(28) + "figure".padding(16) + "reference".padding(28) + "ratio".padding(8) + "target"
    var line: String {
        name.padding(28) + "\(format(value)) \(unit)".padding(16)
            + (reference.map { "\($0.name) \(format($0.value)) \(unit)" } ?? "-").padding(28)
            + (ratio.map(format) ?? "-").padding(8) + target + (detail.map { "  (\($0))" } ?? "")
    }
    var json: String {
        let ref = reference.map { "\"reference\":\"\($0.name)\",\"referenceValue\":\($0.value),\"ratio\":\(ratio.map { String($0) } ?? "null")," } ?? ""
        let more = detail.map { ",\"detail\":\"\($0)\"" } ?? ""
        return "{\"name\":\"\(name)\",\"value\":\(value),\"unit\":\"\(unit)\",\(ref)\"target\":\"\(target)\"\(more)}"
    }
}

func format(_ x: Double) -> String {
    let scaled = (x * 100).rounded() / 100
    return String(scaled)
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self + " " : self + String(repeating: " ", count: width - count) }
}

/// The Internet checksum against memcpy of the same buffer, alternating so both see the
/// same machine state. Best of several rounds, in GB/s.
enum ChecksumBenchmark {
    static func run(size: Int, seconds: Double) -> BenchResult {
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
        let target = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
        defer { source.deallocate(); target.deallocate() }
        for i in 0..<size { source[i] = UInt8(truncatingIfNeeded: i &* 131) }
        var bestChecksum = 0.0, bestCopy = 0.0
        var sink: UInt16 = 0
        let rounds = 10
        let iterations = max(1, Int(seconds * 1e9 / Double(rounds) / 2 / (Double(size) / 20.0)))
        for _ in 0..<rounds {
            var start = offload_monotonic_ns()
            for _ in 0..<iterations { sink ^= InternetChecksum.checksum(UnsafeRawBufferPointer(source)) }
            var elapsed = Double(offload_monotonic_ns() - start)
            bestChecksum = max(bestChecksum, Double(size * iterations) / elapsed)
            start = offload_monotonic_ns()
            for _ in 0..<iterations {
                target.baseAddress!.copyMemory(from: source.baseAddress!, byteCount: size)
                sink ^= UInt16(target[size / 2])
            }
            elapsed = Double(offload_monotonic_ns() - start)
            bestCopy = max(bestCopy, Double(size * iterations) / elapsed)
        }
        if sink == 0x1234 { print("", terminator: "") }  // keeps the work from being optimized away
        return BenchResult(name: "checksum \(size) B", value: bestChecksum, unit: "GB/s",
                           reference: ("memcpy", bestCopy),
                           target: size == 1500 ? ">= 20 GB/s, >= 0.4x memcpy" : "-")
    }
}

/// A benchmark's progress line or note (a skip, a fallback): to standard error, so that
/// standard output holds the results alone, as a table or as JSON.
func benchNote(_ line: String) { printToStandardError(line) }
