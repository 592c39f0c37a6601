import OffloadCore
import OffloadEngine
import OffloadHost

/// New flows per second through the slow path with the order guard on: every packet is the
/// first of its flow, so each one misses, makes a pending entry, crosses to the software
/// (on the same core here), has its action installed and comes back to be completed.
enum FlowSetupBenchmark {
    static func run(seconds: Double) -> BenchResult {
        let flows = 1 << 20
        var bench = EngineBench(tableCapacity: flows)
        let clock = bench.clock, engine = bench.engine
        let slowPath = SlowPath(exceptions: engine.exceptions, reinsertion: engine.reinsertion, processing: .partial) {
            EngineBench.natForward(sourcePort: $0.sourcePort)
        }
        var frame = [UInt8](repeating: 0, count: EngineBench.frameSize)
        let sinkPool = BufferPool(count: 256, bufferSize: 2048, headroom: 0)
        var sent = 0, completed = 0
        let start = clock.now
        let end = start + .nanoseconds(Int64(seconds * 1e9))
        while clock.now < end, sent + 32 <= flows {
            for _ in 0..<32 {
                let src = IPv4Address(rawValue: 0x0b00_0000 | UInt32(sent))
                frame.withUnsafeMutableBytes { EngineBench.emitUDP(into: $0, source: src, sourcePort: 5000) }
                try? frame.withUnsafeBytes { try bench.source.transmit($0) }
                sent += 1
            }
            engine.poll(now: clock.now)
            while slowPath.step(max: 64) > 0 { engine.poll(now: clock.now) }
            completed &+= (try? bench.sink.receive(into: sinkPool, max: 256) { _ in }) ?? 0
        }
        let elapsed = Double((clock.now - start).nanoseconds) / 1e9
        return BenchResult(name: "flow setup, guard on", value: Double(completed) / elapsed / 1e6, unit: "M flows/s",
                           reference: nil, target: ">= 1 M flows/s")
    }
}
