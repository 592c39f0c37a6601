import Testing
import OffloadCore

@Suite struct ClockTests {
    @Test func virtualClockMovesOnlyWhenTold() {
        let clock = VirtualClock()
        #expect(clock.now == .zero)
        clock.advance(by: .milliseconds(5))
        #expect(clock.now.nanoseconds == 5_000_000)
        clock.advance(to: Instant(nanoseconds: 1))
        #expect(clock.now.nanoseconds == 5_000_000, "never backward")
        #expect(clock.now + .microseconds(3) - clock.now == .microseconds(3))
    }

    @Test func monotonicClockDoesNotGoBack() {
        let clock = MonotonicClock()
        var last = clock.now
        for _ in 0..<1000 {
            let t = clock.now
            #expect(t >= last)
            last = t
        }
    }

    @Test func durationNanoseconds() {
        #expect(Duration.seconds(2).nanoseconds == 2_000_000_000)
        #expect(Duration.microseconds(-7).nanoseconds == -7000)
    }

    @Test func seededRandomIsReproducible() {
        var a = SeededRandom(seed: 42), b = SeededRandom(seed: 42), c = SeededRandom(seed: 43)
        let xa = (0..<10).map { _ in a.next() }
        #expect(xa == (0..<10).map { _ in b.next() })
        #expect(xa != (0..<10).map { _ in c.next() })
        var r = SeededRandom(seed: 1)
        let hits = (0..<100_000).filter { _ in r.chance(0.1) }.count
        #expect(abs(hits - 10_000) < 600)
    }
}
