import Benchmark
import OffloadCore
import OffloadEngine
import OffloadLink
import OffloadWire

/// The engine's fast path through its own poll loop over memory wires: one op is a burst of
/// 32 frames of 64-byte UDP, each of one of 10k established flows with a NAT rewrite, put on
/// the source wire, polled through the engine, and taken off the sink wire. The malloc count
/// per op is the check that the fast path allocates nothing (`offload bench` gives the rate).
private final class EngineFixture: @unchecked Sendable {
    // Unchecked: a benchmark runs its setup, iterations and teardown on one thread at a time.
    static let frameSize = 60
    let clock = VirtualClock()
    var engine: Engine<MemoryLink>?
    var source: MemoryLink?
    var sink: MemoryLink?
    let sinkPool = BufferPool(count: 64, bufferSize: 2048, headroom: 0)
    var frames = UnsafeMutableRawBufferPointer.allocate(byteCount: 0, alignment: 64)
    var flows = 0
    var next = 0

    func build(flows: Int) {
        var configuration = Engine<MemoryLink>.Configuration()
        configuration.tableCapacity = flows
        let (engine, wires) = Engine.onMemoryWires(configuration: configuration, portCount: 2, clock: clock)
        let destination = IPv4Address(10, 200, 0, 1)
        frames.deallocate()
        frames = .allocate(byteCount: flows * Self.frameSize, alignment: 64)
        for flow in 0..<flows {
            let source = IPv4Address(rawValue: 0x0a00_0000 | UInt32(flow >> 16))
            let port = UInt16(truncatingIfNeeded: flow)
            let frame = UnsafeMutableRawBufferPointer(rebasing: frames[flow * Self.frameSize..<(flow + 1) * Self.frameSize])
            EthernetRepr(destination: .local(0x90), source: .local(1), etherType: .ipv4).emit(into: frame)
            IPv4Repr(source: source, destination: destination, protocol: .udp, payloadLength: Self.frameSize - 34)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: frame[14...]), checksums: .verify)
            UDPRepr(sourcePort: port, destinationPort: 4000, payloadLength: Self.frameSize - 42)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: frame[34...]), source: source,
                      destination: destination, checksums: .verify)
            let key = FlowKey(ingressPort: 0, protocol: 17, source: source, destination: destination,
                              sourcePort: port, destinationPort: 4000)
            while engine.reinsertion.room == 0 { engine.poll(now: clock.now) }
            engine.reinsertion.send(.install(key, .forward(.init(
                outputPort: 1, destinationMAC: .local(2), sourceMAC: .local(0x90),
                translatedSource: IPv4Address(192, 0, 2, 1), translatedSourcePort: port &+ 1))))
        }
        while engine.poll(now: clock.now) {}
        self.engine = engine
        source = wires[0]
        sink = wires[1]
        self.flows = flows
        next = 0
    }

    func release() {
        engine = nil
        source = nil
        sink = nil
    }

    /// One burst through: on the wire, through the engine, off the wire.
    @inline(__always)
    func burst() {
        for _ in 0..<32 {
            let at = next * Self.frameSize
            try? source!.transmit(UnsafeRawBufferPointer(rebasing: frames[at..<(at + Self.frameSize)]))
            next = next &+ 7919 < flows ? next &+ 7919 : (next &+ 7919) % flows
        }
        engine!.poll(now: clock.now)
        blackHole((try? sink!.receive(into: sinkPool, max: 64) { _ in }) ?? 0)
    }
}

func engineBenchmarks() {
    let configuration = Benchmark.Configuration(
        metrics: [.throughput, .wallClock, .mallocCountTotal, .instructions],
        scalingFactor: .kilo, maxDuration: .seconds(2), maxIterations: 100_000)
    let fixture = EngineFixture()
    Benchmark("engine poll, burst of 32 x 64 B UDP with NAT, 10k flows", configuration: configuration, closure: { benchmark in
        for _ in benchmark.scaledIterations { fixture.burst() }
    }, setup: { fixture.build(flows: 10_000) }, teardown: { fixture.release() })
}
