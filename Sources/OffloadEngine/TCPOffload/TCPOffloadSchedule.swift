import OffloadCore

/// Which offloaded connections the engine's poll visits: those that are ready (a segment
/// arrived, the host posted or opened the window, or the last visit left output for lack of
/// budget), in the order they became ready, and those whose timer is due. A poll therefore
/// costs what its connections have to do, not what the table holds, and connections share
/// each poll's segment budget round robin instead of the first ones taking it all.
///
/// Every change to a connection marks it ready, and every visit schedules its next timer,
/// so a connection's deadline is always either in the timers or waiting on a visit.
struct TCPOffloadSchedule {
    /// Ready slots in a ring; each at most once (`isReady`), so `capacity` is room enough.
    private var ring: [UInt32]
    private var head = 0
    private(set) var readyCount = 0
    private var isReady: [Bool]
    /// Per slot: the deadline of its live timer (`Int64.max` for none). The timers may hold
    /// older entries for a slot too: stale, they are skipped as they surface.
    private var scheduled: [Int64]
    private var timers: DeadlineHeap

    init(capacity: Int) {
        ring = Array(repeating: 0, count: capacity)
        isReady = Array(repeating: false, count: capacity)
        scheduled = Array(repeating: .max, count: capacity)
        timers = DeadlineHeap(capacity: 2 * capacity)
    }

    /// Engine memory per connection for this bookkeeping: its ring place, flag, live deadline
    /// and two timer entries (the heap holds up to twice the slots, stale entries included).
    static var bytesPerConnection: Int {
        MemoryLayout<UInt32>.size + MemoryLayout<Bool>.size + MemoryLayout<Int64>.size
            + 2 * MemoryLayout<DeadlineHeap.Entry>.stride
    }

    /// Timer entries held, live and stale.
    var timerCount: Int { timers.count }

    /// The slot needs a visit at the next poll (behind those ready before it).
    mutating func markReady(_ slot: UInt32) {
        guard !isReady[Int(slot)] else { return }
        isReady[Int(slot)] = true
        var at = head &+ readyCount
        if at >= ring.count { at &-= ring.count }
        ring[at] = slot
        readyCount &+= 1
    }

    /// The slot that has waited longest for a visit.
    mutating func takeReady() -> UInt32? {
        guard readyCount > 0 else { return nil }
        let slot = ring[head]
        head &+= 1
        if head == ring.count { head = 0 }
        readyCount &-= 1
        isReady[Int(slot)] = false
        return slot
    }

    /// After a visit: the connection's next timer, if earlier than the one it has.
    mutating func schedule(_ slot: UInt32, at deadline: Instant?) {
        guard let d = deadline?.nanoseconds, d < scheduled[Int(slot)] else { return }
        scheduled[Int(slot)] = d
        timers.push(d, slot)
        if timers.count > 2 * ring.count + 64 { dropStaleTimers() }
    }

    /// The slot's connection is gone: its timers are stale from now on.
    mutating func forget(_ slot: UInt32) { scheduled[Int(slot)] = .max }

    /// Marks ready every slot whose timer is due at `now`.
    mutating func markDue(now: Instant) {
        while let top = timers.min, top.deadline <= now.nanoseconds {
            timers.popMin()
            if scheduled[Int(top.slot)] == top.deadline {
                scheduled[Int(top.slot)] = .max
                markReady(top.slot)
            }
        }
    }

    /// The earliest live timer.
    mutating func nextDeadline() -> Instant? {
        while let top = timers.min, scheduled[Int(top.slot)] != top.deadline { timers.popMin() }
        return timers.min.map { Instant(nanoseconds: $0.deadline) }
    }

    /// Keeps the timers' size bounded when deadlines keep moving earlier (each move leaves a
    /// stale entry until its time comes).
    private mutating func dropStaleTimers() {
        let scheduled = self.scheduled
        timers.removeAll { scheduled[Int($0.slot)] != $0.deadline }
    }
}
