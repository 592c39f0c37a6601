import OffloadCore

/// Inserting, removing, evicting, expiring, invalidating: the slow-path side of the table.
extension ConnectionTable {
    /// Adds or replaces the entry for `key`.
    ///
    /// - A key that has an entry (current or stale) gets the new action, the current epoch,
    ///   `doNotUse` and last-used `now`, and is no longer closing; its counters and
    ///   in-software count carry over (the flow's packets in the software are still there).
    /// - A new key takes an empty slot while `count < capacity`, else evicts (see the type's
    ///   documentation), else returns `.full` and changes nothing.
    public mutating func insert(_ key: FlowKey, action: FlowAction, now: Instant,
                                doNotUse: Bool = false) -> InsertOutcome {
        var new = FlowEntry(key: key, action: action)
        if doNotUse { new.control |= FlowEntry.doNotUseBit }
        new.epoch = epoch
        new.lastUsedTick = ConnectionTable.tick(now)
        let a = new.keyHigh, b = new.keyLow
        let start = home(a, b & ~FlowEntry.occupiedBit)
        var i = start
        while true {
            let e = slots + i
            let low = e.pointee.keyLow
            if low == b && e.pointee.keyHigh == a {
                let translated = e.pointee.translates, translates = new.translates
                if translated != translates {
                    guard noticeRoom >= 1 else { return refuseForNoticeRoom() }
                    announce(key, began: translates)
                }
                new.bytesLow = e.pointee.bytesLow
                new.packetsLow = e.pointee.packetsLow
                new.inSoftwareCount = e.pointee.inSoftwareCount
                // A new decision is a new start: a connection on the same ports whose SYN went
                // through the software is not the closing one before it. (An entry waiting for
                // its action is never closing: a new flow's install touches no cold part.)
                if e.pointee.kind != .toSoftware { cold[i].closing = false }
                epochPopulation[Int(e.pointee.epoch)] -= 1
                epochPopulation[Int(epoch)] += 1
                e.pointee = new
                counters.replaced += 1
                return .replaced(EntryHandle(slot: i))
            }
            if low == 0 { break }
            i = (i &+ 1) & mask
        }
        if count < capacity {
            if new.translates, noticeRoom < 1 { return refuseForNoticeRoom() }
            place(new, at: i)
            return .inserted(EntryHandle(slot: i))
        }
        guard let victim = evictionVictim(from: start, nowTick: new.lastUsedTick) else {
            counters.rejectedFull += 1
            return .full
        }
        if (slots[victim].translates ? 1 : 0) + (new.translates ? 1 : 0) > noticeRoom { return refuseForNoticeRoom() }
        let victimKey = slots[victim].key
        let victimStats = stats(EntryHandle(slot: victim))
        removeSlot(victim)
        counters.evicted += 1
        i = start
        while slots[i].keyLow != 0 { i = (i &+ 1) & mask }
        place(new, at: i)
        return .evicted(victim: victimKey, stats: victimStats, EntryHandle(slot: i))
    }

    mutating func place(_ entry: FlowEntry, at i: Int) {
        if entry.translates { announce(entry.key, began: true) }
        // The cold part of an empty slot is zero already.
        slots[i] = entry
        epochPopulation[Int(entry.epoch)] += 1
        count += 1
        counters.inserted += 1
    }

    /// The slot to evict for a new key whose home is `start`, or nil (see the type's documentation).
    func evictionVictim(from start: Int, nowTick: UInt32) -> Int? {
        var best = -1, bestStale = false, bestAge: UInt32 = 0
        var seen = 0, examined = 0, i = start
        while seen < evictionWindow && examined <= mask {
            if slots[i].keyLow != 0 {
                seen += 1
                // Never an entry with packets in the software, nor an offloaded connection's
                // (its segments would have nowhere to go).
                if slots[i].inSoftwareCount == 0 && !slots[i].isOffloadedTCP {
                    let stale = slots[i].epoch != epoch
                    let age = nowTick &- slots[i].lastUsedTick
                    if best < 0 || (stale && !bestStale) || (stale == bestStale && age > bestAge) {
                        best = i
                        bestStale = stale
                        bestAge = age
                    }
                }
            }
            i = (i &+ 1) & mask
            examined += 1
        }
        return best < 0 ? nil : best
    }

    /// The keys an insert of `key` into a full table would consider for eviction, in probe order.
    func evictionCandidates(for key: FlowKey) -> [FlowKey] {
        let (a, b) = key.packed
        var result: [FlowKey] = []
        var i = home(a, b), examined = 0
        while result.count < evictionWindow && examined <= mask {
            if slots[i].keyLow != 0 { result.append(slots[i].key) }
            i = (i &+ 1) & mask
            examined += 1
        }
        return result
    }

    // MARK: Translation notices

    /// Room for more translation notices (unbounded when the table announces none).
    public var noticeRoom: Int {
        guard let ring = translationNotices else { return .max }
        return ring.capacity - ring.count
    }

    /// Whether the entry may go now by expiry or teardown: it does not translate, or its end
    /// can be announced without taking the three quarters of the ring kept for inserts. One
    /// that may not stays until there is room (it idles out later).
    @inlinable
    public func mayRemove(_ h: EntryHandle) -> Bool {
        guard let ring = translationNotices, entry(at: h).pointee.translates else { return true }
        return ring.count < ring.capacity / 4
    }

    mutating func announce(_ key: FlowKey, began: Bool) {
        // Inserts check for room first and expiry and teardown keep most of it free, so only
        // a removal forced past that (`remove` of a translating entry) can find it full.
        if translationNotices?.push(TranslationNotice(key: key, began: began)) != nil { counters.noticesLost += 1 }
    }

