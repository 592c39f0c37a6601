import Testing
import OffloadCore
@testable import OffloadEngine

@Suite struct ConnectionTableTests {
    static func key(_ i: Int, proto: UInt8 = 17) -> FlowKey {
        FlowKey(ingressPort: UInt16(i & 1), protocol: proto, source: IPv4Address(rawValue: 0x0a00_0000 | UInt32(i >> 8)),
                destination: IPv4Address(192, 168, 0, 1), sourcePort: UInt16(truncatingIfNeeded: 1024 + i),
                destinationPort: 53)
    }

    static let forward = FlowAction.forward(FlowAction.Forward(outputPort: 1, destinationMAC: .local(1), sourceMAC: .local(2)))

    @Test func entryIsOneCacheLine() {
        #expect(MemoryLayout<FlowEntry>.size == 64)
        #expect(MemoryLayout<FlowEntry>.stride == 64)
        #expect(ConnectionTable.bytesPerSlot == 72)
        let table = ConnectionTable(capacity: 1000)
        #expect(table.slotCount == 2048)
        #expect(table.memoryBytesPerEntry == (2048 * 72 + 2048 + 999) / 1000)
        #expect(Int(bitPattern: UnsafeRawPointer(table.slots)) % 64 == 0)
    }

    /// TCP FIN/RST teardown removes entries from the middle of probe chains: every other key
    /// stays findable, and chains stay as short as if the removed key had never been there.
    @Test func removingMidChainKeepsEveryOtherKeyFindable() {
        var table = ConnectionTable(capacity: 512, hashSeed: 42)
        var live = (0..<512).map { Self.key($0) }
        for k in live { #expect(table.insert(k, action: Self.forward, now: .zero).handle != nil) }
        var rng = SeededRandom(seed: 3)
        var midChain = 0
        for _ in 0..<300 {
            let victim = live.remove(at: Int(rng.next() % UInt64(live.count)))
            let h = table.lookup(victim)!
            let next = (h.index + 1) & table.mask
            if table.slots[next].keyLow != 0 { midChain += 1 }
            #expect(table.remove(victim) != nil)
            #expect(table.lookup(victim) == nil)
            #expect(table.invariantViolation() == nil)
            #expect(live.allSatisfy { table.lookup($0).map { table.key($0) } == $0 })
            // Re-inserting some keeps churn going through the same chains.
            if rng.chance(0.3) {
                let back = Self.key(512 + Int(rng.next() % 4096))
                if table.lookup(back) == nil, !live.contains(back) {
                    #expect(table.insert(back, action: .drop, now: .zero).handle != nil)
                    live.append(back)
                }
            }
        }
        #expect(midChain > 50, "the test removed from the middle of chains")
        #expect(table.count == live.count)
    }

    @Test func fullTableRejectsWithoutBlockingThenEvictsOnceSoftwareDrains() {
        var table = ConnectionTable(capacity: 8, evictionWindow: 8)
        for i in 0..<8 {
            let h = table.insert(Self.key(i), action: Self.forward, now: Instant(nanoseconds: Int64(i) << 20)).handle!
            table.incrementInSoftware(h)
        }
        #expect(table.insert(Self.key(100), action: .drop, now: .zero) == .full)
        #expect(table.count == 8 && table.lookup(Self.key(100)) == nil)
        #expect(table.counters.rejectedFull == 1)
        // A replace never needs room.
        #expect(table.insert(Self.key(3), action: .drop, now: .zero) == .replaced(table.lookup(Self.key(3))!))
        // Key 5's packets cycle out: it is the only candidate.
        let h5 = table.lookup(Self.key(5))!
        #expect(table.decrementInSoftware(h5) == 0)
        guard case .evicted(let victim, let stats, let h) = table.insert(Self.key(100), action: .drop, now: .zero) else {
            Issue.record("expected an eviction")
            return
        }
        #expect(victim == Self.key(5) && stats.inSoftwareCount == 0)
        #expect(table.key(h) == Self.key(100))
        #expect(table.count == 8 && table.lookup(Self.key(5)) == nil)
    }

    @Test func evictionPrefersStaleThenLeastRecentlyUsed() {
        var table = ConnectionTable(capacity: 4, evictionWindow: 4)
        for i in 0..<4 { _ = table.insert(Self.key(i), action: .drop, now: Instant(nanoseconds: Int64(10 + i) << 20)) }
        // Key 0 is the oldest, but key 2 gets hit after it: 0 goes first.
        table.recordHit(table.lookup(Self.key(2))!, bytes: 100, now: Instant(nanoseconds: 50 << 20))
        guard case .evicted(let first, _, _) = table.insert(Self.key(10), action: .drop, now: Instant(nanoseconds: 60 << 20))
        else { Issue.record("no eviction"); return }
        #expect(first == Self.key(0))
        // After a policy change everything is stale; key 3, re-inserted, is current, so the
        // stale ones go before it although its last use (tick 0) is now the oldest.
        table.invalidateAll()
        #expect(table.insert(Self.key(3), action: .drop, now: .zero) == .replaced(table.lookup(Self.key(3))!))
        guard case .evicted(let second, _, _) = table.insert(Self.key(11), action: .drop, now: Instant(nanoseconds: 70 << 20))
        else { Issue.record("no eviction"); return }
        #expect(second != Self.key(3))
        #expect(table.isUsable(table.lookup(Self.key(3))!) == true)
    }

    @Test func doNotUseLifecycle() {
        var table = ConnectionTable(capacity: 16)
        let k = Self.key(1, proto: 6)
        // A miss: the engine inserts a placeholder and counts the packets it sends to software.
        let h = table.insert(k, action: .toSoftware, now: .zero, doNotUse: true).handle!
        #expect(table.incrementInSoftware(h) == 1)
        #expect(table.incrementInSoftware(h) == 2)
        // The software's real entry: still do-not-use, counts carry over.
        let h2 = table.insert(k, action: Self.forward, now: .zero, doNotUse: true).handle!
        #expect(table.inSoftwareCount(h2) == 2)
        #expect(!table.isUsable(h2) && table.doNotUse(h2))
        #expect(table.decrementInSoftware(h2) == 1)
        #expect(table.decrementInSoftware(h2) == 0)
        table.clearDoNotUse(h2)
        #expect(table.isUsable(h2) == true)
        #expect(table.kind(h2) == .forward && table.entry(h2).outputPort == 1)
    }

    @Test func packetCounterCarriesPast32Bits() {
        var table = ConnectionTable(capacity: 2)
        let h = table.insert(Self.key(1), action: .drop, now: .zero).handle!
        table.slots[h.index].packetsLow = 0xffff_fffe
        for _ in 0..<3 { table.recordHit(h, bytes: 1 << 20, now: .zero) }
        #expect(table.stats(h).packets == 0x1_0000_0001)
        #expect(table.stats(h).bytes == 3 << 20)
    }

    @Test func byteCounterCarriesPast32BitsAndCarriesOverAReplace() {
        var table = ConnectionTable(capacity: 2)
        let k = Self.key(1)
        let h = table.insert(k, action: .drop, now: .zero).handle!
        table.slots[h.index].bytesLow = 0xffff_ff00
        table.recordHit(h, bytes: 0x80, now: .zero)
        let below = table.stats(h).bytes
        #expect(below == 0xffff_ff80)
        table.recordHit(h, bytes: 0x100, now: .zero)
        let past = table.stats(h).bytes
        #expect(past == 0x1_0000_0080)
        // A new decision for the flow keeps its counters; removal leaves no cold part behind.
        let h2 = table.insert(k, action: Self.forward, now: .zero).handle!
        let kept = table.stats(h2)
        #expect(kept.bytes == 0x1_0000_0080 && kept.packets == 2)
        let last = table.remove(k)
        #expect(last?.bytes == 0x1_0000_0080)
        let violation = table.invariantViolation()
        #expect(violation == nil)
        let fresh = table.insert(k, action: .drop, now: .zero).handle!
        let freshStats = table.stats(fresh)
        #expect(freshStats.bytes == 0 && freshStats.packets == 0)
    }

    @Test func anEntryWaitingForItsActionIsNeverClosing() {
        var table = ConnectionTable(capacity: 2)
        let k = Self.key(1)
        let pending = table.insert(k, action: .toSoftware, now: .zero, doNotUse: true).handle!
        let pendingMarked = table.markClosing(pending), pendingClosing = table.isClosing(pending)
        #expect(!pendingMarked && !pendingClosing)
        let h = table.insert(k, action: Self.forward, now: .zero).handle!
        let marked = table.markClosing(h), closing = table.isClosing(h)
        #expect(marked && closing)
        // A new decision is a new start.
        let again = table.insert(k, action: Self.forward, now: .zero).handle!
        let closingAgain = table.isClosing(again)
        #expect(!closingAgain)
    }

    @Test func epochsWrapWithoutResurrectingStaleEntries() {
        var table = ConnectionTable(capacity: 64)
        let old = Self.key(1)
        _ = table.insert(old, action: .drop, now: .zero)
        for round in 1...600 {
            table.invalidateAll()
            if round % 97 == 0 { _ = table.insert(Self.key(round), action: .drop, now: .zero) }
            let h = table.lookup(old)!
            #expect(table.isStale(h) && !table.isUsable(h), "round \(round)")
            #expect(table.invariantViolation() == nil)
        }
        #expect(table.currentCount == 0)
        _ = table.insert(Self.key(1000), action: .drop, now: .zero)
        #expect(table.currentCount == 1)
        // Stale entries are reclaimed by expiry whatever their age.
        #expect(table.expireIdle(now: .zero, timeouts: IdleTimeouts(), budget: 2 * table.slotCount) == 7)
        #expect(table.count == 1)
    }

    @Test func idleTimeoutsDependOnProtocol() {
        var table = ConnectionTable(capacity: 16)
        let tcp = Self.key(1, proto: 6), udp = Self.key(2, proto: 17), icmp = Self.key(3, proto: 1)
        _ = table.insert(tcp, action: .offloadedTCP(slot: 3), now: .zero)
        _ = table.insert(udp, action: .deliver(connection: 5), now: .zero)
        _ = table.insert(icmp, action: .drop, now: .zero)
        let timeouts = IdleTimeouts(tcp: .seconds(300), udp: .seconds(30), other: .seconds(10))
        var gone: [FlowKey] = [], actions: [FlowAction] = []
        table.expireIdle(now: .zero + .seconds(20), timeouts: timeouts, budget: 64) { k, _, action in
            gone.append(k)
            actions.append(action)
        }
        #expect(gone == [icmp] && actions == [.drop], "the removed entry's action comes with it")
        table.recordHit(table.lookup(udp)!, bytes: 1, now: .zero + .seconds(20))
        table.expireIdle(now: .zero + .seconds(40), timeouts: timeouts, budget: 64) { k, _, _ in gone.append(k) }
        #expect(gone == [icmp])
        // Packets in the software keep an idle entry.
        table.incrementInSoftware(table.lookup(tcp)!)
        table.expireIdle(now: .zero + .seconds(400), timeouts: timeouts, budget: 64) { k, _, action in
            gone.append(k)
            actions.append(action)
        }
        #expect(gone == [icmp, udp] && actions == [.drop, .deliver(connection: 5)])
        #expect(table.count == 1 && table.counters.expired == 2)
    }

    @Test func expiryWorkIsBoundedByTheBudget() {
        var table = ConnectionTable(capacity: 256)
        for i in 0..<256 { _ = table.insert(Self.key(i), action: .drop, now: .zero) }
        var total = 0, calls = 0
        while table.count > 0 {
            let n = table.expireIdle(now: .zero + .seconds(60), timeouts: IdleTimeouts(), budget: 16)
            #expect(n <= 16)
            total += n
            calls += 1
        }
        #expect(total == 256)
        #expect(calls >= 256 / 16 && calls <= 2 * table.slotCount / 16 + 1)
    }

    @Test func burstLookupMatchesSingleLookups() {
        var table = ConnectionTable(capacity: 2000, hashSeed: 5)
        for i in stride(from: 0, to: 4000, by: 2) { _ = table.insert(Self.key(i), action: .drop, now: .zero) }
        var rng = SeededRandom(seed: 11)
        for _ in 0..<50 {
            let keys = (0..<32).map { _ in Self.key(Int(rng.next() % 4000)) }
            var handles = [EntryHandle?](repeating: nil, count: 32)
            keys.withUnsafeBufferPointer { k in handles.withUnsafeMutableBufferPointer { table.lookup(k, into: $0) } }
            for (k, h) in zip(keys, handles) {
                #expect(h == table.lookup(k))
                #expect((h != nil) == (k.sourcePort % 2 == 0))
            }
        }
    }

    @Test func keysRoundTripThroughPackedWords() {
        var rng = SeededRandom(seed: 8)
        for _ in 0..<1000 {
            let k = FlowKey(ingressPort: UInt16(truncatingIfNeeded: rng.next()), protocol: UInt8(truncatingIfNeeded: rng.next()),
                            source: IPv4Address(rawValue: UInt32(truncatingIfNeeded: rng.next())),
                            destination: IPv4Address(rawValue: UInt32(truncatingIfNeeded: rng.next())),
                            sourcePort: UInt16(truncatingIfNeeded: rng.next()),
                            destinationPort: UInt16(truncatingIfNeeded: rng.next()))
            let (a, b) = k.packed
            #expect(FlowKey(packed: a, b | FlowEntry.occupiedBit) == k)
        }
    }
}
