import Testing
import OffloadCore
@testable import OffloadEngine

/// Random operation sequences against a plain Dictionary model. Keys come from a small space
/// (about twice the capacity) so that collisions, re-inserts, full tables and evictions are
/// common. After every operation: the invariants of the slot array, the count, every key of
/// the space (present or absent, action, flags, counters) and the table's own counters.
@Suite struct ConnectionTableModelTests {
    struct ModelEntry: Equatable {
        var action: FlowAction
        var epoch: UInt8
        var doNotUse: Bool
        var inSoftware: UInt32 = 0
        /// Marked at a FIN: idles out after the closing timeout (cleared by a replace; never
        /// set on an entry waiting for its action).
        var closing = false
        var packets: UInt64 = 0
        var bytes: UInt64 = 0
        var lastUsedTick: UInt32

        var stats: FlowEntryStats {
            FlowEntryStats(packets: packets, bytes: bytes, lastUsedTick: lastUsedTick, inSoftwareCount: inSoftware)
        }

        /// Never evicted: its packets are in the software, or its connection runs in the engine.
        var isPinned: Bool {
            if inSoftware > 0 { return true }
            if case .offloadedTCP = action { return true }
            return false
        }
    }

    /// The reference: what the table must hold, and the eviction and expiry rules stated plainly.
    struct Model {
        let capacity: Int
        var entries: [FlowKey: ModelEntry] = [:]
        var epoch: UInt8 = 0
        var counters = ConnectionTableCounters()

        func isStale(_ e: ModelEntry) -> Bool { e.epoch != epoch }

        /// Not pinned (in the software, or offloaded); stale first, then the oldest; first in
        /// probe order on ties.
        func victim(among candidates: [FlowKey], nowTick: UInt32) -> FlowKey? {
            var best: FlowKey?
            var bestStale = false, bestAge: UInt32 = 0
            for k in candidates {
                let e = entries[k]!
                guard !e.isPinned else { continue }
                let stale = isStale(e), age = nowTick &- e.lastUsedTick
                if best == nil || (stale && !bestStale) || (stale == bestStale && age > bestAge) {
                    best = k
                    bestStale = stale
                    bestAge = age
                }
            }
            return best
        }

        func expirable(_ key: FlowKey, nowTick: UInt32, timeouts: IdleTimeouts) -> Bool {
            let e = entries[key]!
            let timeout = e.closing ? timeouts.tcpClosingTicks : timeouts.ticks(forProtocol: key.protocol)
            return e.inSoftware == 0 && (isStale(e) || nowTick &- e.lastUsedTick >= timeout)
        }
    }

    static func randomKeySpace(_ count: Int, _ rng: inout SeededRandom) -> [FlowKey] {
        var keys = Set<FlowKey>()
        while keys.count < count {
            let proto: UInt8 = [6, 17, 1][Int(rng.next() % 3)]
            let ports = proto != 1
            keys.insert(FlowKey(ingressPort: UInt16(rng.next() % 2), protocol: proto,
                                source: IPv4Address(10, 0, 0, UInt8(rng.next() % 4)),
                                destination: IPv4Address(192, 168, 1, UInt8(rng.next() % 4)),
                                sourcePort: ports ? UInt16(1000 + rng.next() % 8) : 0,
                                destinationPort: ports ? UInt16([53, 80, 443][Int(rng.next() % 3)]) : 0))
        }
        return keys.sorted { $0.packed.0 != $1.packed.0 ? $0.packed.0 < $1.packed.0 : $0.packed.1 < $1.packed.1 }
    }

    static func randomAction(for key: FlowKey, _ rng: inout SeededRandom) -> FlowAction {
        switch rng.next() % 4 {
        case 0, 1:
            let ports = key.protocol == 6 || key.protocol == 17
            return .forward(FlowAction.Forward(
                outputPort: UInt16(rng.next() % 4), destinationMAC: .local(rng.next()), sourceMAC: .local(rng.next()),
                translatedSource: rng.chance(0.5) ? IPv4Address(rawValue: UInt32(truncatingIfNeeded: rng.next())) : nil,
                translatedSourcePort: ports && rng.chance(0.5) ? UInt16(truncatingIfNeeded: rng.next()) : nil,
                translatedDestination: rng.chance(0.3) ? IPv4Address(rawValue: UInt32(truncatingIfNeeded: rng.next())) : nil,
                translatedDestinationPort: ports && rng.chance(0.3) ? UInt16(truncatingIfNeeded: rng.next()) : nil))
        case 2:
            // Ids of 31 bits: the top one tells an offloaded connection's slot from a host's id.
            let id = UInt32(truncatingIfNeeded: rng.next()) & 0x7fff_ffff
            return rng.chance(0.5) ? .deliver(connection: id) : .offloadedTCP(slot: id)
        default: return rng.chance(0.5) ? .drop : .toSoftware
        }
    }

