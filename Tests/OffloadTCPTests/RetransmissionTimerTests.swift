import Testing
import OffloadCore
import OffloadTCP

@Suite struct RetransmissionTimerTests {
    let t0 = Instant(nanoseconds: 5_000_000_000)

    /// RFC 6298 section 2 in floating point, independent of the integer code under test.
    struct Reference {
        var srtt: Double?, rttvar = 0.0
        let g: Double, minimum: Double, maximum: Double
        mutating func add(_ r: Double) {
            if let s = srtt {
                rttvar = 0.75 * rttvar + 0.25 * abs(s - r)
                srtt = 0.875 * s + 0.125 * r
            } else {
                srtt = r
                rttvar = r / 2
            }
        }
        var rto: Double { min(max(srtt! + max(g, 4 * rttvar), minimum), maximum) }
    }

    func ns(_ d: Duration?) -> Double { Double(d!.nanoseconds) }

    func timer(minimum: Duration = .milliseconds(200), granularity: Duration = .milliseconds(1)) -> RetransmissionTimer {
        try! RetransmissionTimer(configuration: .init(minimumRTO: minimum, clockGranularity: granularity))
    }

    func sample(_ rtt: Duration, at t: Instant) -> RetransmissionTimer.Sample {
        .timedSegment(sentAt: t, acknowledgedAt: t + rtt, retransmitted: false)
    }

    @Test func beforeAnySampleTheRTOIsOneSecond() {
        let t = timer()
        #expect(t.currentRTO == .seconds(1))
        #expect(t.estimator.smoothedRTT == nil && t.estimator.rttVariation == nil)
    }

    @Test func firstSampleSetsSRTTAndHalfTheVariation() {
        var t = timer()
        let accepted = t.record(sample(.milliseconds(100), at: t0))
        #expect(accepted)
        #expect(t.estimator.smoothedRTT == .milliseconds(100))
        #expect(t.estimator.rttVariation == .milliseconds(50))
        #expect(t.currentRTO == .milliseconds(300), "SRTT + K * RTTVAR = 100 + 4 * 50")
    }

    @Test(arguments: [UInt64(1), 2, 3, 4])
    func samplesFollowTheRFCFormulas(seed: UInt64) {
        var random = SeededRandom(seed: seed)
        var t = timer(minimum: .milliseconds(1))
        var reference = Reference(g: 1e6, minimum: 1e6, maximum: 60e9)
        var now = t0
        for _ in 0..<500 {
            // RTTs from 0.1 ms to 400 ms, with occasional spikes.
            var rtt = Int64(100_000 + random.next() % 400_000_000)
            if random.chance(0.05) { rtt *= 8 }
            let accepted = t.record(sample(.nanoseconds(rtt), at: now))
            #expect(accepted)
            reference.add(Double(rtt))
            now = now + .nanoseconds(rtt)
            // Integer nanoseconds truncate a little on each step; the error stays tiny.
            #expect(abs(ns(t.estimator.smoothedRTT) - reference.srtt!) < 100)
            #expect(abs(ns(t.estimator.rttVariation) - reference.rttvar) < 100)
            #expect(abs(ns(t.currentRTO) - reference.rto) < 500)
        }
        #expect(t.estimator.sampleCount == 500)
    }

    @Test func theMinimumIs200MillisecondsByDefault() {
        var t = timer()
        for i in 0..<20 { t.record(sample(.milliseconds(2), at: t0 + .seconds(i))) }
        #expect(t.currentRTO == .milliseconds(200))
        var strict = try! RetransmissionTimer(configuration: .init(minimumRTO: .seconds(1)))
        strict.record(sample(.milliseconds(2), at: t0))
        #expect(strict.currentRTO == .seconds(1), "RFC 6298's own floor, when configured")
    }

    @Test func granularityIsTheLeastSpreadOnceTheVariationVanishes() {
        var t = timer(minimum: .milliseconds(1), granularity: .milliseconds(5))
        for i in 0..<200 { t.record(sample(.milliseconds(300), at: t0 + .seconds(i))) }
        #expect(t.estimator.smoothedRTT == .milliseconds(300))
        #expect(t.estimator.rttVariation! * 4 < .milliseconds(5))
        #expect(t.currentRTO == .milliseconds(305))
    }

    @Test func theMaximumCapsTheEstimate() {
        var t = timer()
        t.record(sample(.seconds(100), at: t0))
        #expect(t.currentRTO == .seconds(60))
    }

