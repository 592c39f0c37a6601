import Testing
import OffloadCore
import OffloadTCP

@Suite struct CongestionControlTests {
    let mss = 1000
    let t0 = Instant(nanoseconds: 3_000_000_000)
    let rtt = Duration.milliseconds(100)

    func controller(_ algorithm: CongestionAlgorithm, segments: Int? = nil) -> CongestionControl {
        CongestionControl(algorithm: algorithm, maximumSegmentSize: mss, initialWindow: segments.map { $0 * mss })
    }

    /// One round trip of a window-limited sender: the whole window acknowledged `perACK`
    /// bytes at a time, the ACKs spread evenly over `rtt`. Returns when the next one starts.
    @discardableResult
    func roundTrip(_ cc: inout CongestionControl, from start: Instant, rtt: Duration? = nil, perACK: Int? = nil,
                   smoothedRTT: Duration? = nil) -> Instant {
        let rtt = rtt ?? self.rtt, perACK = perACK ?? mss
        let acks = max(1, cc.congestionWindow / perACK)
        for i in 0..<acks {
            cc.onAcknowledged(bytes: perACK, flightSize: cc.congestionWindow, now: start + rtt * i / acks,
                              smoothedRTT: smoothedRTT ?? rtt)
        }
        return start + rtt
    }

    /// Round trips from `start` until `end`; returns when the last ended.
    func roundTrips(_ cc: inout CongestionControl, from start: Instant, until end: Instant,
                    rtt: Duration? = nil) -> Instant {
        var now = start
        while now < end { now = roundTrip(&cc, from: now, rtt: rtt) }
        return now
    }

    /// W_cubic(t) in segments, straight from RFC 9438 section 4.2 (K from the window the
    /// epoch starts with), the cube root by bisection rather than the code's Newton iteration.
    func cubic(_ t: Double, maximum: Double, start: Double) -> Double {
        let k = cubeRoot((maximum - start) / 0.4)
        return 0.4 * (t - k) * (t - k) * (t - k) + maximum
    }

    func cubeRoot(_ x: Double) -> Double {
        var lo = 0.0, hi = max(1, x)
        for _ in 0..<200 {
            let mid = (lo + hi) / 2
            if mid * mid * mid < x { lo = mid } else { hi = mid }
        }
        return lo
    }

    func segments(_ cc: CongestionControl) -> Double { Double(cc.congestionWindow) / Double(mss) }

    // MARK: - Initial window and slow start

