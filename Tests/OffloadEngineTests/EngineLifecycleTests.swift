import Testing
import OffloadCore
import OffloadEngine
import OffloadLink
import OffloadWire

/// An engine with a small table, a source on port 0 and a sink on port 1; the test plays the
/// software by installing a forward action for each new flow and completing its packets.
final class LifecycleBench {
    let clock = VirtualClock()
    let engine: Engine<MemoryLink>
    var source: MemoryLink, sink: MemoryLink
    let sinkPool = BufferPool(count: 16, bufferSize: 2048, headroom: 0)

    init(orderGuard: Bool = true) {
        var config = Engine<MemoryLink>.Configuration()
        config.orderGuard = orderGuard
        config.tableCapacity = 64
        config.expiryBudget = 256
        config.idleTimeouts = IdleTimeouts(tcp: .seconds(60), udp: .seconds(5))
        let (engine, wires) = Engine.onMemoryWires(configuration: config, portCount: 2, clock: clock)
        self.engine = engine
        source = wires[0]; sink = wires[1]
    }

    /// Lets `time` pass without traffic, then polls once (expiry runs in the poll).
    func idle(for time: Duration) {
        clock.advance(by: time)
        engine.poll(now: clock.now)
    }

    /// Sends a frame in and plays the software for anything that comes out of the engine.
    /// Returns the frames delivered to the sink.
    @discardableResult
    func send(_ frame: [UInt8]) -> Int {
        try! frame.withUnsafeBytes { try source.transmit($0) }
        engine.poll(now: clock.now)
        while let item = engine.exceptions.pop() {
            if item.reason == .miss, let key = item.key {
                engine.reinsertion.send(.install(key, .forward(.init(outputPort: 1, destinationMAC: .local(2),
                                                                      sourceMAC: .local(1)))))
            }
            let countedFlow = item.countedFlow, port = item.ingressPort
            engine.reinsertion.send(.reinsert(Reinsertion(buffer: item.buffer, verdict: .complete,
                                                          countedFlow: countedFlow, ingressPort: port)))
        }
        engine.poll(now: clock.now)
        return (try? sink.receive(into: sinkPool, max: 16) { _ in }) ?? 0
    }

    var entries: Int { engine.table.count }
}

func tcpSegment(flags: TCPFlags) -> [UInt8] {
    let src = IPv4Address(10, 1, 0, 1), dst = IPv4Address(10, 2, 0, 1)
    var frame = [UInt8](repeating: 0, count: 14 + 20 + 20)
    frame.withUnsafeMutableBytes { raw in
        EthernetRepr(destination: .local(0xaa), source: .local(1), etherType: .ipv4).emit(into: raw)
        IPv4Repr(source: src, destination: dst, protocol: .tcp, payloadLength: 20)
            .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
        TCPRepr(sourcePort: 40000, destinationPort: 80, sequenceNumber: 1, acknowledgmentNumber: 1, flags: flags,
                windowSize: 1000)
            .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[34...]), source: src, destination: dst, checksums: .verify)
    }
    return frame
}

@Suite struct EngineLifecycleTests {
    /// The idle sweep follows the time, not the poll rate: an engine polled 100,000 times in
    /// 10 ms (as a spinning one is) examines about 1% of its table, once a second's sweep
    /// would (it examined 64 slots at every poll, the whole table 4,000 times over).
    @Test func theIdleSweepFollowsTheTimeNotThePolls() {
        let b = LifecycleBench()
        let slots = b.engine.table.slotCount
        let before = b.engine.table.counters.swept
        for _ in 0..<100_000 {
            b.clock.advance(by: .nanoseconds(100))
            b.engine.poll(now: b.clock.now)
        }
        let swept = Int(b.engine.table.counters.swept - before)
        #expect(swept <= slots / 100 + 1 && swept >= slots / 100 - 1, "\(swept) of \(slots) slots")
        // A whole second sweeps the whole table.
        b.clock.advance(by: .seconds(1))
        for _ in 0..<slots { b.engine.poll(now: b.clock.now) }
        #expect(Int(b.engine.table.counters.swept - before) == swept + slots)
    }

    @Test func idleEntriesExpireByProtocolTimeout() {
        let b = LifecycleBench()
        #expect(b.send(udpFrame()) == 1)
        #expect(b.send(tcpSegment(flags: .ack)) == 1)
        #expect(b.entries == 2)
        #expect(b.send(udpFrame()) == 1 && b.engine.counters.fastPath == 1)
        b.idle(for: .seconds(10))
        #expect(b.entries == 1, "UDP idled out after 5 s; TCP has 60 s")
        #expect(b.engine.counters.expired == 1)
        b.idle(for: .seconds(60))
        #expect(b.entries == 0 && b.engine.counters.expired == 2)
    }

