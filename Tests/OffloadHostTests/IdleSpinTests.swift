#if os(Linux)
import Testing
import OffloadCore
import OffloadHost

@Suite struct IdleSpinTests {
    let t0 = Instant(nanoseconds: 5_000_000_000)

    /// What `shouldSleep` answers for each round: whether it did work, and when, after `t0`.
    func answers(spin: Duration, _ rounds: [(worked: Bool, at: Duration)]) -> [Bool] {
        var idle = IdleSpin(spin: spin)
        return rounds.map { idle.shouldSleep(worked: $0.worked, now: t0 + $0.at) }
    }

    @Test func sleepsOnlyAfterSpinningForItsWholeSpan() {
        let slept = answers(spin: .microseconds(100), [
            (false, .zero),                               // the first idle round starts the span
            (false, .microseconds(99)),
            (false, .microseconds(100)),                  // a whole span idle: sleep
            (false, .milliseconds(10)),                   // after a sleep the span starts over
            (false, .milliseconds(10) + .microseconds(50)),
            (false, .milliseconds(10) + .microseconds(150)),
        ])
        #expect(slept == [false, false, true, false, false, true])
    }

    @Test func workStartsTheSpanOver() {
        let slept = answers(spin: .microseconds(100), [
            (false, .zero),
            (true, .microseconds(90)),
            (false, .microseconds(120)),                  // idle again from here
            (false, .microseconds(200)),
            (false, .microseconds(220)),
        ])
        #expect(slept == [false, false, false, false, true])
    }

    @Test func withoutSpinTheSecondIdleRoundSleeps() {
        #expect(answers(spin: .zero, [(false, .zero), (false, .zero)]) == [false, true])
    }
}
#endif
