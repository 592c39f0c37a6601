import Testing
import OffloadCore
import OffloadEngine
import OffloadLink
import OffloadWire

/// An engine in audit mode with a source on port 0 and a sink on port 1, and the test as the
/// software: it takes exception items by hand and re-inserts them with chosen marks.
final class AuditBench {
    let clock = VirtualClock()
    let engine: Engine<MemoryLink>
    var source: MemoryLink
    var sink: MemoryLink
    let sinkPool = BufferPool(count: 16, bufferSize: 2048, headroom: 0)
    var logged: [String] = []

    /// `maxFrameSize`: each port's largest frame (its MTU is 14 bytes less).
    init(maxFrameSize: @escaping (Int) -> Int = { _ in 2048 }) {
        var config = Engine<MemoryLink>.Configuration()
        config.audit = AuditSwitch(true)
        let (engine, wires) = Engine.onMemoryWires(configuration: config, portCount: 2, clock: clock,
                                                   maxFrameSize: maxFrameSize, log: { _ in })
        self.engine = engine
        source = wires[0]
        sink = wires[1]
    }

    static let forward = FlowAction.forward(.init(outputPort: 1, destinationMAC: .local(0xbb), sourceMAC: .local(0xaa)))

    /// Sends `frame` in on port 0 and returns the exception item the engine made of it.
    func classify(_ frame: [UInt8]) -> ExceptionItem? {
        try! frame.withUnsafeBytes { try source.transmit($0) }
        engine.poll(now: clock.now)
        return engine.exceptions.pop()
    }

    /// Frames the sink has received since the last call.
    func delivered() -> Int {
        engine.poll(now: clock.now)
        return (try? sink.receive(into: sinkPool, max: 16) { _ in }) ?? 0
    }

    func reinsert(_ item: consuming ExceptionItem, mark: AuditMark?, verdict: Reinsertion.Verdict = .complete,
                  damage: ((UnsafeMutableRawBufferPointer) -> Void)? = nil) {
        let buffer = item.buffer
        damage?(buffer.mutableBytes)
        engine.reinsertion.send(.reinsert(Reinsertion(buffer: buffer, verdict: verdict, countedFlow: item.countedFlow,
                                                      mark: mark, ingressPort: item.ingressPort)))
    }

    func inSoftware() -> UInt32 {
        var total: UInt32 = 0
        engine.table.forEach { _, stats in total += stats.inSoftwareCount }
        return total
    }
}

@Suite struct AuditTests {
    @Test func validMarkGoesStraightOn() throws {
        let b = AuditBench()
        guard let item = b.classify(udpFrame()) else { Issue.record("no exception item"); return }
        let itemKey = item.key
        let key = try #require(itemKey)
        #expect(item.mark != nil, "audit mode marks every packet it hands to the software")
        b.engine.reinsertion.send(.install(key, AuditBench.forward))
        let mark = item.mark
        b.reinsert(item, mark: mark)
        #expect(b.delivered() == 1)
        #expect(b.engine.counters.auditValidMarks == 1 && b.engine.counters.auditInvalidMarks == 0)
        #expect(b.engine.reinsertion.tested == 0)
    }

    @Test func forgedMarkIsTestedAndPassesWhenTheFrameIsSound() throws {
        let b = AuditBench()
        guard let item = b.classify(udpFrame()) else { Issue.record("no exception item"); return }
        b.engine.reinsertion.send(.install(item.key!, AuditBench.forward))
        b.reinsert(item, mark: AuditMark(token: 0x1234_5678_9abc_def0))
        #expect(b.delivered() == 1)
        #expect(b.engine.counters.auditInvalidMarks == 1 && b.engine.counters.auditValidMarks == 0)
    }

    @Test func forgedMarkOnAMalformedFrameIsDroppedWithItsReason() throws {
        let b = AuditBench()
        guard let item = b.classify(udpFrame()) else { Issue.record("no exception item"); return }
        b.engine.reinsertion.send(.install(item.key!, AuditBench.forward))
        b.reinsert(item, mark: AuditMark(token: 42), verdict: .transmit(port: 1)) { $0[24] ^= 0xff }
        #expect(b.delivered() == 0)
        #expect(b.engine.counters.auditFailures[.badHeaderChecksum] == 1)
        #expect(b.engine.counters[drop: .auditFailed] == 1)
        #expect(b.engine.buffered == 0 && b.inSoftware() == 0)
    }

