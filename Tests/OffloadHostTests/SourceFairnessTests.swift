import Testing
import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink
import OffloadWire

/// B10 per-source fairness with the real slow path on the engine's thread: one source floods
/// new flows faster than the software sets them up, another source starts a few new flows,
/// and established flows keep running. The software is deliberately slower than the flood
/// (8 packets per round against 24 new flows), so the exception queue is the contended resource.
struct FairnessStorm {
    var fairness: SourceFairness? = SourceFairness()
    var rounds = 300
    var floodPerRound = 24
    var softwarePerRound = 8
    var establishedFlows = 16
    /// The other source starts one new flow every this many rounds, and sends its second
    /// packet ten rounds later.
    var otherEvery = 25

    static let flooder = IPv4Address(10, 66, 0, 1)
    static let other = IPv4Address(10, 77, 0, 1)
    static let destination = IPv4Address(10, 2, 0, 1)

    struct Outcome {
        var counters = EngineCounters()
        var buffered = 0
        var entriesInSoftware = 0
        var floodSent = 0, floodDelivered = 0
        var otherSent = 0, otherDelivered = 0
        var otherFlows = 0, otherFlowsSetUp = 0
        var establishedSent = 0, establishedDelivered = 0
        var maxQueued = 0
    }

    static func frame(source: IPv4Address, sourcePort: UInt16) -> [UInt8] {
        var frame = [UInt8](repeating: 0, count: 64)
        frame.withUnsafeMutableBytes { raw in
            EthernetRepr(destination: .local(0xaa), source: .local(1), etherType: .ipv4).emit(into: raw)
            IPv4Repr(source: source, destination: destination, protocol: .udp, payloadLength: 64 - 34)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
            UDPRepr(sourcePort: sourcePort, destinationPort: 4000, payloadLength: 64 - 42)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[34...]), source: source, destination: destination,
                      checksums: .verify)
        }
        return frame
    }

    static func established(_ i: Int) -> IPv4Address { IPv4Address(10, 3, 0, UInt8(1 + i)) }

    func run() -> Outcome {
        let clock = VirtualClock()
        var config = Engine<MemoryLink>.Configuration()
        config.tableCapacity = 16_384
        config.queueCapacity = 256
        config.sourceFairness = fairness
        let (engine, wires) = Engine.onMemoryWires(configuration: config, portCount: 2, clock: clock)
        var source = wires[0], sink = wires[1]
        // Forward with a MAC rewrite only: the sink tells the sources apart by address.
        let slowPath = SlowPath(exceptions: engine.exceptions, reinsertion: engine.reinsertion, processing: .partial) { _ in
            .forward(.init(outputPort: 1, destinationMAC: .local(2), sourceMAC: .local(0xaa)))
        }
        var o = Outcome()
        let sinkPool = BufferPool(count: 64, bufferSize: 2048, headroom: 0)
        func drainSink(counting: Bool) {
            while ((try? sink.receive(into: sinkPool, max: 64) { buffer in
                guard counting else { return }
                let src = buffer.bytes.loadUnaligned(fromByteOffset: 26, as: UInt32.self).bigEndian
                switch IPv4Address(rawValue: src) {
                case Self.flooder: o.floodDelivered += 1
                case Self.other: o.otherDelivered += 1
                default: o.establishedDelivered += 1
                }
            }) ?? 0) > 0 {}
        }
        func send(_ frame: [UInt8]) { try! frame.withUnsafeBytes { try source.transmit($0) } }
        func settle() {
            while engine.poll(now: clock.now) || slowPath.step(max: 64) > 0 {}
        }

        // The established flows: one packet each through the software, then they are on the fast path.
        for i in 0..<establishedFlows { send(Self.frame(source: Self.established(i), sourcePort: 7000)) }
        settle()
        drainSink(counting: false)

        var floodPort: UInt16 = 1
        var otherPorts: [UInt16] = []
        for round in 0..<rounds {
            // Arrival order within the round: half the flood, the other source, the rest of
            // the flood, then the established flows.
            for _ in 0..<floodPerRound / 2 { send(Self.frame(source: Self.flooder, sourcePort: floodPort)); floodPort &+= 1 }
            if round % otherEvery == 0 {
                let port = UInt16(9000 + otherPorts.count)
                otherPorts.append(port)
                send(Self.frame(source: Self.other, sourcePort: port))
                o.otherSent += 1
            }
            if round % otherEvery == 10, let last = otherPorts.last {
                send(Self.frame(source: Self.other, sourcePort: last))  // the flow's second packet
                o.otherSent += 1
            }
            for _ in floodPerRound / 2..<floodPerRound { send(Self.frame(source: Self.flooder, sourcePort: floodPort)); floodPort &+= 1 }
            o.floodSent += floodPerRound
            for i in 0..<establishedFlows { send(Self.frame(source: Self.established(i), sourcePort: 7000)) }
            o.establishedSent += establishedFlows
            engine.poll(now: clock.now)
            engine.poll(now: clock.now)
            o.maxQueued = max(o.maxQueued, engine.exceptions.count)
            slowPath.step(max: softwarePerRound)
            drainSink(counting: true)
            clock.advance(by: .microseconds(10))
        }
        settle()
        drainSink(counting: true)

        o.counters = engine.counters
        o.buffered = engine.buffered
        engine.table.forEach { _, stats in o.entriesInSoftware += Int(stats.inSoftwareCount) }
        o.otherFlows = otherPorts.count
        for port in otherPorts {
            let key = FlowKey(ingressPort: 0, protocol: 17, source: Self.other, destination: Self.destination,
                              sourcePort: port, destinationPort: 4000)
            if let h = engine.table.lookup(key), engine.table.isUsable(h), engine.table.kind(h) == .forward {
                o.otherFlowsSetUp += 1
            }
        }
        return o
    }
}

