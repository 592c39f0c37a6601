import OffloadCore

/// Which rule grows and cuts the congestion window. A plain enum the controller switches
/// on, so the controller stays one value type with no existential or allocation.
public enum CongestionAlgorithm: String, Hashable, Sendable, CaseIterable {
    /// RFC 5681 with RFC 6582's recovery exit.
    case newReno = "newreno"
    /// RFC 9438.
    case cubic
}

/// The sender's congestion window and slow-start threshold, in bytes. Sans-I/O: the TCP
/// state machine reports ACKs, losses, timeouts and idle restarts; the window it may have
/// in flight is `congestionWindow`. During loss recovery the state machine sends by its own
/// rule (RFC 6675's pipe) and does not report ACKs here until `onRecoveryExit`.
///
/// Choices:
/// - Slow start grows by min(bytes acknowledged, 2 * MSS) per ACK: appropriate byte counting
///   with L = 2 * SMSS (RFC 3465 section 2.2), so that a receiver delaying its ACKs (one per
///   two segments) still doubles the window per round trip. An ACK that crosses ssthresh
///   stops the window there and gives the rest of its bytes to congestion avoidance.
/// - The window grows only while the sender is window limited: when less than one MSS of it
///   was unused before the ACK (`flightSize + MSS > congestionWindow`; a sender does not
///   send a segment the window cannot hold whole). The rule holds in slow start and
///   congestion avoidance alike (RFC 7661's concern, RFC 9438 section 5.8), and it is what
///   lets CUBIC take ssthresh from cwnd (below). CUBIC's time t also leaves out the spans
///   that ended in an application-limited ACK, so the curve resumes where it paused.
/// - CUBIC's ssthresh on loss is cwnd * beta_cubic. RFC 9438 section 4.6 writes
///   flight_size * beta_cubic and allows cwnd when cwnd cannot grow while under-used, as
///   here; Linux uses cwnd too. NewReno takes FlightSize / 2 (RFC 5681 equation 4).
public struct CongestionControl: Hashable, Sendable {
    /// ABC's L, in segments (RFC 3465).
    static let slowStartLimit = 2
    /// RFC 9438's values: C in segments per second cubed (section 5.1), beta_cubic (section 4.6).
    static let cubicC = 0.4
    static let cubicBeta = 0.7
    /// The Reno-friendly estimate's additive increase until it reaches cwnd_prior (RFC 9438
    /// section 4.3): AIMD(alpha, 0.7) is as fair to Reno as AIMD(1, 0.5).
    static let cubicAlpha = 3 * (1 - cubicBeta) / (1 + cubicBeta)

    public let algorithm: CongestionAlgorithm
    public let maximumSegmentSize: Int
    /// IW, and the restart window after an idle period.
    let initialWindow: Int
    public private(set) var congestionWindow: Int
    public private(set) var slowStartThreshold: Int
    /// Bytes acknowledged in congestion avoidance not yet turned into window (RFC 5681
    /// section 3.1's byte counting): NewReno's, and CUBIC's before its first RTT sample.
    var acknowledgedInAvoidance = 0
    var cubic = Cubic()

    /// CUBIC's state (RFC 9438 section 4.1.2), windows in bytes as Double: the curve's
    /// growth per ACK is often a fraction of a byte.
    struct Cubic: Hashable, Sendable {
        /// W_max; 0 when there is none (no loss yet, or a timeout since): the next epoch
        /// then takes the window it starts from.
        var maximumWindow = 0.0
        /// cwnd_prior: the window just before the last reduction.
        var priorWindow = 0.0
        /// t_epoch: when the current congestion avoidance stage began; nil until its first
        /// ACK, so that time in slow start or recovery is not on the curve.
        var epochStart: Instant?
        /// K, in seconds.
        var k = 0.0
        /// W_est, the window Reno would have (section 4.3).
        var renoWindow = 0.0
        /// The previous congestion avoidance ACK, from where an application-limited span runs.
        var lastAcknowledgment = Instant.zero
        /// The part of the window below one byte, carried to the next ACK.
        var fraction = 0.0