    @Test func expiryBacksOffExponentiallyUpToTheMaximum() {
        var t = timer()
        t.segmentSent(at: t0)
        #expect(t.deadline == t0 + .seconds(1))
        let fired = t.expire(at: t0 + .milliseconds(999))
        #expect(!fired, "not yet")
        var now = t0 + .seconds(1)
        var expected: [Duration] = []
        for _ in 0..<10 {
            let fired = t.expire(at: now)
            #expect(fired)
            expected.append(t.currentRTO)
            #expect(t.deadline == now + t.currentRTO)
            now = t.deadline!
        }
        #expect(expected == [2, 4, 8, 16, 32, 60, 60, 60, 60, 60].map { Duration.seconds($0) })
        #expect(t.backoffCount == 10)
    }

    @Test func karnsRuleRejectsRetransmittedSegmentsButNotTimestamps() {
        var t = timer()
        t.record(sample(.milliseconds(100), at: t0))
        t.segmentSent(at: t0)
        let firstFired = t.expire(at: t0 + .seconds(1))
        #expect(firstFired)
        let secondFired = t.expire(at: t.deadline!)
        #expect(secondFired)
        #expect(t.currentRTO == .milliseconds(1200), "300 ms doubled twice")
        let before = t.estimator
        let retransmittedAccepted = t.record(.timedSegment(sentAt: t0, acknowledgedAt: t0 + .milliseconds(10), retransmitted: true))
        #expect(!retransmittedAccepted)
        #expect(t.estimator == before && t.backoffCount == 2, "no sample, backoff kept")
        let timestampAccepted = t.record(.timestampEcho(sentAt: t0, acknowledgedAt: t0 + .milliseconds(100)))
        #expect(timestampAccepted)
        #expect(t.backoffCount == 0, "a valid sample ends the backoff")
        #expect(t.estimator.sampleCount == 2)
        #expect(t.currentRTO == t.estimator.baseRTO)
    }

    @Test func aNegativeRoundTripIsNoSample() {
        var t = timer()
        let accepted = t.record(.timestampEcho(sentAt: t0, acknowledgedAt: t0 - .milliseconds(1)))
        #expect(!accepted)
        #expect(t.estimator.sampleCount == 0)
    }

    @Test func timerStartsOnSendAndRestartsOnNewAcknowledgments() {
        var t = timer()
        #expect(!t.isRunning)
        t.segmentSent(at: t0)
        t.segmentSent(at: t0 + .milliseconds(500))
        #expect(t.deadline == t0 + .seconds(1), "a running timer is not restarted by more sends (5.1)")
        t.newDataAcknowledged(at: t0 + .milliseconds(600), allAcknowledged: false)
        #expect(t.deadline == t0 + .milliseconds(1600), "restarted by an ACK of new data (5.3)")
        t.newDataAcknowledged(at: t0 + .milliseconds(700), allAcknowledged: true)
        #expect(!t.isRunning, "stopped when all is acknowledged (5.2)")
        let fired = t.expire(at: t0 + .seconds(100))
        #expect(!fired, "a stopped timer never fires")
    }

    @Test func aRetransmittedSYNLeavesThreeSecondsForTheDataPhase() {
        var t = timer()
        t.segmentSent(at: t0)
        let synTimedOut = t.expire(at: t0 + .seconds(1))
        #expect(synTimedOut)
        t.handshakeCompletedAfterSYNRetransmission()
        #expect(t.backoffCount == 0 && t.currentRTO == .seconds(3))
        var measured = timer()
        measured.record(.timestampEcho(sentAt: t0, acknowledgedAt: t0 + .milliseconds(100)))
        measured.handshakeCompletedAfterSYNRetransmission()
        #expect(measured.currentRTO == .milliseconds(300), "a sample (from timestamps) is kept")
    }

    @Test func badConfigurationsAreTypedErrors() {
        #expect(throws: RetransmissionTimer.ConfigurationError.nonPositiveMinimum(.zero)) {
            try RetransmissionTimer(configuration: .init(minimumRTO: .zero))
        }
        #expect(throws: RetransmissionTimer.ConfigurationError.minimumAboveMaximum(.seconds(2), .seconds(1))) {
            try RetransmissionTimer(configuration: .init(minimumRTO: .seconds(2), maximumRTO: .seconds(1)))
        }
        #expect(throws: RetransmissionTimer.ConfigurationError.negativeGranularity(.milliseconds(-1))) {
            try RetransmissionTimer(configuration: .init(clockGranularity: .milliseconds(-1)))
        }
    }
}
