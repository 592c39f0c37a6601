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
        // Flow n's frame is `FlowFrames`' frame n, built into one of a burst of slots lent to
        // the wire, as in the fast-path benchmark; the engine takes the whole burst in its
        // first poll. The sink drops what arrives unread.
        let frames = FlowFrames()
        defer { frames.deallocate() }
        let burst = 32
        let slots = UnsafeMutableRawPointer.allocate(byteCount: burst * EngineBench.frameSize, alignment: 64)
        defer { slots.deallocate() }
        var sent = 0, completed = 0
        let start = clock.now
        let end = start + .nanoseconds(Int64(seconds * 1e9))
        while clock.now < end, sent + burst <= flows {
            for i in 0..<burst {
                let slot = slots + i &* EngineBench.frameSize
                frames.write(flow: sent, into: slot)
                try? bench.source.transmit(lending: UnsafeRawBufferPointer(start: slot, count: EngineBench.frameSize))
                sent += 1
            }
            engine.poll(now: clock.now)
            precondition(engine.withPort(0) { $0.framesWaiting } == 0, "the engine left lent frames on the wire")
            while slowPath.step(max: 64) > 0 { engine.poll(now: clock.now) }
            completed &+= bench.sink.discard(max: 256)
        }
        let elapsed = Double((clock.now - start).nanoseconds) / 1e9
        return BenchResult(name: "flow setup, guard on", value: Double(completed) / elapsed / 1e6, unit: "M flows/s",
                           reference: nil, target: ">= 1 M flows/s", detail: "\(completed) flows")
    }
}