@Suite struct SourceFairnessTests {
    @Test func theFlooderAndTheOtherSourceHashToDifferentBuckets() {
        let f = SourceFairness()
        #expect(f.bucket(source: FairnessStorm.flooder, ingressPort: 0) != f.bucket(source: FairnessStorm.other, ingressPort: 0))
        // Sources spread over the buckets (a spread flood is the queue bound's job, not this rule's).
        var seen = Set<Int>()
        for i in 0..<4096 { seen.insert(f.bucket(source: IPv4Address(rawValue: 0x0b00_0000 | UInt32(i)), ingressPort: 0)) }
        #expect(seen.count == f.buckets)
    }

    /// B10: one source's flood of new flows cannot take the exception queue from another
    /// source's new flows, and established flows lose nothing.
    @Test func floodFromOneSourceDoesNotStarveAnotherSourcesNewFlows() {
        let o = FairnessStorm().run()
        let c = o.counters
        #expect(o.otherFlowsSetUp == o.otherFlows && o.otherFlows == 12, "every new flow of the other source got its entry")
        #expect(o.otherDelivered == o.otherSent, "and none of its packets was lost")
        #expect(o.establishedDelivered == o.establishedSent, "established flows lose nothing")
        #expect(c.fastPath >= UInt64(o.establishedSent))
        #expect(c[drop: .sourceOverShare] > 0, "the flood's excess is counted under its own reason")
        #expect(c[drop: .exceptionQueueFull] == 0, "the flood never filled the queue")
        #expect(o.floodDelivered + Int(c[drop: .sourceOverShare]) == o.floodSent, "each flooded packet went out or was counted")
        #expect(o.maxQueued <= 256 / 2 + 2, "one source alone holds about half the queue")
        #expect(c.received == c.fastPath + c.reinsertedOut + c.consumedBySoftware + c.totalDrops, "\(c.table)")
        #expect(o.buffered == 0 && o.entriesInSoftware == 0)
    }

    /// The same storm without the rule: the flood keeps the queue full and the other
    /// source's new flows are dropped at its entrance (what the rule is for).
    @Test func withoutFairnessTheFloodStarvesTheOtherSource() {
        var storm = FairnessStorm()
        storm.fairness = nil
        let o = storm.run()
        let c = o.counters
        #expect(c[drop: .sourceOverShare] == 0)
        #expect(c[drop: .exceptionQueueFull] > 0)
        #expect(o.otherFlowsSetUp < o.otherFlows, "\(o.otherFlowsSetUp) of \(o.otherFlows) set up")
        #expect(o.establishedDelivered == o.establishedSent, "the queue bound alone protects established flows")
        #expect(c.received == c.fastPath + c.reinsertedOut + c.consumedBySoftware + c.totalDrops, "\(c.table)")
        #expect(o.buffered == 0 && o.entriesInSoftware == 0)
    }
}