    @Test func entryWithPacketsInTheSoftwareDoesNotExpire() {
        let b = LifecycleBench()
        try! udpFrame().withUnsafeBytes { try b.source.transmit($0) }
        b.engine.poll(now: b.clock.now)
        #expect(b.engine.exceptions.count == 1)
        b.idle(for: .seconds(100))
        #expect(b.entries == 1, "the pending entry holds a packet in the software")
    }

    @Test func resetTearsTheEntryDown() {
        let b = LifecycleBench()
        #expect(b.send(tcpSegment(flags: .ack)) == 1)
        #expect(b.send(tcpSegment(flags: .ack)) == 1)
        #expect(b.engine.counters.fastPath == 1 && b.entries == 1)
        #expect(b.send(tcpSegment(flags: .rst)) == 1)
        #expect(b.engine.counters.fastPath == 2, "the RST itself goes out on the fast path")
        #expect(b.entries == 0 && b.engine.counters.tornDown == 1)
        // A straggler finds no entry and goes through the software.
        #expect(b.send(tcpSegment(flags: .ack)) == 1)
        #expect(b.engine.counters[toSoftware: .miss] == 2)
    }

    /// Without the order guard the fast path uses an entry while its flow's first packet is
    /// still in the software. A RST then marks the entry closing rather than removing it: the
    /// packet comes back to be counted out of it and completed with it.
    @Test func aResetKeepsAnEntryWithPacketsInTheSoftware() {
        let b = LifecycleBench(orderGuard: false)
        try! tcpSegment(flags: .ack).withUnsafeBytes { try b.source.transmit($0) }
        b.engine.poll(now: b.clock.now)
        let first = b.engine.exceptions.pop()!
        let key = first.key!
        b.engine.reinsertion.send(.install(key, .forward(.init(outputPort: 1, destinationMAC: .local(2),
                                                                sourceMAC: .local(1)))))
        b.engine.poll(now: b.clock.now)
        #expect(b.send(tcpSegment(flags: .rst)) == 1, "the RST takes the fast path past the first packet")
        let h = b.engine.table.lookup(key)
        let held = h.map { b.engine.table.inSoftwareCount($0) }, closing = h.map { b.engine.table.isClosing($0) }
        #expect(held == 1 && closing == true && b.engine.counters.tornDown == 1)
        let countedFlow = first.countedFlow, port = first.ingressPort
        b.engine.reinsertion.send(.reinsert(Reinsertion(buffer: first.buffer, verdict: .complete,
                                                        countedFlow: countedFlow, ingressPort: port)))
        b.engine.poll(now: b.clock.now)
        #expect((try? b.sink.receive(into: b.sinkPool, max: 16) { _ in }) == 1, "the first packet, completed")
        #expect(b.engine.counters.completedByEngine == 1 && b.engine.counters.totalDrops == 0)
        b.idle(for: .seconds(11))
        #expect(b.entries == 0, "gone after the closing timeout")
    }

    /// A FIN marks the entry closing: the last ACKs keep the fast path, and the entry idles
    /// out after the closing timeout (10 s) rather than TCP's (300 s).
    @Test func finEndsTheEntryAfterTheClosingTimeout() {
        let b = LifecycleBench()
        #expect(b.send(tcpSegment(flags: .ack)) == 1)
        #expect(b.send(tcpSegment(flags: .ack)) == 1)
        #expect(b.send(tcpSegment(flags: TCPFlags.fin.union(.ack))) == 1)
        #expect(b.send(tcpSegment(flags: TCPFlags.fin.union(.ack))) == 1, "a retransmitted FIN")
        #expect(b.entries == 1 && b.engine.counters.tornDown == 1)
        #expect(b.send(tcpSegment(flags: .ack)) == 1)
        #expect(b.engine.counters.fastPath == 4 && b.engine.counters[toSoftware: .miss] == 1)
        b.idle(for: .seconds(9))
        #expect(b.entries == 1)
        b.idle(for: .seconds(2))
        #expect(b.entries == 0 && b.engine.counters.expired == 1)
    }