        /// W_cubic(t) = C * (t - K)^3 + W_max (section 4.2), in bytes.
        func curve(at t: Double, segment: Double) -> Double {
            let d = t - k
            return CongestionControl.cubicC * segment * d * d * d + maximumWindow
        }
    }

    /// The initial window defaults to RFC 6928's min(10 * MSS, max(2 * MSS, 14600)); ssthresh
    /// starts arbitrarily high (RFC 5681 section 3.1).
    public init(algorithm: CongestionAlgorithm, maximumSegmentSize: Int, initialWindow: Int? = nil) {
        precondition(maximumSegmentSize > 0, "CongestionControl: the MSS must be positive")
        let window = initialWindow ?? min(10 * maximumSegmentSize, max(2 * maximumSegmentSize, 14_600))
        precondition(window >= maximumSegmentSize, "CongestionControl: the initial window is below one MSS")
        self.algorithm = algorithm
        self.maximumSegmentSize = maximumSegmentSize
        self.initialWindow = window
        congestionWindow = window
        slowStartThreshold = .max
    }

    public var isInSlowStart: Bool { congestionWindow < slowStartThreshold }

    /// New data cumulatively acknowledged outside loss recovery. `flightSize` is the bytes
    /// in flight before this ACK; `smoothedRTT` is nil before the first sample (CUBIC then
    /// grows as NewReno).
    public mutating func onAcknowledged(bytes: Int, flightSize: Int, now: Instant, smoothedRTT: Duration?) {
        guard bytes > 0 else { return }
        guard flightSize + maximumSegmentSize > congestionWindow else {
            // Application (or receive window) limited: no growth, and no time on the curve.
            if let start = cubic.epochStart { cubic.epochStart = start + (now - cubic.lastAcknowledgment) }
            cubic.lastAcknowledgment = now
            return
        }
        var bytes = bytes
        if isInSlowStart {
            let room = slowStartThreshold - congestionWindow
            let increase = min(bytes, Self.slowStartLimit * maximumSegmentSize)
            if increase < room {
                congestionWindow += increase
                return
            }
            congestionWindow = slowStartThreshold
            bytes -= room
            guard bytes > 0 else { return }
        }
        if algorithm == .cubic, let rtt = smoothedRTT {
            growCubic(bytes: bytes, now: now, rtt: rtt)
        } else {
            // About one MSS per window acknowledged (RFC 5681 section 3.1, RFC 3465).
            acknowledgedInAvoidance += bytes
            if acknowledgedInAvoidance >= congestionWindow {
                acknowledgedInAvoidance -= congestionWindow
                congestionWindow += maximumSegmentSize
            }
        }
    }

    /// Fast retransmit, or loss found from SACK: entering loss recovery. ssthresh becomes
    /// max(flightSize / 2, 2 * MSS) for NewReno, max(cwnd * 0.7, 2 * MSS) for CUBIC, and the
    /// window falls to it. CUBIC's epoch ends; the next begins with the first ACK after
    /// recovery (RFC 9438's t_epoch is the start of congestion avoidance), so `now` is unused.
    public mutating func onLossDetected(flightSize: Int, now: Instant) {
        reduceThreshold(flightSize: flightSize)
        congestionWindow = slowStartThreshold
    }

    /// End of recovery on a full ACK (RFC 6582 step 3): the window is ssthresh, or less
    /// when little is in flight, so that the exit sends no burst.
    public mutating func onRecoveryExit(flightSize: Int) {
        congestionWindow = min(slowStartThreshold, max(flightSize, maximumSegmentSize) + maximumSegmentSize)
        restartGrowth()
    }