    /// What the table says agrees with the model: the totals and the presence of every key;
    /// the entry's contents (action, flags, counters) for the keys in `detailed`.
    static func check(_ table: borrowing ConnectionTable, _ model: Model, keys: [FlowKey], detailed: [FlowKey],
                      context: @autoclosure () -> String) {
        // Slot invariants (reachability, unique keys, count <= capacity, epoch populations).
        if let violation = table.invariantViolation() { Issue.record("\(context()): \(violation)") }
        let seen = Totals(count: table.count, epoch: table.epoch, currentCount: table.currentCount,
                          counters: table.counters)
        let expected = Totals(count: model.entries.count, epoch: model.epoch,
                              currentCount: model.entries.values.filter { $0.epoch == model.epoch }.count,
                              counters: model.counters)
        if seen != expected { Issue.record("\(context()): table has \(seen), model \(expected)") }
        for key in keys where (table.lookup(key) != nil) != (model.entries[key] != nil) {
            Issue.record("\(context()): \(key) is \(model.entries[key] == nil ? "there but removed" : "missing")")
        }
        for key in detailed {
            guard let e = model.entries[key], let h = table.lookup(key) else { continue }
            // One comparison per key (a plain `if`: the #expect machinery per field would
            // dominate the run time in a debug build).
            let seen = Observed(key: table.key(h), action: table.action(h), stats: table.stats(h),
                                doNotUse: table.doNotUse(h), stale: table.isStale(h), usable: table.isUsable(h),
                                closing: table.isClosing(h))
            let expected = Observed(key: key, action: e.action, stats: e.stats, doNotUse: e.doNotUse,
                                    stale: model.isStale(e), usable: !e.doNotUse && !model.isStale(e), closing: e.closing)
            if seen != expected { Issue.record("\(context()): table has \(seen), model \(expected)") }
        }
    }

    struct Totals: Equatable {
        var count: Int
        var epoch: UInt8
        var currentCount: Int
        var counters: ConnectionTableCounters
    }

    struct Observed: Equatable {
        var key: FlowKey
        var action: FlowAction
        var stats: FlowEntryStats
        var doNotUse: Bool
        var stale: Bool
        var usable: Bool
        var closing: Bool
    }

    static let capacities = [1, 2, 3, 4, 8, 13, 16, 64]

    @Test(arguments: capacities)
    func randomSequencesAgreeWithModel(capacity: Int) {
        let sequences = capacity >= 64 ? 8 : capacity >= 13 ? 60 : 180  // 1028 in all
        var rng = SeededRandom(seed: 0x7ab1e_0000 &+ UInt64(capacity))
        for sequence in 0..<sequences {
            var seqRng = rng.fork()
            runSequence(capacity: capacity, sequence: sequence, rng: &seqRng)
        }
    }