    /// A FIN or RST that goes through the software (here the flow's first packet) ends the
    /// entry built for it too: marked closing, it idles out after the closing timeout.
    @Test(arguments: [TCPFlags.fin.union(.ack), TCPFlags.rst])
    func aCloseThroughTheSoftwareMarksTheEntryClosing(flags: TCPFlags) {
        let b = LifecycleBench()
        #expect(b.send(tcpSegment(flags: flags)) == 1)
        #expect(b.entries == 1 && b.engine.counters.tornDown == 1)
        b.idle(for: .seconds(11))
        #expect(b.entries == 0, "gone after the closing timeout, not TCP's 60 s")
    }

    /// A RST ends both directions: the replies' entry, which may never see a FIN now, is
    /// marked closing and idles out after the closing timeout.
    @Test func aResetEndsTheRepliesEntryToo() {
        let b = LifecycleBench()
        #expect(b.send(tcpSegment(flags: .ack)) == 1)
        let key = FlowKey(ingressPort: 0, protocol: 6, source: IPv4Address(10, 1, 0, 1),
                          destination: IPv4Address(10, 2, 0, 1), sourcePort: 40000, destinationPort: 80)
        let reply = key.reply(to: .init(outputPort: 1, destinationMAC: .local(2), sourceMAC: .local(1)))
        #expect(reply == FlowKey(ingressPort: 1, protocol: 6, source: IPv4Address(10, 2, 0, 1),
                                 destination: IPv4Address(10, 1, 0, 1), sourcePort: 80, destinationPort: 40000))
        b.engine.reinsertion.send(.install(reply, .forward(.init(outputPort: 0, destinationMAC: .local(1),
                                                                  sourceMAC: .local(2)))))
        b.engine.poll(now: b.clock.now)
        #expect(b.entries == 2)
        #expect(b.send(tcpSegment(flags: .rst)) == 1)
        let replyEntry = b.engine.table.lookup(reply)
        let closing = replyEntry.map { b.engine.table.isClosing($0) }
        #expect(b.entries == 1 && closing == true)
        b.idle(for: .seconds(11))
        #expect(b.entries == 0)
    }

    /// A SYN on the same ports while the entry is closing opens it again: it keeps TCP's
    /// idle timeout, not the closing one.
    @Test func aSYNReopensAClosingEntry() {
        let b = LifecycleBench()
        #expect(b.send(tcpSegment(flags: .ack)) == 1)
        #expect(b.send(tcpSegment(flags: TCPFlags.fin.union(.ack))) == 1)
        #expect(b.send(tcpSegment(flags: .syn)) == 1)
        #expect(b.engine.counters.fastPath == 2 && b.engine.counters.tornDown == 1)
        b.idle(for: .seconds(30))
        #expect(b.entries == 1, "open again: TCP's 60 s here, not the closing 10 s")
        b.idle(for: .seconds(31))
        #expect(b.entries == 0)
    }
}

@Suite struct SlowPathProtectionTests {
    /// B10: a flood of new flows while the software is stalled fills the exception queue and
    /// the table, but never evicts or slows the established flow, whose packets all go out on
    /// the fast path; every flooded packet is either queued or dropped with a counted reason.
    @Test func floodOfNewFlowsDoesNotStarveAnEstablishedFlow() {
        let b = LifecycleBench()
        #expect(b.send(tcpSegment(flags: .ack)) == 1, "the established flow")
        var established = 0, floodSent = 0
        for round in 0..<3000 {
            var flood = udpFrame()
            flood[26] = UInt8(round >> 8); flood[27] = UInt8(round & 0xff)  // a new source address each time
            flood[24] = 0; flood[25] = 0
            let sum = flood.withUnsafeBytes { InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: $0[14..<34])) }
            flood[24] = UInt8(sum >> 8); flood[25] = UInt8(sum & 0xff)
            flood[40] = 0; flood[41] = 0
            try! flood.withUnsafeBytes { try b.source.transmit($0) }
            floodSent += 1
            if round % 10 == 0 {
                try! tcpSegment(flags: .ack).withUnsafeBytes { try b.source.transmit($0) }
                established += 1
            }
            b.engine.poll(now: b.clock.now)  // the software does not run: the queue fills
        }
        let delivered = (try? b.sink.receive(into: b.sinkPool, max: 1000) { _ in }) ?? 0
        let c = b.engine.counters
        #expect(delivered == established, "every established packet went out")
        #expect(c.fastPath == UInt64(established))
        #expect(c[drop: .exceptionQueueFull] > 0)
        #expect(c.totalToSoftware - 1 + c[drop: .exceptionQueueFull] == UInt64(floodSent),
                "each flooded packet queued or dropped, counted")
        #expect(b.entries <= 64)
    }
}