    @Test func staleMarkIsAcceptedOnlyOnce() throws {
        let b = AuditBench()
        // Two packets of a new flow, both in the software before its entry is built.
        guard let first = b.classify(udpFrame()), let second = b.classify(udpFrame()) else {
            Issue.record("no exception items"); return
        }
        b.engine.reinsertion.send(.install(first.key!, AuditBench.forward))
        let firstMark = first.mark
        let mark = try #require(firstMark)
        b.reinsert(first, mark: mark)
        b.reinsert(second, mark: mark)  // the first packet's mark, again
        #expect(b.delivered() == 2)
        #expect(b.engine.counters.auditValidMarks == 1 && b.engine.counters.auditInvalidMarks == 1)
        #expect(b.inSoftware() == 0)
    }

    @Test func markOfAnotherFlowCountsAsUnmarked() throws {
        let b = AuditBench()
        guard let a = b.classify(udpFrame()) else { Issue.record("no exception item"); return }
        var otherFrame = udpFrame()
        otherFrame[37] ^= 1  // another source port: another flow
        otherFrame[40] = 0; otherFrame[41] = 0  // and no UDP checksum to fix up
        guard let other = b.classify(otherFrame) else { Issue.record("no exception item"); return }
        b.engine.reinsertion.send(.install(a.key!, AuditBench.forward))
        b.engine.reinsertion.send(.install(other.key!, AuditBench.forward))
        let markOfA = a.mark
        b.reinsert(other, mark: markOfA)
        b.reinsert(a, mark: nil)
        #expect(b.delivered() == 2)
        #expect(b.engine.counters.auditInvalidMarks == 1, "A's mark on B's packet")
        #expect(b.engine.reinsertion.tested == 1, "A without a mark, tested at the queue's entrance")
    }

    @Test func unmarkedMalformedPacketIsDroppedAtTheEntranceAndNothingElseChanges() throws {
        let b = AuditBench()
        guard let bad = b.classify(udpFrame()) else { Issue.record("no exception item"); return }
        var goodFrame = udpFrame()
        goodFrame[37] ^= 1
        goodFrame[40] = 0; goodFrame[41] = 0
        guard let good = b.classify(goodFrame) else { Issue.record("no exception item"); return }
        b.engine.reinsertion.send(.install(bad.key!, AuditBench.forward))
        b.engine.reinsertion.send(.install(good.key!, AuditBench.forward))
        // Unmarked, with its UDP length wrong: the host stage drops it, the engine counts it out.
        b.reinsert(bad, mark: nil, verdict: .transmit(port: 1)) { $0[39] &+= 1 }
        let goodMark = good.mark
        b.reinsert(good, mark: goodMark)
        #expect(b.delivered() == 1, "the other flow is untouched")
        #expect(b.engine.reinsertion.failures[.badL4Length] == 1)
        #expect(b.engine.counters[drop: .softwareDrop] == 1)
        #expect(b.engine.buffered == 0 && b.inSoftware() == 0)
        // The damaged flow's next packet takes the fast path: its entry was not harmed.
        try udpFrame().withUnsafeBytes { try b.source.transmit($0) }
        #expect(b.delivered() == 1)
        #expect(b.engine.counters.fastPath == 1)
    }
}

/// A packet the software hands back to be completed needs a forward entry to complete it
/// with: against any other action it is dropped as `noEntryToComplete`, and it still counts
/// out of its flow, so the flow's entry becomes usable.
@Suite struct CompletionTests {
    @Test(arguments: [FlowAction.drop, .toSoftware])
    func completingAgainstAnEntryThatDoesNotForwardDrops(action: FlowAction) throws {
        let b = AuditBench()
        guard let item = b.classify(udpFrame()) else { Issue.record("no exception item"); return }
        let itemKey = item.key
        let key = try #require(itemKey)
        let mark = item.mark
        b.engine.reinsertion.send(.install(key, action))
        b.reinsert(item, mark: mark)
        #expect(b.delivered() == 0)
        #expect(b.engine.counters[drop: .noEntryToComplete] == 1)
        #expect(b.inSoftware() == 0 && b.engine.buffered == 0)
        let handle = b.engine.table.lookup(key)
        let h = try #require(handle)
        // Do-not-use clears once the count is out, where an action is installed.
        let doNotUse = b.engine.table.doNotUse(h)
        #expect(doNotUse == (action == .toSoftware))
    }

