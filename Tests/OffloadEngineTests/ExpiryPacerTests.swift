import Testing
import OffloadCore
@testable import OffloadEngine

@Suite struct ExpiryPacerTests {
    let t0 = Instant(nanoseconds: 7_000_000_000)

    /// Polls at a steady rate sweep the table once per period, whatever the rate: the slices
    /// follow the time, not the number of polls.
    @Test(arguments: [2_000, 100_000, 1_000_000])
    func aSweepPerPeriodAtAnyPollRate(pollsPerSecond: Int) {
        var pacer = ExpiryPacer(sweep: .seconds(1), slotCount: 65_536, now: t0)
        var examined = 0
        let step = 1_000_000_000 / Int64(pollsPerSecond)
        for poll in 1...(2 * pollsPerSecond) {
            examined += pacer.slotsDue(now: t0 + .nanoseconds(Int64(poll) * step), budget: 64)
        }
        // Two seconds: two sweeps, less what rounding leaves for the next poll.
        #expect(examined <= 2 * 65_536 && examined >= 2 * 65_536 - 64, "\(examined)")
    }

    @Test func pollsAtOneInstantExamineNothingOnceThePassIsPaid() {
        var pacer = ExpiryPacer(sweep: .seconds(1), slotCount: 1024, now: t0)
        let later = t0 + .milliseconds(500)
        var slices: [Int] = []
        for _ in 0..<12 { slices.append(pacer.slotsDue(now: later, budget: 64)) }
        // Half a sweep is owed: 512 slots, 64 at a time, then nothing.
        #expect(slices == [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0])
    }

    @Test func afterALongPauseOneSweepIsOwedNotMany() {
        var pacer = ExpiryPacer(sweep: .seconds(1), slotCount: 256, now: t0)
        let later = t0 + .seconds(3600)
        var examined = 0
        for _ in 0..<100 { examined += pacer.slotsDue(now: later, budget: 64) }
        #expect(examined == 256)
    }

    @Test func aZeroBudgetExaminesNothing() {
        var pacer = ExpiryPacer(sweep: .seconds(1), slotCount: 256, now: t0)
        #expect(pacer.slotsDue(now: t0 + .seconds(5), budget: 0) == 0)
    }
}
