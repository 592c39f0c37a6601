import OffloadCore

/// How many table slots the idle sweep (B9) examines in a poll: the whole table once per
/// `sweep`, in slices as time passes, and never more than the budget in one poll.
///
/// The slice used to be the budget at every poll. An engine that spins while idle polls a
/// few hundred thousand times a second, so it swept its table that often: in a connection
/// storm through the gateway the sweep took more of the engine's own time than the packets
/// did. Paced by time, the work follows the table's size, not the poll rate, and an entry
/// goes at most about a sweep after its timeout (two, if the budget held the sweep back).
struct ExpiryPacer {
    private let sweepNanoseconds: Int64
    private let slotCount: Int64
    /// Where the current sweep period began, and the slots examined since (negative: owed
    /// from the period before, at most one sweep's worth).
    private var periodStart: Int64
    private var examined: Int64 = 0

    init(sweep: Duration, slotCount: Int, now: Instant) {
        sweepNanoseconds = max(1, sweep.nanoseconds)
        self.slotCount = Int64(slotCount)
        periodStart = now.nanoseconds
    }

    /// The slots to examine now, at most `budget`. After a long pause at most one sweep is
    /// owed from before, not one per period missed.
    mutating func slotsDue(now: Instant, budget: Int) -> Int {
        guard budget > 0 else { return 0 }
        var elapsed = now.nanoseconds &- periodStart
        guard elapsed >= 0 else { return 0 }
        if elapsed >= sweepNanoseconds {
            let periods = elapsed / sweepNanoseconds
            periodStart &+= periods &* sweepNanoseconds
            elapsed -= periods &* sweepNanoseconds
            examined = periods > 1 ? -slotCount : max(examined - slotCount, -slotCount)
        }
        // slotCount * elapsed / sweep, exactly: elapsed < sweep, so the quotient fits.
        let owed = sweepNanoseconds.dividingFullWidth(slotCount.multipliedFullWidth(by: elapsed)).quotient
        let slots = min(owed - examined, Int64(budget))
        guard slots > 0 else { return 0 }
        examined += slots
        return Int(slots)
    }
}