    /// Retransmission timeout: ssthresh as for a loss, but only on the first timeout of a
    /// series (RFC 5681 section 3.1: a segment retransmitted again by timer leaves it alone),
    /// and the window falls to one segment (the loss window). After a timeout CUBIC's next
    /// epoch starts with K = 0 and W_max = the window it starts from (RFC 9438 section 4.8).
    public mutating func onRetransmissionTimeout(flightSize: Int, now: Instant, firstInSeries: Bool) {
        if firstInSeries {
            reduceThreshold(flightSize: flightSize)
            cubic.maximumWindow = 0
        }
        congestionWindow = maximumSegmentSize
        restartGrowth()
    }

    /// Sending again after more than an RTO idle (RFC 5681 section 4.1): the window is at
    /// most the restart window, the initial one. CUBIC starts a new epoch from there.
    public mutating func onIdleRestart() {
        congestionWindow = min(congestionWindow, initialWindow)
        restartGrowth()
    }

    // MARK: - Internals

    /// ssthresh, and CUBIC's W_max and cwnd_prior, for a congestion event.
    mutating func reduceThreshold(flightSize: Int) {
        switch algorithm {
        case .newReno:
            slowStartThreshold = max(flightSize / 2, 2 * maximumSegmentSize)
        case .cubic:
            let window = Double(congestionWindow)
            // Fast convergence (RFC 9438 section 4.7): a flow whose window peaked below the
            // last W_max is losing share to a newcomer, and aims lower to make room.
            cubic.maximumWindow = window < cubic.maximumWindow ? window * (1 + Self.cubicBeta) / 2 : window
            cubic.priorWindow = window
            slowStartThreshold = max(Int(window * Self.cubicBeta), 2 * maximumSegmentSize)
        }
        restartGrowth()
    }

    /// The window was set from outside the growth rules: byte counts and CUBIC's epoch start over.
    mutating func restartGrowth() {
        acknowledgedInAvoidance = 0
        cubic.epochStart = nil
        cubic.fraction = 0
    }

    /// RFC 9438 sections 4.2 to 4.5, for `bytes` newly acknowledged in congestion avoidance.
    mutating func growCubic(bytes: Int, now: Instant, rtt: Duration) {
        let segment = Double(maximumSegmentSize)
        let window = Double(congestionWindow) + cubic.fraction
        if cubic.epochStart == nil {
            cubic.epochStart = now
            cubic.renoWindow = window
            if cubic.maximumWindow > window {
                cubic.k = Self.cubeRoot((cubic.maximumWindow - window) / (Self.cubicC * segment))
            } else {
                cubic.k = 0
                cubic.maximumWindow = window
            }
        }
        cubic.lastAcknowledgment = now
        let t = Self.seconds(now - cubic.epochStart!)
        let acknowledged = Double(bytes)

        let alpha = cubic.renoWindow >= cubic.priorWindow ? 1 : Self.cubicAlpha
        cubic.renoWindow += alpha * segment * acknowledged / window
        let grown: Double
        if cubic.curve(at: t, segment: segment) < cubic.renoWindow {
            grown = cubic.renoWindow // the Reno-friendly region
        } else {
            // Concave (below W_max) or convex (above): (target - cwnd) / cwnd per segment
            // acknowledged, towards the curve one RTT ahead, at most 1.5 times the window.
            let ahead = cubic.curve(at: t + Self.seconds(rtt), segment: segment)
            let target = min(max(ahead, window), 1.5 * window)
            grown = window + (target - window) * acknowledged / window
        }
        let next = max(grown, window)
        congestionWindow = Int(next)
        cubic.fraction = next - Double(congestionWindow)
    }

    static func seconds(_ d: Duration) -> Double { Double(d.nanoseconds) * 1e-9 }

    /// The cube root of x >= 0 by Newton's method from above, where it falls monotonically.
    /// Plain IEEE arithmetic rather than libm's cbrt, whose last bit may differ between
    /// platforms: the simulator's runs stay identical everywhere. Once per epoch.
    static func cubeRoot(_ x: Double) -> Double {
        guard x > 0 else { return 0 }
        var r = max(x, 1)
        while true {
            let next = (2 * r + x / (r * r)) / 3
            if next >= r { return r }
            r = next
        }
    }
}
