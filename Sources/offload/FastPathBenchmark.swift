import COffloadShim
import OffloadCore
import OffloadEngine
import OffloadLink

/// The engine's fast path through its own poll loop over memory links: 64-byte UDP frames
/// of `flows` established flows with a NAT rewrite, in bursts of 32, from a source wire into
/// port 0 and out of port 1 into a sink wire, all on one core.
///
/// Inside the figure, the engine's whole work as SPEC.md lists it: the link receive (each
/// frame copied from the wire into a buffer of the engine's pool), the key and the burst
/// lookup, the rewrite, the transmit (each frame copied into the sink wire's own slots) and
/// the counters. Also inside, and as small as the harness can make them honestly: the
/// source lends each frame to its wire (no copy at send; the engine's receive copies it out
/// of the source's memory, as a device reads a frame it sends from host memory), and the
/// sink drops what arrives unread (`MemoryLink.discard`), as a receiver that drops does.
/// The random choice of each packet's flow and the loop are the rest.
enum FastPathBenchmark {
    static func run(flows: Int, seconds: Double) -> BenchResult {
        var bench = EngineBench(tableCapacity: flows)
        let clock = bench.clock, engine = bench.engine

        // Every flow's frame, and its entry installed through the software's queue.
        let frameSize = EngineBench.frameSize
        let frames = UnsafeMutableRawBufferPointer.allocate(byteCount: flows * frameSize, alignment: 64)
        defer { frames.deallocate() }
        for flow in 0..<flows {
            let frame = UnsafeMutableRawBufferPointer(rebasing: frames[flow * frameSize..<(flow + 1) * frameSize])
            let src = IPv4Address(rawValue: 0x0a00_0000 | UInt32(flow >> 16))
            let sport = UInt16(truncatingIfNeeded: flow)
            EngineBench.emitUDP(into: frame, source: src, sourcePort: sport)
            let key = FlowKey(ingressPort: 0, protocol: 17, source: src, destination: EngineBench.destination,
                              sourcePort: sport, destinationPort: 4000)
            while engine.reinsertion.room == 0 { engine.poll(now: clock.now) }
            engine.reinsertion.send(.install(key, EngineBench.natForward(sourcePort: sport &+ 1)))
        }
        while engine.poll(now: clock.now) {}

        var random = SeededRandom(seed: 7)
        // The source draws each burst's flows one burst ahead and prefetches their frames, so
        // that its own cache misses (one per frame, at random in up to 64 MB) overlap with
        // the engine's work instead of adding to it.
        let burst = 32
        let ahead = UnsafeMutablePointer<Int>.allocate(capacity: burst)
        defer { ahead.deallocate() }
        func draw() {
            for i in 0..<burst {
                ahead[i] = Int(truncatingIfNeeded: random.next().multipliedFullWidth(by: UInt64(flows)).high)
                offload_prefetch(frames.baseAddress! + ahead[i] * frameSize)
            }
        }
        draw()
        var forwarded = 0
        let start = clock.now
        let end = start + .nanoseconds(Int64(seconds * 1e9))
        while clock.now < end {
            for _ in 0..<64 {
                for i in 0..<burst {
                    let frame = UnsafeRawBufferPointer(start: frames.baseAddress! + ahead[i] * frameSize, count: frameSize)
                    try? bench.source.transmit(lending: frame)
                }
                draw()
                engine.poll(now: start)
                forwarded &+= bench.sink.discard(max: 64)
            }
        }
        let elapsed = Double((clock.now - start).nanoseconds) / 1e9
        let mpps = Double(forwarded) / elapsed / 1e6
        if engine.counters.fastPath != engine.counters.received {
            print("note: \(engine.counters.received - engine.counters.fastPath) packets left the fast path")
        }
        return BenchResult(name: "fast path, \(flows / 1000)k flows", value: mpps, unit: "Mpps", reference: nil,
                           target: flows >= 1_000_000 ? ">= 15 Mpps" : ">= 30 Mpps")
    }
}