    func runSequence(capacity: Int, sequence: Int, rng: inout SeededRandom) {
        let keys = Self.randomKeySpace(2 * capacity + 3, &rng)
        let window = [1, 2, 8][Int(rng.next() % 3)]
        // Room for every notice an operation can make: none is refused or held back here.
        let notices = SPSCRing<TranslationNotice>(capacity: 512)
        var table = ConnectionTable(capacity: capacity, hashSeed: rng.next(), evictionWindow: window,
                                    translationNotices: notices)
        var model = Model(capacity: capacity)
        // The translating entries as the notices tell them, in order.
        var announced = Set<FlowKey>()
        let timeouts = IdleTimeouts(tcp: .milliseconds(60), udp: .milliseconds(25), other: .milliseconds(40),
                                    tcpClosing: .milliseconds(10))
        var now = Instant(nanoseconds: Int64(rng.next() % (1 << 40)))
        let operations = 40 + 8 * capacity

        for op in 0..<operations {
            let key = keys[Int(rng.next() % UInt64(keys.count))]
            let nowTick = ConnectionTable.tick(now)
            let roll = rng.next() % 100
            var what = ""
            switch roll {
            case 0..<30:
                let action = Self.randomAction(for: key, &rng)
                let doNotUse = rng.chance(0.3)
                what = "insert \(key) doNotUse \(doNotUse)"
                let candidates = model.entries[key] == nil && model.entries.count == capacity
                    ? table.evictionCandidates(for: key) : []
                let outcome = table.insert(key, action: action, now: now, doNotUse: doNotUse)
                let fresh = ModelEntry(action: action, epoch: model.epoch, doNotUse: doNotUse, lastUsedTick: nowTick)
                if var e = model.entries[key] {
                    guard case .replaced(let h) = outcome else {
                        Issue.record("\(what): expected replaced, got \(outcome)")
                        return
                    }
                    #expect(table.key(h) == key)
                    e.action = action
                    e.epoch = model.epoch
                    e.doNotUse = doNotUse
                    e.lastUsedTick = nowTick
                    e.closing = false
                    model.entries[key] = e
                    model.counters.replaced += 1
                } else if model.entries.count < capacity {
                    guard case .inserted(let h) = outcome else {
                        Issue.record("\(what): expected inserted, got \(outcome)")
                        return
                    }
                    #expect(table.key(h) == key)
                    model.entries[key] = fresh
                    model.counters.inserted += 1
                } else {
                    // The candidates are the table's to name, but they must be real entries,
                    // as many as the window holds, and the rule picks among them.
                    #expect(Set(candidates).count == candidates.count, "\(what): duplicate candidates")
                    #expect(candidates.count == min(window, model.entries.count), "\(what): candidate count")
                    #expect(candidates.allSatisfy { model.entries[$0] != nil }, "\(what): unknown candidate")
                    let expected = model.victim(among: candidates, nowTick: nowTick)
                    switch outcome {
                    case .full:
                        #expect(expected == nil, "\(what): full, but \(String(describing: expected)) was evictable")
                        #expect(candidates.allSatisfy { model.entries[$0]!.isPinned })
                        model.counters.rejectedFull += 1
                    case .evicted(let victim, let stats, let h):
                        #expect(victim == expected, "\(what): evicted \(victim), rule says \(String(describing: expected))")
                        #expect(model.entries[victim] != nil, "\(what): evicted a key the table did not hold")
                        #expect(stats.inSoftwareCount == 0, "\(what): evicted an entry with packets in software")
                        #expect(stats == model.entries[victim]?.stats, "\(what): victim stats")
                        #expect(table.lookup(victim) == nil, "\(what): victim still there")
                        #expect(table.key(h) == key)
                        model.entries[victim] = nil
                        model.entries[key] = fresh
                        model.counters.evicted += 1
                        model.counters.inserted += 1
                    default:
                        Issue.record("\(what): table full, got \(outcome)")
                        return
                    }
                }
            case 30..<45:
                what = "hit \(key)"
                guard let h = table.lookup(key), model.entries[key] != nil else { break }
                let bytes = Int(rng.next() % 1500)
                table.recordHit(h, bytes: bytes, now: now)
                model.entries[key]!.packets += 1
                model.entries[key]!.bytes += UInt64(bytes)
                model.entries[key]!.lastUsedTick = nowTick
            case 45..<55:
                what = "remove \(key)"
                let removed: FlowEntryStats?
                if rng.chance(0.5) {
                    removed = table.remove(key)
                } else if let h = table.lookup(key) {
                    removed = table.remove(h)
                } else {
                    removed = nil
                }
                #expect(removed == model.entries[key]?.stats, "\(what)")
                if model.entries.removeValue(forKey: key) != nil { model.counters.removed += 1 }
            case 55..<65:
                what = "in-software \(key)"
                guard let h = table.lookup(key), model.entries[key] != nil else { break }
                let inSoftware = model.entries[key]!.inSoftware
                if inSoftware > 0 && rng.chance(0.5) {
                    #expect(table.decrementInSoftware(h) == inSoftware - 1)
                    model.entries[key]!.inSoftware -= 1
                } else {
                    #expect(table.incrementInSoftware(h) == inSoftware + 1)
                    model.entries[key]!.inSoftware += 1
                }
                #expect(table.inSoftwareCount(h) == model.entries[key]!.inSoftware)
            case 65..<68:
                what = "closing \(key)"
                guard let h = table.lookup(key), model.entries[key] != nil else { break }
                // An entry still waiting for its action is not marked.
                let waiting = model.entries[key]!.action == .toSoftware
                let marked = table.markClosing(h)
                #expect(marked == !waiting, "\(what)")
                if !waiting { model.entries[key]!.closing = true }
            case 68..<72:
                what = "do-not-use \(key)"
                guard let h = table.lookup(key), model.entries[key] != nil else { break }
                let set = rng.chance(0.5)
                if set { table.setDoNotUse(h) } else { table.clearDoNotUse(h) }
                model.entries[key]!.doNotUse = set
            case 72..<82:
                let step = rng.chance(0.1) ? Int64(rng.next() % 200_000_000) : Int64(rng.next() % 8_000_000)
                what = "advance \(step) ns"
                now = Instant(nanoseconds: now.nanoseconds + step)
            case 82..<90:
                let full = rng.chance(0.3)
                let budget = full ? 2 * table.slotCount : Int(rng.next() % UInt64(table.slotCount)) + 1
                what = "expire budget \(budget)"
                var reported: [FlowKey] = []
                let n = table.expireIdle(now: now, timeouts: timeouts, budget: budget) { k, stats, _ in
                    reported.append(k)
                    #expect(stats == model.entries[k]?.stats, "\(what): stats of \(k)")
                }
                #expect(n == reported.count)
                #expect(Set(reported).count == reported.count, "\(what): reported twice")
                model.counters.swept += UInt64(budget)
                for k in reported {
                    #expect(model.entries[k] != nil && model.expirable(k, nowTick: nowTick, timeouts: timeouts),
                            "\(what): \(k) was not expirable")
                    model.entries[k] = nil
                    model.counters.expired += 1
                }
                if full {
                    let left = model.entries.keys.filter { model.expirable($0, nowTick: nowTick, timeouts: timeouts) }
                    #expect(left.isEmpty, "\(what): a whole pass left \(left)")
                }
            case 90..<93:
                what = "invalidate"
                table.invalidateAll()
                model.epoch &+= 1
                model.counters.invalidations += 1
                // Entries 256 invalidations old stay stale: the table relabels them.
                for (k, e) in model.entries where e.epoch == model.epoch { model.entries[k]!.epoch = model.epoch &- 1 }
            case 93..<96:
                what = "burst"
                let burst = (0..<Int(rng.next() % 40)).map { _ in keys[Int(rng.next() % UInt64(keys.count))] }
                var handles = [EntryHandle?](repeating: nil, count: burst.count)
                burst.withUnsafeBufferPointer { k in
                    handles.withUnsafeMutableBufferPointer { h in table.lookup(k, into: h) }
                }
                for (k, h) in zip(burst, handles) {
                    #expect(h == table.lookup(k), "\(what): \(k)")
                }
            default:
                what = "lookup \(key)"
                #expect((table.lookup(key) != nil) == (model.entries[key] != nil), "\(what)")
            }
            // Every key in detail every few operations, else the one just operated on.
            Self.check(table, model, keys: keys, detailed: op % 4 == 0 ? keys : [key],
                       context: "capacity \(capacity) sequence \(sequence) op \(op) \(what)")
            while let notice = notices.pop() {
                let changed = notice.began ? announced.insert(notice.key).inserted : announced.remove(notice.key) != nil
                if !changed { Issue.record("\(what): \(notice) repeats what was announced") }
            }
            let translating = Set(model.entries.filter { FlowEntry(key: $0.key, action: $0.value.action).translates }.keys)
            if announced != translating {
                Issue.record("\(what): notices say \(announced.count) translating entries, the model has \(translating.count)")
            }
        }
        // Teardown returns everything.
        table.removeAll()
        #expect(table.count == 0)
        #expect(keys.allSatisfy { table.lookup($0) == nil })
        #expect(table.invariantViolation() == nil)
    }
}