    mutating func refuseForNoticeRoom() -> InsertOutcome {
        counters.rejectedNoticeRoom += 1
        return .full
    }

    /// Removes the entry for `key`, returning its last counters, or nil if it had none.
    /// An entry with packets in the software may be removed (TCP RST): the engine must then
    /// not expect to find it when those packets come back.
    @discardableResult
    public mutating func remove(_ key: FlowKey) -> FlowEntryStats? {
        guard let h = lookup(key) else { return nil }
        return remove(h)
    }

    /// Removes the entry of a handle, returning its last counters.
    @discardableResult
    public mutating func remove(_ h: EntryHandle) -> FlowEntryStats {
        let s = stats(h)
        removeSlot(h.index)
        counters.removed += 1
        return s
    }

    /// Backward-shift deletion: pulls each later entry of the cluster into the hole when its
    /// home slot is not between the hole and where it sits, then empties the last hole.
    mutating func removeSlot(_ i: Int) {
        if slots[i].translates { announce(slots[i].key, began: false) }
        epochPopulation[Int(slots[i].epoch)] -= 1
        count -= 1
        var hole = i, j = i
        while true {
            j = (j &+ 1) & mask
            let low = slots[j].keyLow
            if low == 0 { break }
            let h = home(slots[j].keyHigh, low & ~FlowEntry.occupiedBit)
            if (j &- h) & mask >= (j &- hole) & mask {
                slots[hole] = slots[j]
                cold[hole] = cold[j]
                hole = j
            }
        }
        slots[hole] = FlowEntry()
        cold[hole] = FlowEntryCold()
    }

    /// Removes idle and stale entries, examining at most `budget` slots from where the last
    /// call stopped (bounded work per call; a slot is examined again after a removal, since
    /// the shift may have moved an entry into it). An entry is removed when it has no packets
    /// in the software and either is stale or has been idle for at least its protocol's
    /// timeout. `budget >= 2 * slotCount` is always a whole pass. Calls `removed` with each
    /// key and its last counters; returns how many were removed.
    @discardableResult
    public mutating func expireIdle(now: Instant, timeouts: IdleTimeouts, budget: Int,
                                    removed: (FlowKey, FlowEntryStats, FlowAction) -> Void = { _, _, _ in }) -> Int {
        let nowTick = ConnectionTable.tick(now)
        var work = 0, n = 0
        while work < budget {
            work += 1
            let i = expiryCursor
            let low = slots[i].keyLow
            if low != 0 && slots[i].inSoftwareCount == 0 {
                let timeout = cold[i].closing ? timeouts.tcpClosingTicks
                    : timeouts.ticks(forProtocol: UInt8(truncatingIfNeeded: low))
                // A due entry whose end cannot be announced yet is looked at again next pass.
                if slots[i].epoch != epoch || nowTick &- slots[i].lastUsedTick >= timeout,
                   mayRemove(EntryHandle(slot: i)) {
                    let key = slots[i].key, action = slots[i].action
                    let s = stats(EntryHandle(slot: i))
                    removeSlot(i)
                    counters.expired += 1
                    n += 1
                    removed(key, s, action)
                    continue
                }
            }
            expiryCursor = (i &+ 1) & mask
        }
        counters.swept &+= UInt64(work)
        return n
    }

    /// Invalidates every entry (a policy change): advances the policy epoch, O(1). Older
    /// entries become stale (see the type's documentation). The epoch is 8 bits: when the next
    /// value is still held by entries 256 invalidations old, those are relabelled stale first,
    /// an O(slots) pass that `expireIdle` makes rare by reclaiming stale entries.
    public mutating func invalidateAll() {
        epoch &+= 1
        counters.invalidations += 1
        let reused = Int(epoch)
        if epochPopulation[reused] > 0 {
            let older = epoch &- 1
            for i in 0...mask where slots[i].keyLow != 0 && slots[i].epoch == epoch {
                slots[i].epoch = older
            }
            epochPopulation[Int(older)] += epochPopulation[reused]
            epochPopulation[reused] = 0
        }
    }

    /// Empties the table (teardown, tests). O(slots). Counters are kept. Nothing is
    /// announced: whatever the entries translated to goes with the table.
    public mutating func removeAll() {
        for i in 0...mask where slots[i].keyLow != 0 {
            slots[i] = FlowEntry()
            cold[i] = FlowEntryCold()
        }
        epochPopulation.update(repeating: 0, count: 256)
        counters.removed += UInt64(count)
        count = 0
    }

    /// Checks the table's invariants (for tests): every entry is reachable from its home slot
    /// without crossing an empty slot, keys are unique, and the counts agree. Returns the
    /// first violation, or nil.
    func invariantViolation() -> String? {
        var occupied = 0
        var perEpoch = [Int](repeating: 0, count: 256)
        for i in 0...mask where slots[i].keyLow == 0 && !cold[i].isZero {
            return "slot \(i): empty, with a cold part left over"
        }
        for i in 0...mask where slots[i].keyLow != 0 {
            occupied += 1
            perEpoch[Int(slots[i].epoch)] += 1
            let key = slots[i].key
            guard let h = lookup(key) else { return "slot \(i): \(key) not reachable" }
            if h.index != i { return "slot \(i): \(key) also found at \(h.index)" }
        }
        if occupied != count { return "count \(count), occupied \(occupied)" }
        if count > capacity { return "count \(count) above capacity \(capacity)" }
        for e in 0..<256 where perEpoch[e] != epochPopulation[e] {
            return "epoch \(e): \(perEpoch[e]) entries, population says \(epochPopulation[e])"
        }
        return nil
    }
}
