import Testing
import OffloadCore
@testable import OffloadEngine

/// The offloaded connections' poll schedule: ready slots once each and in order, timers
/// that mark their slot ready when due, stale timers skipped.
struct TCPOffloadScheduleTests {
    static func drain(_ s: inout TCPOffloadSchedule) -> [UInt32] {
        var out: [UInt32] = []
        while let slot = s.takeReady() { out.append(slot) }
        return out
    }

    @Test func readySlotsComeOnceEachInTheOrderTheyBecameReady() {
        var s = TCPOffloadSchedule(capacity: 4)
        for slot: UInt32 in [2, 0, 2, 3, 0] { s.markReady(slot) }
        #expect(s.readyCount == 3)
        #expect(Self.drain(&s) == [2, 0, 3])
        // The ring wraps around; a slot taken may be marked again, at the back.
        for slot: UInt32 in [1, 3, 0, 2] { s.markReady(slot) }
        #expect(s.takeReady() == 1)
        s.markReady(1)
        #expect(Self.drain(&s) == [3, 0, 2, 1])
        #expect(s.readyCount == 0)
    }

    @Test func dueTimersMarkTheirSlotsAndStaleOnesAreSkipped() {
        var s = TCPOffloadSchedule(capacity: 8)
        s.schedule(1, at: Instant(nanoseconds: 300))
        s.schedule(2, at: Instant(nanoseconds: 100))
        // Slot 1's timer moves earlier: the entry at 300 goes stale.
        s.schedule(1, at: Instant(nanoseconds: 200))
        // A later deadline than the live one changes nothing (the visit at 200 reschedules).
        s.schedule(2, at: Instant(nanoseconds: 500))
        s.schedule(3, at: Instant(nanoseconds: 400))
        s.forget(3)
        s.schedule(4, at: nil)
        #expect(s.nextDeadline() == Instant(nanoseconds: 100))
        s.markDue(now: Instant(nanoseconds: 99))
        #expect(s.readyCount == 0)
        s.markDue(now: Instant(nanoseconds: 250))
        #expect(Self.drain(&s) == [2, 1])
        // Slot 1's stale 300 and forgotten slot 3's 400 wake nobody.
        #expect(s.nextDeadline() == nil)
        s.markDue(now: Instant(nanoseconds: 1000))
        #expect(s.readyCount == 0)
    }

    @Test func timersStayBoundedWhenDeadlinesKeepMovingEarlier() {
        var s = TCPOffloadSchedule(capacity: 4)
        for step in 0..<10_000 {
            s.schedule(UInt32(step % 4), at: Instant(nanoseconds: Int64(1_000_000 - step)))
        }
        #expect(s.timerCount <= 2 * 4 + 64 + 1)
        // Every slot's live timer is its last; all four come due together.
        s.markDue(now: Instant(nanoseconds: 1_000_000))
        #expect(s.readyCount == 4)
        #expect(s.nextDeadline() == nil)
    }
}
