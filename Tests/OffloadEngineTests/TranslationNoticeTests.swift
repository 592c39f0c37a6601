import Testing
import OffloadCore
@testable import OffloadEngine
import OffloadLink

/// The table announces translating entries coming and going, and never lets one go
/// unannounced: an insert without room is refused, and expiry and teardown leave three
/// quarters of the ring to inserts. (The model test checks the notices against every random operation.)
@Suite struct TranslationNoticeTests {
    static func key(_ i: Int) -> FlowKey {
        FlowKey(ingressPort: 0, protocol: 17, source: IPv4Address(10, 1, 0, UInt8(i)), destination: IPv4Address(10, 2, 0, 2),
                sourcePort: 40000, destinationPort: 7)
    }

    static let nat = FlowAction.forward(FlowAction.Forward(outputPort: 1, destinationMAC: .local(1), sourceMAC: .local(2),
                                                           translatedSource: IPv4Address(10, 2, 0, 1),
                                                           translatedSourcePort: 5000))
    static let plain = FlowAction.forward(FlowAction.Forward(outputPort: 1, destinationMAC: .local(1), sourceMAC: .local(2)))

    static func drain(_ ring: SPSCRing<TranslationNotice>) -> [TranslationNotice] {
        var out: [TranslationNotice] = []
        while let n = ring.pop() { out.append(n) }
        return out
    }

    @Test func eachChangeOfATranslatingEntryIsAnnouncedOnce() {
        let ring = SPSCRing<TranslationNotice>(capacity: 16)
        var table = ConnectionTable(capacity: 2, translationNotices: ring)
        let (a, b, c) = (Self.key(1), Self.key(2), Self.key(3))
        _ = table.insert(a, action: .toSoftware, now: .zero)
        #expect(Self.drain(ring).isEmpty, "not translating")
        _ = table.insert(a, action: Self.nat, now: .zero)
        _ = table.insert(a, action: Self.nat, now: .zero)
        #expect(Self.drain(ring) == [TranslationNotice(key: a, began: true)], "a replace by the same kind says nothing")
        _ = table.insert(a, action: Self.plain, now: .zero)
        #expect(Self.drain(ring) == [TranslationNotice(key: a, began: false)])
        _ = table.insert(a, action: Self.nat, now: .zero)
        _ = table.insert(b, action: Self.nat, now: Instant(nanoseconds: 5_000_000))
        // Full: c evicts a (the older).
        guard case .evicted(let victim, _, _) = table.insert(c, action: Self.nat, now: Instant(nanoseconds: 10_000_000)) else {
            Issue.record("expected an eviction")
            return
        }
        #expect(victim == a)
        table.remove(b)
        // Read, as the software does, so that expiry finds the ring as good as empty.
        var seen = Self.drain(ring)
        let expired = table.expireIdle(now: Instant(nanoseconds: 100_000_000_000), timeouts: IdleTimeouts(), budget: 64)
        #expect(expired == 1)
        seen += Self.drain(ring)
        #expect(seen == [
            TranslationNotice(key: a, began: true), TranslationNotice(key: b, began: true),
            TranslationNotice(key: a, began: false), TranslationNotice(key: c, began: true),
            TranslationNotice(key: b, began: false), TranslationNotice(key: c, began: false),
        ])
        let lost = table.counters.noticesLost
        #expect(lost == 0)
    }

    @Test func withoutRoomInsertsAreRefusedAndExpiryWaits() {
        let ring = SPSCRing<TranslationNotice>(capacity: 4)
        var table = ConnectionTable(capacity: 16, translationNotices: ring)
        for i in 0..<4 { _ = table.insert(Self.key(i), action: Self.nat, now: .zero) }
        #expect(ring.count == 4)
        // No room: a translating insert is refused and changes nothing; others go in.
        let refused = table.insert(Self.key(9), action: Self.nat, now: .zero)
        let (found, rejected) = (table.lookup(Self.key(9)), table.counters.rejectedNoticeRoom)
        #expect(refused.handle == nil && found == nil && rejected == 1)
        let plain = table.insert(Self.key(10), action: Self.plain, now: .zero)
        #expect(plain.handle != nil)
        // Expiry removes what needs no notice, and keeps the rest while the ring is more than half full.
        let later = Instant(nanoseconds: 100_000_000_000)
        var expired = table.expireIdle(now: later, timeouts: IdleTimeouts(), budget: 64)
        let (count, plainLeft, mayRemove) = (table.count, table.lookup(Self.key(10)), table.mayRemove(table.lookup(Self.key(0))!))
        #expect(expired == 1 && count == 4 && plainLeft == nil && !mayRemove)
        while ring.pop() != nil {}
        // Empty: expiry may take one (three quarters stay for inserts), then waits again.
        expired = table.expireIdle(now: later, timeouts: IdleTimeouts(), budget: 64)
        let (left, lost) = (table.count, table.counters.noticesLost)
        #expect(expired == 1 && left == 3 && ring.count == 1 && lost == 0)
    }
}

/// The engine's side: a RST removes a NAT's entry only while its end can be announced;
/// otherwise the entry is marked closing and idles out later, announced then.
@Suite struct TranslationNoticeEngineTests {
    @Test func aResetWithTheRingBusyMarksTheEntryClosing() throws {
        let clock = VirtualClock()
        var config = Engine<MemoryLink>.Configuration()
        config.announcesTranslations = true
        config.queueCapacity = 4
        let (engine, wires) = Engine.onMemoryWires(configuration: config, portCount: 2, clock: clock)
        var source = wires[0]
        let notices = try #require(engine.translationNotices)
        #expect(notices.capacity == 32)
        func key(_ port: UInt16) -> FlowKey {
            FlowKey(ingressPort: 0, protocol: 6, source: IPv4Address(10, 1, 0, 1), destination: IPv4Address(10, 2, 0, 1),
                    sourcePort: port, destinationPort: 80)
        }
        let nat = FlowAction.forward(.init(outputPort: 1, destinationMAC: .local(2), sourceMAC: .local(1),
                                           translatedSource: IPv4Address(10, 9, 0, 1), translatedSourcePort: 5000))
        // Nine installs, unread: the ring holds more than a quarter of its room.
        for port in UInt16(39992)...40000 {
            while engine.reinsertion.room == 0 { engine.poll(now: clock.now) }
            engine.reinsertion.send(.install(key(port), nat))
        }
        while engine.poll(now: clock.now) {}
        #expect(notices.count == 9)
        try tcpSegment(flags: .rst).withUnsafeBytes { try source.transmit($0) }
        engine.poll(now: clock.now)
        let kept = engine.table.lookup(key(40000))
        let closing = kept.map { engine.table.isClosing($0) }
        #expect(closing == true && engine.counters.tornDown == 1, "kept, closing")
        // Read: now the RST of another entry removes it, announced.
        while notices.pop() != nil {}
        engine.reinsertion.send(.install(key(40000), nat))
        engine.poll(now: clock.now)
        #expect(notices.pop() == nil, "a replace by the same kind announces nothing")
        try tcpSegment(flags: .rst).withUnsafeBytes { try source.transmit($0) }
        engine.poll(now: clock.now)
        let gone = engine.table.lookup(key(40000))
        #expect(gone == nil && notices.pop() == TranslationNotice(key: key(40000), began: false))
    }
}
