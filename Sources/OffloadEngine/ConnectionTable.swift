import COffloadShim
import OffloadCore
#if canImport(Glibc)
import Glibc
#endif

/// The engine's connection table (B2, B4, B9): exact match on `FlowKey`, one 64-byte entry
/// per flow, no allocation after `init`.
///
/// **Layout.** Open addressing with linear probing over a power-of-two array of `FlowEntry`
/// slots, at most half full (`slotCount >= 2 * capacity`): an average hit probes 1.5 slots
/// and a miss 2.5, and the next slot of a probe is the next cache line (a burst prefetches
/// each key's home slot and the one after it). The slots are one block aligned to 64 bytes (to 2 MiB and
/// advised as huge pages when the block is that large: at 1M flows the slots span 128 MiB,
/// and the prototype in ARCHITECTURE.md gained 10 to 20% from huge pages). What neither the
/// fast path nor a new flow touches (the counters' high halves, the closing mark) lives in a
/// parallel array of 8-byte `FlowEntryCold`, zero in every empty slot.
///
/// **Deletion by backward shift, no tombstones.** Flows come and go all the time (TCP
/// teardown, idle expiry, eviction); tombstones would pile up under that churn and lengthen
/// every miss until a rehash, which is a stall of the whole table. Backward shift (Knuth 6.4
/// Algorithm R) keeps every probe chain exactly as short as if the remaining keys had been
/// inserted alone, and a miss stops at the first empty slot. The cost is that entries move
/// on removal, so an `EntryHandle` is valid only until the next insert or removal.
///
/// **Eviction.** When `count == capacity`, an insert of a new key evicts one entry among the
/// first `evictionWindow` occupied slots from the key's home slot (the entries its probe
/// would walk past, so the work is bounded and local). Entries with packets in the software
/// (`inSoftwareCount > 0`) are never evicted: their re-inserted packets must find the entry
/// to keep the flow's order (B4/B5). Among the others, a stale entry (older policy epoch)
/// goes first, then the least recently used; ties go to the first in probe order. With no
/// candidate the insert returns `.full` and changes nothing: the software keeps the flow on
/// the slow path, and the fast path is never blocked (B9).
///
/// **Invalidation.** Each entry records the policy epoch it was built under.
/// `invalidateAll()` advances the epoch in O(1): older entries become stale. A stale entry is
/// still found by `lookup` (so the engine can count the flow's packets in the software
/// against it, as for do-not-use) but is not `isUsable`; an insert of its key replaces it,
/// and eviction and `expireIdle` reclaim it first.
///
/// **Threads.** One owner (the engine's loop). The fast-path calls (`lookup`, `recordHit`,
/// the B4 primitives) are non-mutating: they write only through the slot pointer, so a table
/// held in a class costs no exclusivity check per packet. They are always inlined: a call
/// to a borrowing method of a move-only struct held in a class copies the whole struct first.
public struct ConnectionTable: ~Copyable {
    @usableFromInline let slots: UnsafeMutablePointer<FlowEntry>
    @usableFromInline let cold: UnsafeMutablePointer<FlowEntryCold>
    /// Entries per epoch value, so that an epoch value is reused only when no entry holds it.
    @usableFromInline let epochPopulation: UnsafeMutablePointer<Int>
    @usableFromInline let mask: Int
    @usableFromInline let hashSeed: UInt64
    /// The most entries the table holds.
    public let capacity: Int
    /// How many occupied slots an insert into a full table considers for eviction.
    public let evictionWindow: Int
    /// Entries held, stale ones included.
    public internal(set) var count = 0
    /// The current policy epoch (wraps at 256; see `invalidateAll`).
    public internal(set) var epoch: UInt8 = 0
    public internal(set) var counters = ConnectionTableCounters()
    /// Where `expireIdle` continues.
    var expiryCursor = 0
    /// Where the table announces translating entries coming and going (nil: nowhere).
    @usableFromInline let translationNotices: SPSCRing<TranslationNotice>?