    @Test func theInitialWindowFollowsRFC6928() {
        #expect(CongestionControl(algorithm: .newReno, maximumSegmentSize: 1460).congestionWindow == 14_600)
        #expect(CongestionControl(algorithm: .newReno, maximumSegmentSize: 536).congestionWindow == 5_360)
        #expect(CongestionControl(algorithm: .cubic, maximumSegmentSize: 8960).congestionWindow == 17_920,
                "at least two segments")
        #expect(CongestionControl(algorithm: .cubic, maximumSegmentSize: 1000).congestionWindow == 10_000)
        let cc = controller(.newReno, segments: 4)
        #expect(cc.congestionWindow == 4_000 && cc.slowStartThreshold == .max && cc.isInSlowStart)
        #expect(cc.algorithm == .newReno && cc.maximumSegmentSize == mss)
        #expect(CongestionAlgorithm(rawValue: "newreno") == .newReno && CongestionAlgorithm(rawValue: "cubic") == .cubic)
    }

    @Test(arguments: CongestionAlgorithm.allCases, [1, 2])
    func slowStartDoublesTheWindowEachRoundTrip(algorithm: CongestionAlgorithm, segmentsPerACK: Int) {
        var cc = controller(algorithm)
        var now = t0
        for _ in 0..<6 {
            let before = cc.congestionWindow
            now = roundTrip(&cc, from: now, perACK: segmentsPerACK * mss)
            #expect(cc.congestionWindow == 2 * before, "with delayed ACKs too: L = 2 * SMSS")
        }
        #expect(cc.congestionWindow == 640_000 && cc.isInSlowStart)
    }

    @Test func oneACKGrowsSlowStartByAtMostTwoSegments() {
        var cc = controller(.newReno)
        cc.onAcknowledged(bytes: 5 * mss, flightSize: 10 * mss, now: t0, smoothedRTT: nil)
        #expect(cc.congestionWindow == 12 * mss)
        cc.onAcknowledged(bytes: 100, flightSize: 12 * mss, now: t0, smoothedRTT: nil)
        #expect(cc.congestionWindow == 12 * mss + 100)
        cc.onAcknowledged(bytes: 0, flightSize: 12 * mss, now: t0, smoothedRTT: nil)
        #expect(cc.congestionWindow == 12 * mss + 100)
    }

    @Test func slowStartStopsAtTheThreshold() {
        var cc = controller(.newReno, segments: 20)
        cc.onRetransmissionTimeout(flightSize: 20 * mss, now: t0, firstInSeries: true)
        #expect(cc.congestionWindow == mss && cc.slowStartThreshold == 10 * mss)
        var now = t0
        for expected in [2, 4, 8] {
            now = roundTrip(&cc, from: now)
            #expect(cc.congestionWindow == expected * mss && cc.isInSlowStart)
        }
        now = roundTrip(&cc, from: now)
        #expect(cc.congestionWindow == 10 * mss && !cc.isInSlowStart, "not past ssthresh")
        roundTrip(&cc, from: now)
        #expect(cc.congestionWindow == 11 * mss, "then one segment per round trip")
    }

    // MARK: - Congestion avoidance

    @Test func newRenoAddsOneSegmentPerWindowAcknowledged() {
        var cc = controller(.newReno, segments: 40)
        cc.onLossDetected(flightSize: 40 * mss, now: t0)
        cc.onRecoveryExit(flightSize: 30 * mss)
        #expect(cc.congestionWindow == 20 * mss && !cc.isInSlowStart)
        for i in 0..<19 {
            cc.onAcknowledged(bytes: mss, flightSize: 20 * mss, now: t0 + .milliseconds(i), smoothedRTT: rtt)
        }
        #expect(cc.congestionWindow == 20 * mss, "byte counting: nothing until a whole window is acknowledged")
        cc.onAcknowledged(bytes: mss, flightSize: 20 * mss, now: t0, smoothedRTT: rtt)
        #expect(cc.congestionWindow == 21 * mss)
        var now = t0
        for round in 0..<10 {
            now = roundTrip(&cc, from: now)
            #expect(cc.congestionWindow == (22 + round) * mss)
        }
    }

    @Test func cubicGrowsAsNewRenoBeforeTheFirstRTTSample() {
        var cubic = controller(.cubic, segments: 40), reno = controller(.newReno, segments: 40)
        cubic.onLossDetected(flightSize: 40 * mss, now: t0)
        reno.onLossDetected(flightSize: 56 * mss, now: t0) // the same ssthresh, 28 segments
        #expect(cubic.congestionWindow == reno.congestionWindow)
        for i in 0..<500 {
            let now = t0 + .milliseconds(i)
            cubic.onAcknowledged(bytes: mss, flightSize: cubic.congestionWindow, now: now, smoothedRTT: nil)
            reno.onAcknowledged(bytes: mss, flightSize: reno.congestionWindow, now: now, smoothedRTT: nil)
        }
        #expect(cubic.congestionWindow == reno.congestionWindow && cubic.congestionWindow > 28 * mss)
    }

    @Test func cubicFollowsItsCurveAfterALoss() {
        var cc = controller(.cubic, segments: 200)
        cc.onLossDetected(flightSize: 200 * mss, now: t0)
        #expect(cc.congestionWindow == 140 * mss && cc.slowStartThreshold == 140 * mss)
        let k = cubeRoot(60 / 0.4) // about 5.3 s
        var now = t0
        var worst = 0.0
        for round in 1...75 {
            now = roundTrip(&cc, from: now)
            let t = Double(round) * 0.1
            let error = abs(segments(cc) - cubic(t, maximum: 200, start: 140))
            worst = max(worst, error)
            #expect(error < 1.5, "t = \(t) s: \(segments(cc)) segments")
            if abs(t - k) < 0.05 { #expect(abs(segments(cc) - 200) < 1, "W_max again at t = K") }
        }
        #expect(segments(cc) > 201, "convex past W_max: \(segments(cc)), worst error \(worst)")
    }

    @Test func cubicGrowsAtLeastAsRenoWhenTheRTTIsShort() {
        var cc = controller(.cubic, segments: 20)
        cc.onLossDetected(flightSize: 20 * mss, now: t0)
        #expect(cc.congestionWindow == 14 * mss)
        let rtt = Duration.milliseconds(1)
        var now = t0
        for _ in 0..<100 { now = roundTrip(&cc, from: now, rtt: rtt) }
        // W_est: alpha = 0.529 a round trip from 14 to cwnd_prior (20), then 1 a round trip.
        let alpha = 3 * (1 - 0.7) / (1 + 0.7)
        let reno = 20 + (100 - 6 / alpha)
        #expect(abs(segments(cc) - reno) < 3, "\(segments(cc)) segments, Reno-friendly estimate \(reno)")
        #expect(cubic(0.1, maximum: 20, start: 14) < 15, "the curve alone would have grown under a segment")
    }

    @Test func fastConvergenceLowersWMax() {
        var cc = controller(.cubic, segments: 100)
        cc.onLossDetected(flightSize: 100 * mss, now: t0)
        // 200 ms round trips keep the Reno-friendly estimate below the curve.
        let rtt = Duration.milliseconds(200)
        let now = roundTrips(&cc, from: t0, until: t0 + .seconds(2), rtt: rtt)
        let peak = segments(cc)
        #expect(peak > 90 && peak < 99, "below the last W_max (100): \(peak)")
        cc.onLossDetected(flightSize: cc.congestionWindow, now: now)
        #expect(abs(segments(cc) - 0.7 * peak) < 0.01)
        // W_max = peak * (1 + 0.7) / 2: the curve flattens there, not at the peak.
        let wMax = peak * 0.85
        let k = cubeRoot((wMax - segments(cc)) / 0.4)
        _ = roundTrips(&cc, from: now, until: now + .nanoseconds(Int64(k * 1e9)), rtt: rtt)
        #expect(abs(segments(cc) - wMax) < 1.5, "\(segments(cc)) segments at t = K, W_max \(wMax)")
        #expect(segments(cc) < peak - 10)
    }

    @Test func aLossAboveTheLastMaximumKeepsTheWindowAsWMax() {
        var cc = controller(.cubic, segments: 100)
        cc.onLossDetected(flightSize: 100 * mss, now: t0)
        let now = roundTrips(&cc, from: t0, until: t0 + .seconds(7)) // past K (4.2 s), convex
        let peak = segments(cc)
        #expect(peak > 101)
        cc.onLossDetected(flightSize: cc.congestionWindow, now: now)
        let k = cubeRoot(0.3 * peak / 0.4)
        _ = roundTrips(&cc, from: now, until: now + .nanoseconds(Int64(k * 1e9)))
        #expect(abs(segments(cc) - peak) < 1.5, "back at the peak at t = K: \(segments(cc)) of \(peak)")
    }

    // MARK: - Application limited

    @Test(arguments: CongestionAlgorithm.allCases)
    func noGrowthWhileApplicationLimited(algorithm: CongestionAlgorithm) {
        var cc = controller(algorithm, segments: 20)
        for i in 0..<100 {
            cc.onAcknowledged(bytes: mss, flightSize: 10 * mss, now: t0 + .milliseconds(i), smoothedRTT: rtt)
        }
        #expect(cc.congestionWindow == 20 * mss, "slow start")
        cc.onAcknowledged(bytes: mss, flightSize: 19 * mss + 1, now: t0, smoothedRTT: rtt)
        #expect(cc.congestionWindow == 21 * mss, "less than a segment of window unused counts as full")

        cc.onLossDetected(flightSize: 42 * mss, now: t0)
        let window = cc.congestionWindow
        #expect(!cc.isInSlowStart)
        for i in 0..<1000 {
            cc.onAcknowledged(bytes: mss, flightSize: window - mss, now: t0 + .milliseconds(i), smoothedRTT: rtt)
        }
        #expect(cc.congestionWindow == window, "congestion avoidance")
    }

    @Test func cubicTimeSkipsApplicationLimitedSpans() {
        var paused = controller(.cubic, segments: 100), steady = controller(.cubic, segments: 100)
        paused.onLossDetected(flightSize: 100 * mss, now: t0)
        steady.onLossDetected(flightSize: 100 * mss, now: t0)
        var now = roundTrips(&paused, from: t0, until: t0 + .seconds(1))
        let before = paused.congestionWindow
        // Five seconds of ACKs for half a window.
        for _ in 0..<50 {
            paused.onAcknowledged(bytes: mss, flightSize: paused.congestionWindow / 2, now: now, smoothedRTT: rtt)
            now = now + rtt
        }
        #expect(paused.congestionWindow == before)
        now = roundTrips(&paused, from: now, until: now + .seconds(1))
        _ = roundTrips(&steady, from: t0, until: t0 + .seconds(2))
        #expect(abs(segments(paused) - segments(steady)) < 1.5,
                "\(segments(paused)) after a pause, \(segments(steady)) without")
    }

    // MARK: - Reductions

    @Test func newRenoHalvesTheFlightOnLoss() {
        var cc = controller(.newReno, segments: 40)
        cc.onLossDetected(flightSize: 40 * mss, now: t0)
        #expect(cc.slowStartThreshold == 20 * mss && cc.congestionWindow == 20 * mss)
        cc.onLossDetected(flightSize: 15 * mss, now: t0)
        #expect(cc.slowStartThreshold == 7_500 && cc.congestionWindow == 7_500, "FlightSize, not cwnd")
        cc.onLossDetected(flightSize: mss, now: t0)
        #expect(cc.slowStartThreshold == 2 * mss && cc.congestionWindow == 2 * mss, "at least two segments")
    }

    @Test func cubicKeepsSevenTenthsOfTheWindowOnLoss() {
        var cc = controller(.cubic, segments: 40)
        cc.onLossDetected(flightSize: 10 * mss, now: t0)
        #expect(cc.slowStartThreshold == 28 * mss && cc.congestionWindow == 28 * mss, "from cwnd")
        cc.onLossDetected(flightSize: 28 * mss, now: t0)
        #expect(cc.congestionWindow == 19_600)
        var small = controller(.cubic, segments: 2)
        small.onLossDetected(flightSize: 2 * mss, now: t0)
        #expect(small.slowStartThreshold == 2 * mss && small.congestionWindow == 2 * mss)
    }

    @Test(arguments: CongestionAlgorithm.allCases)
    func aTimeoutLeavesOneSegment(algorithm: CongestionAlgorithm) {
        var cc = controller(algorithm, segments: 40)
        cc.onRetransmissionTimeout(flightSize: 30 * mss, now: t0, firstInSeries: true)
        #expect(cc.congestionWindow == mss && cc.isInSlowStart)
        let threshold = algorithm == .newReno ? 15 * mss : 28 * mss
        #expect(cc.slowStartThreshold == threshold)
        cc.onRetransmissionTimeout(flightSize: 30 * mss, now: t0 + .seconds(1), firstInSeries: false)
        #expect(cc.congestionWindow == mss && cc.slowStartThreshold == threshold, "ssthresh kept on a backoff")
        cc.onRetransmissionTimeout(flightSize: mss, now: t0 + .seconds(3), firstInSeries: true)
        #expect(cc.congestionWindow == mss && cc.slowStartThreshold == 2 * mss)
    }

    @Test func afterATimeoutCubicStartsItsCurveFromTheWindowItHas() {
        var cc = controller(.cubic, segments: 100)
        cc.onLossDetected(flightSize: 100 * mss, now: t0) // W_max 100
        cc.onRetransmissionTimeout(flightSize: 70 * mss, now: t0, firstInSeries: true)
        #expect(cc.congestionWindow == mss && cc.slowStartThreshold == 49 * mss)
        // A long RTT keeps the Reno-friendly estimate (about 1 segment a second) out of the way.
        let rtt = Duration.milliseconds(500)
        var now = t0
        while cc.isInSlowStart { now = roundTrip(&cc, from: now, rtt: rtt) }
        // Slow start crossed ssthresh (32 -> 49) on the 9th ACK of its last round: the epoch began there.
        let epoch = now - rtt + rtt * 8 / 32
        // K = 0 and W_max = 49: convex from the start, not a climb back towards 70 or 100.
        for _ in 0..<8 {
            now = roundTrip(&cc, from: now, rtt: rtt)
            let t = Double((now - epoch).nanoseconds) / 1e9
            // Steep here (up to 12 segments a round trip): within a round trip of the curve.
            let lower = cubic(t - 0.5, maximum: 49, start: 49), upper = cubic(t + 0.5, maximum: 49, start: 49)
            #expect(segments(cc) >= lower && segments(cc) <= upper, "t = \(t) s: \(segments(cc)) segments")
        }
    }

    @Test(arguments: CongestionAlgorithm.allCases)
    func recoveryExitSendsNoBurst(algorithm: CongestionAlgorithm) {
        var cc = controller(algorithm, segments: 40)
        cc.onLossDetected(flightSize: 40 * mss, now: t0)
        let threshold = cc.slowStartThreshold
        cc.onRecoveryExit(flightSize: 5 * mss)
        #expect(cc.congestionWindow == 6 * mss, "flight plus one segment")
        cc.onRecoveryExit(flightSize: 50 * mss)
        #expect(cc.congestionWindow == threshold)
        cc.onRecoveryExit(flightSize: 0)
        #expect(cc.congestionWindow == 2 * mss)
        #expect(cc.slowStartThreshold == threshold)
    }

    @Test(arguments: CongestionAlgorithm.allCases)
    func anIdleRestartReturnsToTheInitialWindow(algorithm: CongestionAlgorithm) {
        var cc = controller(algorithm)
        var now = t0
        for _ in 0..<3 { now = roundTrip(&cc, from: now) }
        #expect(cc.congestionWindow == 80 * mss)
        cc.onIdleRestart()
        #expect(cc.congestionWindow == 10 * mss)
        cc.onRetransmissionTimeout(flightSize: 10 * mss, now: now, firstInSeries: true)
        cc.onIdleRestart()
        #expect(cc.congestionWindow == mss, "never raised")
    }

    @Test(arguments: CongestionAlgorithm.allCases, UInt64(1)...UInt64(8))
    func windowsNeverFallBelowTheirFloors(algorithm: CongestionAlgorithm, seed: UInt64) {
        var random = SeededRandom(seed: seed)
        var cc = controller(algorithm, segments: 1 + Int(random.next() % 20))
        var now = t0
        for _ in 0..<5_000 {
            now = now + .microseconds(Int64(random.next() % 50_000))
            let flight = Int(random.next() % UInt64(2 * cc.congestionWindow + 1))
            switch random.next() % 20 {
            case 0: cc.onLossDetected(flightSize: flight, now: now)
            case 1: cc.onRetransmissionTimeout(flightSize: flight, now: now, firstInSeries: random.chance(0.5))
            case 2: cc.onRecoveryExit(flightSize: flight)
            case 3: cc.onIdleRestart()
            default:
                let srtt: Duration? = random.chance(0.1) ? nil : .microseconds(Int64(100 + random.next() % 300_000))
                cc.onAcknowledged(bytes: 1 + Int(random.next() % UInt64(3 * mss)),
                                  flightSize: random.chance(0.8) ? cc.congestionWindow : flight, now: now,
                                  smoothedRTT: srtt)
            }
            #expect(cc.congestionWindow >= mss)
            #expect(cc.slowStartThreshold >= 2 * mss)
            #expect(cc.congestionWindow < 100_000_000)
        }
    }
}
