import CFastPathReference
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
/// source builds each frame when it sends it (`FlowFrames`: a template, two words, two
/// incremental checksums) into a burst of slots it lends to its wire (no copy at send; the
/// engine's receive copies each frame out of the source's memory, as a device reads a frame
/// it sends from host memory); the sink drops what arrives unread (`MemoryLink.discard`),
/// as a receiver that drops does. The random choice of each packet's flow and the loop are
/// the rest. At 1M flows the engine's table misses are its own; the source touches no
/// per-flow memory.
///
/// The reference is the same work as lean C (`CFastPathReference`; its header says what it
/// leaves out), measured in the same run, alternating with the engine: what this machine
/// gives today for this work. The row takes twice `seconds`, half for each.
enum FastPathBenchmark {
    static func run(flows: Int, seconds: Double) -> BenchResult {
        var bench = EngineBench(tableCapacity: flows)
        let clock = bench.clock, engine = bench.engine

        // Every flow's entry, installed through the software's queue.
        let frames = FlowFrames()
        defer { frames.deallocate() }
        // `emitUDP` writes the headers only: the payload is zeros here as in the template.
        let check = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * EngineBench.frameSize, alignment: 64)
        defer { check.deallocate() }
        check.initializeMemory(as: UInt8.self, repeating: 0)
        for flow in 0..<flows {
            let (src, sport) = FlowFrames.addresses(of: flow)
            // The source's frames are exactly those `emitUDP` writes.
            let emitted = UnsafeMutableRawBufferPointer(rebasing: check[0..<EngineBench.frameSize])
            EngineBench.emitUDP(into: emitted, source: src, sourcePort: sport)
            frames.write(flow: flow, into: check.baseAddress! + EngineBench.frameSize)
            precondition(emitted.elementsEqual(check[EngineBench.frameSize...]), "FlowFrames: flow \(flow) differs")
            let key = FlowKey(ingressPort: 0, protocol: 17, source: src, destination: EngineBench.destination,
                              sourcePort: sport, destinationPort: 4000)
            while engine.reinsertion.room == 0 { engine.poll(now: clock.now) }
            engine.reinsertion.send(.install(key, EngineBench.natForward(sourcePort: sport &+ 1)))
        }
        while engine.poll(now: clock.now) {}

        // The source builds each burst's frames in one burst of slots it lends to the wire;
        // the engine receives the whole burst in its next poll, so the slots are free again
        // after it (checked).
        var random = SeededRandom(seed: 7)
        let burst = 32
        let slots = UnsafeMutableRawPointer.allocate(byteCount: burst * EngineBench.frameSize, alignment: 64)
        defer { slots.deallocate() }
        // Alternating with the C reference, best of three each: this machine is shared and noisy.
        var best = 0.0, bestReference = 0.0
        for _ in 0..<rounds {
            var forwarded = 0
            let start = clock.now
            let end = start + .nanoseconds(Int64(seconds / Double(rounds) * 1e9))
            var now = start
            while now < end {
                for _ in 0..<64 {
                    for i in 0..<burst {
                        let flow = Int(truncatingIfNeeded: random.next().multipliedFullWidth(by: UInt64(flows)).high)
                        let slot = slots + i &* EngineBench.frameSize
                        frames.write(flow: flow, into: slot)
                        try? bench.source.transmit(lending: UnsafeRawBufferPointer(start: slot, count: EngineBench.frameSize))
                    }
                    engine.poll(now: now)
                    precondition(engine.withPort(0) { $0.framesWaiting } == 0, "the engine left lent frames on the wire")
                    forwarded &+= bench.sink.discard(max: 64)
                }
                now = clock.now
            }
            let elapsed = Double((clock.now - start).nanoseconds) / 1e9
            best = max(best, Double(forwarded) / elapsed / 1e6)
            let reference = offload_fast_path_reference_mpps(flows, seconds / Double(rounds))
            precondition(reference > 0, "the C reference missed its own table or sent a wrong checksum")
            bestReference = max(bestReference, reference)
        }
        if engine.counters.fastPath != engine.counters.received {
            benchNote("note: \(engine.counters.received - engine.counters.fastPath) packets left the fast path")
        }
        // The packet count divides an instruction count (callgrind) into a per-packet one.
        return BenchResult(name: "fast path, \(flows / 1000)k flows", value: best, unit: "Mpps",
                           reference: ("lean C", bestReference),
                           target: flows >= 1_000_000 ? ">= 15 Mpps" : ">= 30 Mpps",
                           detail: "\(engine.counters.fastPath) packets through the engine")
    }

    private static let rounds = 3
}

