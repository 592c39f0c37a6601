import Testing
import OffloadCore
import OffloadEngine
import OffloadLink
import OffloadWire

/// A 64-byte UDP frame from `source:sourcePort` whose last payload byte is `sequence`.
private func fairnessFrame(source: IPv4Address, sourcePort: UInt16, sequence: UInt8 = 0) -> [UInt8] {
    let dst = IPv4Address(10, 2, 0, 1)
    var frame = [UInt8](repeating: 0, count: 64)
    frame.withUnsafeMutableBytes { raw in
        EthernetRepr(destination: .local(0xaa), source: .local(1), etherType: .ipv4).emit(into: raw)
        IPv4Repr(source: source, destination: dst, protocol: .udp, payloadLength: 64 - 34)
            .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
        raw[63] = sequence
        UDPRepr(sourcePort: sourcePort, destinationPort: 4000, payloadLength: 64 - 42)
            .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[34...]), source: source, destination: dst,
                  checksums: .verify)
    }
    return frame
}

@Suite struct SourceFairnessEngineTests {
    static let flooder = IPv4Address(10, 66, 0, 1), other = IPv4Address(10, 77, 0, 1)

    /// With the software stalled, one source's new flows take at most about half the
    /// exception queue and the excess is counted as `source-over-share`; the flooder's own
    /// earlier flow keeps sending its later packets (they hold counts) to the software in
    /// order, over the share; another source's new flows still get in; and once the software
    /// has taken the queue, the flooder's bucket is free again.
    @Test func overShareMissesAreDroppedWhileCountedPacketsFollowTheirFlow() {
        let clock = VirtualClock()
        var config = Engine<MemoryLink>.Configuration()
        config.tableCapacity = 1024
        config.queueCapacity = 64
        let (engine, wires) = Engine.onMemoryWires(configuration: config, portCount: 2, clock: clock)
        var source = wires[0], sink = wires[1]
        let fairness = config.sourceFairness!
        #expect(fairness.bucket(source: Self.flooder, ingressPort: 0) != fairness.bucket(source: Self.other, ingressPort: 0))
        func send(_ frame: [UInt8]) {
            try! frame.withUnsafeBytes { try source.transmit($0) }
            engine.poll(now: clock.now)
        }

        send(fairnessFrame(source: Self.flooder, sourcePort: 1, sequence: 0))  // flow A's first packet
        for port in 2..<62 { send(fairnessFrame(source: Self.flooder, sourcePort: UInt16(port))) }
        // In flight for the bucket: A and k flood flows, admitted while 1 + k < 64 - (1 + k).
        #expect(engine.counters[toSoftware: .miss] == 32)
        #expect(engine.counters[drop: .sourceOverShare] == 29)
        for n in 1...5 { send(fairnessFrame(source: Self.flooder, sourcePort: 1, sequence: UInt8(n))) }
        #expect(engine.counters[toSoftware: .doNotUse] == 5, "counted packets are never limited")
        #expect(engine.counters[drop: .sourceOverShare] == 29)
        for port in 0..<3 { send(fairnessFrame(source: Self.other, sourcePort: UInt16(100 + port))) }
        #expect(engine.counters[toSoftware: .miss] == 35, "another source still gets in")
        #expect(engine.counters[drop: .exceptionQueueFull] == 0)

        // The software: install every new flow, complete every packet; flow A's in order.
        func playSoftware() -> [UInt8] {
            var flowA: [UInt8] = []
            while let item = engine.exceptions.pop() {
                if item.reason == .miss, let key = item.key {
                    engine.reinsertion.send(.install(key, .forward(.init(outputPort: 1, destinationMAC: .local(2),
                                                                          sourceMAC: .local(0xaa)))))
                }
                if item.key?.source == Self.flooder, item.key?.sourcePort == 1 { flowA.append(item.buffer.bytes[63]) }
                let counted = item.countedFlow, port = item.ingressPort
                engine.reinsertion.send(.reinsert(Reinsertion(buffer: item.buffer, verdict: .complete, countedFlow: counted,
                                                              ingressPort: port)))
                while engine.reinsertion.room < 2 { engine.poll(now: clock.now) }
            }
            while engine.poll(now: clock.now) {}
            return flowA
        }
        #expect(playSoftware() == [0, 1, 2, 3, 4, 5])
        let sinkPool = BufferPool(count: 64, bufferSize: 2048, headroom: 0)
        var delivered = 0
        while ((try? sink.receive(into: sinkPool, max: 64) { _ in delivered += 1 }) ?? 0) > 0 {}
        #expect(delivered == 32 + 5 + 3)

        // The queue is empty again: the flooder's bucket has its share back.
        for port in 200..<220 { send(fairnessFrame(source: Self.flooder, sourcePort: UInt16(port))) }
        #expect(engine.counters[toSoftware: .miss] == 35 + 20)
        #expect(engine.counters[drop: .sourceOverShare] == 29)
        #expect(playSoftware().isEmpty)
        while ((try? sink.receive(into: sinkPool, max: 64) { _ in delivered += 1 }) ?? 0) > 0 {}
        #expect(delivered == 60)

        let c = engine.counters
        #expect(c.received == c.fastPath + c.reinsertedOut + c.consumedBySoftware + c.totalDrops)
        #expect(engine.buffered == 0)
        var inSoftware = 0
        engine.table.forEach { _, stats in inSoftware += Int(stats.inSoftwareCount) }
        #expect(inSoftware == 0)
    }

    /// Off, the same flood fills the whole queue and the other source finds no room.
    @Test func withoutFairnessOneSourceFillsTheQueue() {
        let clock = VirtualClock()
        var config = Engine<MemoryLink>.Configuration()
        config.tableCapacity = 1024
        config.queueCapacity = 64
        config.sourceFairness = nil
        let (engine, wires) = Engine.onMemoryWires(configuration: config, portCount: 2, clock: clock)
        var source = wires[0]
        func send(_ frame: [UInt8]) {
            try! frame.withUnsafeBytes { try source.transmit($0) }
            engine.poll(now: clock.now)
        }
        for port in 1..<80 { send(fairnessFrame(source: Self.flooder, sourcePort: UInt16(port))) }
        for port in 0..<3 { send(fairnessFrame(source: Self.other, sourcePort: UInt16(100 + port))) }
        #expect(engine.counters[toSoftware: .miss] == 64)
        #expect(engine.counters[drop: .exceptionQueueFull] == 79 - 64 + 3)
        #expect(engine.counters[drop: .sourceOverShare] == 0)
    }
}