    /// A table for up to `capacity` entries. `hashSeed` keys the hash (pass a random value in
    /// production so that senders cannot aim new flows at one probe chain).
    ///
    /// With `translationNotices`, every translating entry that comes to be or goes is
    /// announced there (see `TranslationNotice`). An insert refuses (`.full`) rather than go
    /// unannounced; removals by expiry or teardown (`mayRemove`) leave three quarters of the
    /// ring to inserts.
    public init(capacity: Int, hashSeed: UInt64 = 0x6f66_666c_6f61_6421, evictionWindow: Int = 8,
                translationNotices: SPSCRing<TranslationNotice>? = nil) {
        precondition(capacity >= 1 && capacity <= 1 << 30, "ConnectionTable: capacity must be 1 to 2^30")
        precondition(evictionWindow >= 1, "ConnectionTable: the eviction window needs at least one entry")
        precondition(MemoryLayout<FlowEntry>.stride == 64, "FlowEntry must be one cache line")
        let n = ConnectionTable.slotCount(forCapacity: capacity)
        let byteCount = n * MemoryLayout<FlowEntry>.stride
        let hugePage = 2 << 20
        let raw = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: byteCount >= hugePage ? hugePage : 64)
        #if canImport(Glibc)
        if byteCount >= hugePage { _ = madvise(raw, byteCount, MADV_HUGEPAGE) }
        #endif
        slots = raw.bindMemory(to: FlowEntry.self, capacity: n)
        slots.initialize(repeating: FlowEntry(), count: n)
        cold = UnsafeMutablePointer<FlowEntryCold>.allocate(capacity: n)
        cold.initialize(repeating: FlowEntryCold(), count: n)
        epochPopulation = UnsafeMutablePointer<Int>.allocate(capacity: 256)
        epochPopulation.initialize(repeating: 0, count: 256)
        mask = n - 1
        self.hashSeed = hashSeed
        self.capacity = capacity
        self.evictionWindow = evictionWindow
        self.translationNotices = translationNotices
    }

    deinit {
        slots.deinitialize(count: mask + 1)
        UnsafeMutableRawPointer(slots).deallocate()
        cold.deallocate()
        epochPopulation.deallocate()
    }

    /// Slots in the array (a power of two, at least twice the capacity).
    public var slotCount: Int { mask + 1 }

    /// The slots a table of `capacity` entries has: the power of two at least twice as large.
    public static func slotCount(forCapacity capacity: Int) -> Int {
        var n = 2
        while n < 2 * capacity { n <<= 1 }
        return n
    }

    /// Bytes of table memory per slot: the entry and its cold part.
    public static var bytesPerSlot: Int { MemoryLayout<FlowEntry>.stride + MemoryLayout<FlowEntryCold>.stride }

    /// All the memory of a table of `capacity` entries.
    public static func memoryBytes(forCapacity capacity: Int) -> Int {
        slotCount(forCapacity: capacity) * bytesPerSlot + 256 * MemoryLayout<Int>.stride
    }

    /// All the table's memory.
    public var memoryBytes: Int { ConnectionTable.memoryBytes(forCapacity: capacity) }

    /// Table memory per entry of capacity, rounded up (the price of the 0.5 load factor and
    /// the power-of-two size: 144 B when the capacity is a power of two, up to twice that).
    public var memoryBytesPerEntry: Int { (memoryBytes + capacity - 1) / capacity }

    /// Entries of the current policy epoch.
    public var currentCount: Int { epochPopulation[Int(epoch)] }

    // MARK: time

    /// Entries keep time in ticks of 2^20 ns (about 1.05 ms) in 32 bits, which wrap after
    /// about 52 days; ages are wrapping differences, so idle times up to that are exact to a tick.
    public static let tickShift: Int64 = 20

    @inlinable
    public static func tick(_ t: Instant) -> UInt32 { UInt32(truncatingIfNeeded: t.nanoseconds >> 20) }

    /// A duration in ticks, rounded down, at most `UInt32.max`.
    public static func ticks(_ d: Duration) -> UInt32 {
        let t = max(0, d.nanoseconds >> tickShift)
        return t > Int64(UInt32.max) ? UInt32.max : UInt32(t)
    }

    // MARK: lookup (fast path)

    @inlinable @inline(__always)
    func home(_ a: UInt64, _ b: UInt64) -> Int {
        Int(truncatingIfNeeded: FlowKey.tableHash(a, b, seed: hashSeed)) & mask
    }

    /// Walks the probe chain from `start` for the packed key (`b` with the occupied bit).
    @inlinable @inline(__always)
    func probe(_ a: UInt64, _ b: UInt64, from start: Int) -> EntryHandle? {
        var i = start
        while true {
            let e = slots + i
            let low = e.pointee.keyLow
            if low == b && e.pointee.keyHigh == a { return EntryHandle(slot: i) }
            if low == 0 { return nil }
            i = (i &+ 1) & mask
        }
    }

    /// The entry for `key`, current or stale (check `isUsable`), or nil.
    @inlinable @inline(__always)
    public func lookup(_ key: FlowKey) -> EntryHandle? {
        let (a, b) = key.packed
        return probe(a, b | FlowEntry.occupiedBit, from: home(a, b))
    }

    /// The home slot of `key`, prefetched with the slot after it: the first half of a lookup
    /// done early, so that `lookup(_:home:)` later finds the slot in the cache. At the table's
    /// load (at most one half) a hit takes 1.5 probes on average, and each slot is a cache
    /// line of its own: the second line saved about 14% at 1M flows (8.6 to 9.8 Mpps).
    @inlinable @inline(__always)
    func prefetchHome(of key: FlowKey) -> Int {
        let (a, b) = key.packed
        let s = home(a, b)
        offload_prefetch(slots + s)
        offload_prefetch(slots + ((s &+ 1) & mask))
        return s
    }

    /// `lookup(_:)` from the key's home slot, as `prefetchHome(of:)` returned it (masked, so
    /// that no value can lead outside the table).
    @inlinable @inline(__always)
    func lookup(_ key: FlowKey, home: Int) -> EntryHandle? {
        let (a, b) = key.packed
        return probe(a, b | FlowEntry.occupiedBit, from: home & mask)
    }

    /// Looks up a burst: hashes every key and prefetches its home slot first, then probes,
    /// so the cache misses of the burst overlap instead of following one another.
    /// `handles[i]` gets the result for `keys[i]`; `handles` must be at least as long.
    @inlinable @inline(__always)
    public func lookup(_ keys: UnsafeBufferPointer<FlowKey>, into handles: UnsafeMutableBufferPointer<EntryHandle?>) {
        precondition(handles.count >= keys.count, "ConnectionTable.lookup: handles shorter than keys")
        guard let k = keys.baseAddress, let out = handles.baseAddress else { return }
        let n = keys.count
        var j = 0
        while j < n {
            let (a, b) = k[j].packed
            let s = home(a, b)
            out[j] = EntryHandle(slot: s)
            offload_prefetch(slots + s)
            j &+= 1
        }
        j = 0
        while j < n {
            let (a, b) = k[j].packed
            out[j] = probe(a, b | FlowEntry.occupiedBit, from: out[j].unsafelyUnwrapped.index)
            j &+= 1
        }
    }

    // MARK: entries by handle

    /// The slot of a handle; a precondition keeps every access inside the table and on an entry.
    @inlinable @inline(__always)
    func entry(at h: EntryHandle) -> UnsafeMutablePointer<FlowEntry> {
        let i = h.index
        precondition(i <= mask && slots[i].keyLow != 0, "ConnectionTable: handle to an empty slot (kept across a removal?)")
        return slots + i
    }

    /// The slot of a handle that a lookup has just returned, without `entry(at:)`'s check
    /// that the slot is still occupied (it is: nothing ran in between).
    @inlinable @inline(__always)
    func slot(justFound h: EntryHandle) -> UnsafeMutablePointer<FlowEntry> { slots + h.index }

    /// The handle of a slot `slot(justFound:)` gave.
    func handle(of slot: UnsafeMutablePointer<FlowEntry>) -> EntryHandle { EntryHandle(slot: slot - slots) }

    /// A copy of the entry (its key, action, flags), e.g. to apply its rewrite.
    @inlinable @inline(__always) public func entry(_ h: EntryHandle) -> FlowEntry { entry(at: h).pointee }

    @inlinable public func key(_ h: EntryHandle) -> FlowKey { entry(at: h).pointee.key }

    @inlinable @inline(__always) public func kind(_ h: EntryHandle) -> FlowActionKind { entry(at: h).pointee.kind }

    public func action(_ h: EntryHandle) -> FlowAction { entry(at: h).pointee.action }

    /// Whether the fast path may run the entry's action: do-not-use clear and current epoch.
    @inlinable @inline(__always)
    public func isUsable(_ h: EntryHandle) -> Bool {
        let e = entry(at: h)
        return e.pointee.control & FlowEntry.doNotUseBit == 0 && e.pointee.epoch == epoch
    }

    /// Whether the entry was built under an older policy epoch.
    @inlinable public func isStale(_ h: EntryHandle) -> Bool { entry(at: h).pointee.epoch != epoch }

    /// Applies the entry's `forward` rewrite to a frame (see `FlowEntry.applyRewrite`).
    @inlinable @inline(__always)
    public func applyRewrite(_ h: EntryHandle, to frame: UnsafeMutableRawBufferPointer,
                             ipOffset: Int = 14, partialL4: Bool = false) -> FlowRewriteOutcome {
        entry(at: h).pointee.applyRewrite(to: frame, ipOffset: ipOffset, partialL4: partialL4)
    }

    /// Counts a packet of `bytes` bytes that took the entry's action at `now`.
    @inlinable @inline(__always)
    public func recordHit(_ h: EntryHandle, bytes: Int, now: Instant) { recordHit(at: entry(at: h), bytes: bytes, now: now) }

    /// `recordHit` on a slot from `entry(at:)`.
    @inlinable @inline(__always)
    func recordHit(at e: UnsafeMutablePointer<FlowEntry>, bytes: Int, now: Instant) {
        // A frame is far below 4 GiB: one add carries at most once.
        let (sum, carry) = e.pointee.bytesLow.addingReportingOverflow(UInt32(truncatingIfNeeded: bytes))
        e.pointee.bytesLow = sum
        e.pointee.packetsLow &+= 1
        let packetsCarry = e.pointee.packetsLow == 0
        if carry || packetsCarry { ConnectionTable.carry(into: cold + (e - slots), bytes: carry, packets: packetsCarry) }
        e.pointee.lastUsedTick = ConnectionTable.tick(now)
    }

    /// Once every 2^32 packets or bytes of a flow: the high halves, in the cold part. Static,
    /// not a method: the engine's call to a method of this move-only struct, held in the
    /// engine object, put a copy of the whole struct on the stack first (160 bytes, on every
    /// packet, in the generated code).
    @usableFromInline @inline(never)
    static func carry(into c: UnsafeMutablePointer<FlowEntryCold>, bytes: Bool, packets: Bool) {
        if bytes { c.pointee.bytesHigh &+= 1 }
        if packets { c.pointee.packetsHigh &+= 1 }
    }

    public func stats(_ h: EntryHandle) -> FlowEntryStats {
        let e = entry(at: h)
        let c = cold[h.index]
        return FlowEntryStats(packets: UInt64(c.packetsHigh) << 32 | UInt64(e.pointee.packetsLow),
                              bytes: UInt64(c.bytesHigh) << 32 | UInt64(e.pointee.bytesLow),
                              lastUsedTick: e.pointee.lastUsedTick, inSoftwareCount: e.pointee.inSoftwareCount)
    }

    /// Marks a TCP flow that sent a FIN: its entry now idles out after the closing timeout.
    /// It stays until then, for the last ACKs and for data the other way on a half-closed
    /// connection. An entry still waiting for its action (`toSoftware`) is not marked: the
    /// action's install starts it afresh, and so need not clear a mark (see `insert`).
    /// Returns whether the entry is marked.
    @discardableResult
    public func markClosing(_ h: EntryHandle) -> Bool {
        let e = entry(at: h)
        guard e.pointee.kind != .toSoftware else { return false }
        cold[e - slots].closing = true
        return true
    }

    public func isClosing(_ h: EntryHandle) -> Bool { cold[entry(at: h) - slots].closing }

    /// Clears `markClosing` (a new connection on the same ports).
    public func reopen(_ h: EntryHandle) { cold[entry(at: h) - slots].closing = false }

    // MARK: B4 primitives

    /// The do-not-use flag: while set, packets of the flow go to the software behind the earlier ones.
    @inlinable public func doNotUse(_ h: EntryHandle) -> Bool { entry(at: h).pointee.doNotUse }

    @inlinable public func setDoNotUse(_ h: EntryHandle) { entry(at: h).pointee.control |= FlowEntry.doNotUseBit }

    /// Clears do-not-use; the engine does so when `decrementInSoftware` returns 0.
    @inlinable public func clearDoNotUse(_ h: EntryHandle) { entry(at: h).pointee.control &= ~FlowEntry.doNotUseBit }

    @inlinable public func inSoftwareCount(_ h: EntryHandle) -> UInt32 { entry(at: h).pointee.inSoftwareCount }

    /// A packet of the flow went to the software. Returns the new count.
    @inlinable @discardableResult
    public func incrementInSoftware(_ h: EntryHandle) -> UInt32 {
        let e = entry(at: h)
        precondition(e.pointee.inSoftwareCount < UInt32.max, "ConnectionTable: inSoftwareCount overflow")
        e.pointee.inSoftwareCount &+= 1
        return e.pointee.inSoftwareCount
    }

    /// A packet of the flow came back from the software and left the engine. Returns the new
    /// count; 0 means every packet sent to the software has cycled out (the seed's total count
    /// signal). Below zero is an engine bug: a precondition.
    @inlinable @discardableResult
    public func decrementInSoftware(_ h: EntryHandle) -> UInt32 {
        let e = entry(at: h)
        precondition(e.pointee.inSoftwareCount > 0, "ConnectionTable: inSoftwareCount below zero")
        e.pointee.inSoftwareCount &-= 1
        return e.pointee.inSoftwareCount
    }

    /// Every entry with its counters, in slot order (a dump for the software and for tests).
    public func forEach(_ body: (FlowEntry, FlowEntryStats) throws -> Void) rethrows {
        for i in 0...mask where slots[i].keyLow != 0 {
            try body(slots[i], stats(EntryHandle(slot: i)))
        }
    }
}

extension ConnectionTable: @unchecked Sendable {}
// Unchecked: the table owns its memory alone and is move-only, so a value can change hands
// between threads but never be shared by two.