/// The 64-byte UDP frame of each flow, built when it is sent: flow `f` comes from 10.0.x.y,
/// where x.y is `f >> 16`, and port `f & 0xffff` (up to 2^24 flows). Flow 0's frame is the
/// template; another flow's differs in the low half of the source address and the source
/// port, and its checksums follow by RFC 1624 (eqn. 3). The benchmark checks every flow's
/// frame against `EngineBench.emitUDP` once, before it measures.
struct FlowFrames {
    private let template: UnsafeMutableRawPointer
    /// The template's checksums, complemented, in host order.
    private let ipSum: UInt32
    private let udpSum: UInt32

    init() {
        template = .allocate(byteCount: EngineBench.frameSize, alignment: 64)
        // The payload, which `emitUDP` does not write (the UDP checksum covers it), is zeros.
        template.initializeMemory(as: UInt8.self, repeating: 0, count: EngineBench.frameSize)
        let (src, sport) = FlowFrames.addresses(of: 0)
        EngineBench.emitUDP(into: UnsafeMutableRawBufferPointer(start: template, count: EngineBench.frameSize),
                            source: src, sourcePort: sport)
        ipSum = UInt32(~UInt16(bigEndian: template.loadUnaligned(fromByteOffset: 24, as: UInt16.self)))
        udpSum = UInt32(~UInt16(bigEndian: template.loadUnaligned(fromByteOffset: 40, as: UInt16.self)))
    }

    func deallocate() { template.deallocate() }

    static func addresses(of flow: Int) -> (IPv4Address, UInt16) {
        (IPv4Address(rawValue: 0x0a00_0000 | UInt32(truncatingIfNeeded: flow >> 16)), UInt16(truncatingIfNeeded: flow))
    }

    @inline(__always)
    func write(flow: Int, into frame: UnsafeMutableRawPointer) {
        typealias Chunk = SIMD16<UInt8>
        for i in stride(from: 0, to: EngineBench.frameSize, by: 16) {
            frame.storeBytes(of: template.load(fromByteOffset: i, as: Chunk.self), toByteOffset: i, as: Chunk.self)
        }
        // The template's words are 0 where these go, so each change is just the new word.
        let low = UInt16(truncatingIfNeeded: flow >> 16), port = UInt16(truncatingIfNeeded: flow)
        frame.storeBytes(of: low.bigEndian, toByteOffset: 28, as: UInt16.self)
        frame.storeBytes(of: port.bigEndian, toByteOffset: 34, as: UInt16.self)
        frame.storeBytes(of: FlowFrames.fold(ipSum &+ UInt32(low)).bigEndian, toByteOffset: 24, as: UInt16.self)
        let udp = FlowFrames.fold(udpSum &+ UInt32(low) &+ UInt32(port))
        frame.storeBytes(of: (udp == 0 ? 0xffff : udp).bigEndian, toByteOffset: 40, as: UInt16.self)
    }

    /// The checksum of a complemented sum: folded twice to 16 bits, complemented.
    @inline(__always)
    private static func fold(_ s: UInt32) -> UInt16 {
        var s = (s & 0xffff) &+ (s >> 16)
        s = (s & 0xffff) &+ (s >> 16)
        return ~UInt16(truncatingIfNeeded: s)
    }
}
