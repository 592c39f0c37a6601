import COffloadShim
import OffloadCore
import OffloadEngine
import OffloadLink
import OffloadWire

/// The engine's fast path through its own poll loop over memory links: 64-byte UDP frames
/// of `flows` established flows with a NAT rewrite, in bursts of 32, from a source wire into
/// port 0 and out of port 1 into a sink wire. The source's transmit and the sink's receive
/// (two frame copies, as wires do) run on the same core and are part of the figure.
enum FastPathBenchmark {
    static func run(flows: Int, seconds: Double) -> BenchResult {
        let clock = MonotonicClock()
        var config = Engine<MemoryLink>.Configuration()
        config.tableCapacity = flows
        config.bufferCount = 1024
        config.queueCapacity = 4096
        config.expiryBudget = 0
        var outside: [MemoryLink] = []
        let engine = Engine<MemoryLink>(configuration: config, portCount: 2, clock: clock) { i in
            let (o, e) = MemoryLink.pair(clock: clock, seed: UInt64(i), maxFrameSize: 128, framesInFlight: 256)
            outside.append(o)
            return e
        }
        var source = outside[0], sink = outside[1]

        // Every flow's frame, and its entry installed through the software's queue.
        let frameSize = 64
        let frames = UnsafeMutableRawBufferPointer.allocate(byteCount: flows * frameSize, alignment: 64)
        defer { frames.deallocate() }
        let gateway = MACAddress.local(0xaa)
        for flow in 0..<flows {
            let frame = UnsafeMutableRawBufferPointer(rebasing: frames[flow * frameSize..<(flow + 1) * frameSize])
            let src = IPv4Address(rawValue: 0x0a00_0000 | UInt32(flow >> 16)), dst = IPv4Address(10, 200, 0, 1)
            let sport = UInt16(truncatingIfNeeded: flow)
            EthernetRepr(destination: gateway, source: .local(1), etherType: .ipv4).emit(into: frame)
            IPv4Repr(source: src, destination: dst, protocol: .udp, payloadLength: frameSize - 34)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: frame[14...]), checksums: .verify)
            UDPRepr(sourcePort: sport, destinationPort: 4000, payloadLength: frameSize - 42)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: frame[34...]), source: src, destination: dst,
                      checksums: .verify)
            let key = FlowKey(ingressPort: 0, protocol: 17, source: src, destination: dst, sourcePort: sport,
                              destinationPort: 4000)
            while engine.reinsertion.room == 0 { engine.poll(now: clock.now) }
            engine.reinsertion.send(.install(key, .forward(.init(
                outputPort: 1, destinationMAC: .local(2), sourceMAC: gateway,
                translatedSource: IPv4Address(192, 0, 2, 1), translatedSourcePort: sport &+ 1))))
        }
        while engine.poll(now: clock.now) {}

        let sinkPool = BufferPool(count: 256, bufferSize: 2048, headroom: 0)
        var random = SeededRandom(seed: 7)
        var forwarded = 0
        let start = clock.now
        let end = start + .nanoseconds(Int64(seconds * 1e9))
        while clock.now < end {
            for _ in 0..<64 {
                for _ in 0..<32 {
                    let flow = Int(random.next() % UInt64(flows))
                    try? source.transmit(UnsafeRawBufferPointer(rebasing: frames[flow * frameSize..<(flow + 1) * frameSize]))
                }
                engine.poll(now: start)
                forwarded &+= (try? sink.receive(into: sinkPool, max: 64) { _ in }) ?? 0
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