    /// The entry completes only its own flow's packets: its rewrite and checksum deltas were
    /// made for that flow's headers. A frame of another flow, handed back on the first one's
    /// count, is dropped with its reason, and the count still goes out.
    @Test func completingAFrameOfAnotherFlowDrops() throws {
        let b = AuditBench()
        guard let item = b.classify(udpFrame()) else { Issue.record("no exception item"); return }
        let itemKey = item.key
        let key = try #require(itemKey)
        b.engine.reinsertion.send(.install(key, AuditBench.forward))
        // Another source port, and no UDP checksum to fix up: a sound frame, of another flow.
        b.reinsert(item, mark: nil) { frame in frame[35] ^= 1; frame[40] = 0; frame[41] = 0 }
        #expect(b.delivered() == 0)
        #expect(b.engine.counters[drop: .notTheCountedFlow] == 1)
        #expect(b.inSoftware() == 0 && b.engine.buffered == 0)
        // The flow's entry is usable: its next packet takes the fast path.
        try udpFrame().withUnsafeBytes { try b.source.transmit($0) }
        #expect(b.delivered() == 1)
        #expect(b.engine.counters.fastPath == 1)
    }
}

/// A packet that is no flow's has nothing but its bytes to tie a mark to, so it gets none,
/// and a mark never vouches for such a frame: otherwise the mark of any ARP packet would let
/// a malformed frame (one the engine cannot classify, so keyless too) skip the test.
@Suite struct KeylessAuditTests {
    @Test func aKeylessPacketsMarkDoesNotCarryAMalformedFrame() throws {
        let b = AuditBench()
        guard let arp = b.classify(arpRequestFrame()) else { Issue.record("no exception item"); return }
        #expect(arp.key == nil && arp.mark == nil, "no flow, no mark")
        // A header length the engine cannot classify: keyless, and malformed.
        var malformed = udpFrame()
        malformed[14] = 0x44
        guard let bad = b.classify(malformed) else { Issue.record("no exception item"); return }
        #expect(bad.key == nil)
        // The software hands back the malformed frame with the ARP packet's mark.
        let arpMark = arp.mark
        b.reinsert(bad, mark: arpMark, verdict: .transmit(port: 1))
        // Unmarked, the ARP request is tested at the queue's entrance, and passes.
        b.reinsert(arp, mark: nil, verdict: .transmit(port: 1))
        #expect(b.delivered() == 1, "only the ARP request leaves")
        #expect(b.engine.reinsertion.failures[.badHeaderLength] == 1, "tested at the entrance, unmarked")
        #expect(b.engine.counters.auditValidMarks == 0)
        #expect(b.engine.buffered == 0)
    }
}

/// The compatibility test's size limit is the MTU of the port a packet leaves by: a jumbo
/// port takes what a 1500-byte one does not. It was one engine-wide 1500, so in audit mode
/// every unmarked packet above 1500 bytes was dropped as oversize, whatever its port.
@Suite struct AuditMTUTests {
    /// Port 0's wire takes 2034-byte packets, port 1's 1400.
    static func bench() -> AuditBench { AuditBench(maxFrameSize: { $0 == 1 ? 1414 : 2048 }) }

    @Test func anUnmarkedPacketIsSizedAgainstTheMTUOfItsPort() throws {
        let b = Self.bench()
        // 1828 bytes of IP packet, in on port 0: back out of port 0 it fits (2034), out of
        // port 1 it does not (1400).
        guard let fits = b.classify(udpFrame(payload: 1800)), let tooBig = b.classify(udpFrame(payload: 1800)) else {
            Issue.record("no exception items"); return
        }
        b.reinsert(fits, mark: nil, verdict: .transmit(port: 0))
        b.reinsert(tooBig, mark: nil, verdict: .transmit(port: 1))
        b.engine.poll(now: b.clock.now)
        #expect(b.engine.reinsertion.failures[.oversize] == 1, "only the one for port 1")
        #expect(b.engine.counters.reinsertedOut == 1)
        #expect(b.engine.buffered == 0)
    }

    /// The engine's own test, of a packet whose mark is not valid, sizes it against the port
    /// its entry sends it out of.
    @Test func aPacketWithAnInvalidMarkIsSizedAgainstItsEntrysPort() throws {
        let b = Self.bench()
        // Two packets of a new flow, both in the software before its entry is built.
        // 1478 bytes: within 1500, past port 1's 1400.
        guard let item = b.classify(udpFrame(payload: 1450)), let small = b.classify(udpFrame(payload: 1300)) else {
            Issue.record("no exception items"); return
        }
        b.engine.reinsertion.send(.install(item.key!, AuditBench.forward))  // out of port 1
        b.reinsert(item, mark: AuditMark(token: 42), verdict: .complete)
        #expect(b.delivered() == 0)
        #expect(b.engine.counters.auditFailures[.oversize] == 1)
        b.reinsert(small, mark: AuditMark(token: 43), verdict: .complete)
        #expect(b.delivered() == 1)
        #expect(b.engine.buffered == 0 && b.inSoftware() == 0)
    }
}
