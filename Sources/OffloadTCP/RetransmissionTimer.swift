import OffloadCore

/// The retransmission timer of one connection (RFC 6298 section 5) and the RTT estimate
/// behind it: when to retransmit, exponential backoff, and Karn's rule on which round
/// trips may be measured. Sans-I/O: the caller passes the time in and asks for `deadline`.
public struct RetransmissionTimer: Hashable, Sendable {
    public struct Configuration: Hashable, Sendable {
        // In nanoseconds: half of a `Duration`'s 16 bytes, and every control block holds one.
        private var initialRTONanoseconds: Int64 = 0
        private var minimumRTONanoseconds: Int64 = 0
        private var maximumRTONanoseconds: Int64 = 0
        private var clockGranularityNanoseconds: Int64 = 0
        private var afterSYNRetransmissionNanoseconds: Int64 = 0

        /// RTO before the first sample: 1 s (RFC 6298 (2.1)).
        public var initialRTO: Duration {
            get { .nanoseconds(initialRTONanoseconds) }
            set { initialRTONanoseconds = newValue.nanoseconds }
        }
        /// The floor: RFC 6298 says 1 s; Linux uses 200 ms (`TCP_RTO_MIN`), and so do we.
        public var minimumRTO: Duration {
            get { .nanoseconds(minimumRTONanoseconds) }
            set { minimumRTONanoseconds = newValue.nanoseconds }
        }
        /// The ceiling, also for backoff: at least 60 s (RFC 6298 (2.5)).
        public var maximumRTO: Duration {
            get { .nanoseconds(maximumRTONanoseconds) }
            set { maximumRTONanoseconds = newValue.nanoseconds }
        }
        /// G, the clock granularity: the least spread above SRTT.
        public var clockGranularity: Duration {
            get { .nanoseconds(clockGranularityNanoseconds) }
            set { clockGranularityNanoseconds = newValue.nanoseconds }
        }
        /// The RTO once a handshake whose SYN was retransmitted completes without a sample
        /// (RFC 6298 (5.7)): 3 s.
        public var afterSYNRetransmission: Duration {
            get { .nanoseconds(afterSYNRetransmissionNanoseconds) }
            set { afterSYNRetransmissionNanoseconds = newValue.nanoseconds }
        }

        public init(initialRTO: Duration = .seconds(1), minimumRTO: Duration = .milliseconds(200),
                    maximumRTO: Duration = .seconds(60), clockGranularity: Duration = .milliseconds(1),
                    afterSYNRetransmission: Duration = .seconds(3)) {
            self.initialRTO = initialRTO
            self.minimumRTO = minimumRTO
            self.maximumRTO = maximumRTO
            self.clockGranularity = clockGranularity
            self.afterSYNRetransmission = afterSYNRetransmission
        }

        /// Checks the limits are in order and positive.
        public func validated() throws(ConfigurationError) -> Configuration {
            guard minimumRTO > .zero else { throw .nonPositiveMinimum(minimumRTO) }
            guard minimumRTO <= maximumRTO else { throw .minimumAboveMaximum(minimumRTO, maximumRTO) }
            guard clockGranularity >= .zero else { throw .negativeGranularity(clockGranularity) }
            return self
        }

        func clamp(_ d: Duration) -> Duration { min(max(d, minimumRTO), maximumRTO) }
    }

    public enum ConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
        case nonPositiveMinimum(Duration)
        case minimumAboveMaximum(Duration, Duration)
        case negativeGranularity(Duration)

        public var description: String {
            switch self {
            case .nonPositiveMinimum(let d): "minimum RTO \(d) must be positive"
            case .minimumAboveMaximum(let lo, let hi): "minimum RTO \(lo) is above the maximum \(hi)"
            case .negativeGranularity(let g): "clock granularity \(g) is negative"
            }
        }
    }

    /// Where a round-trip measurement comes from, which decides whether Karn's rule lets it in.
    public enum Sample: Hashable, Sendable {
        /// A segment timed by the sender and acknowledged at `acknowledgedAt`. Not a sample
        /// if it was retransmitted (Karn): the ACK may be for either transmission.
        case timedSegment(sentAt: Instant, acknowledgedAt: Instant, retransmitted: Bool)
        /// The timestamp echoed in an ACK that acknowledges new data (RFC 7323 section 4),
        /// turned back into the time it was sent. The echo names the transmission, so
        /// retransmitted segments give samples too.
        case timestampEcho(sentAt: Instant, acknowledgedAt: Instant)
    }

    public private(set) var estimator: RTTEstimator
    /// Expirations since the last valid sample (the retransmission count): the RTO is
    /// doubled this many times, up to the maximum.
    public private(set) var backoffCount = 0
    /// When the timer fires; nil when it is not running.
    public private(set) var deadline: Instant?

    public init(configuration: Configuration = .init()) throws(ConfigurationError) {
        estimator = RTTEstimator(configuration: try configuration.validated())
    }

    public var configuration: Configuration { estimator.configuration }

    /// The RTO now: the estimate doubled per backoff, at most the maximum (RFC 6298 (5.5)).
    public var currentRTO: Duration {
        let base = estimator.baseRTO.nanoseconds, ceiling = configuration.maximumRTO.nanoseconds
        // Past 62 doublings any base above zero is beyond every ceiling.
        guard backoffCount < 62, base <= ceiling >> Int64(backoffCount) else { return configuration.maximumRTO }
        return .nanoseconds(base << Int64(backoffCount))
    }

    public var isRunning: Bool { deadline != nil }

    /// Takes a measurement unless Karn's rule forbids it; a valid one ends the backoff
    /// (RFC 6298 section 5, note after (5.7)). Returns whether it was used.
    @discardableResult
    public mutating func record(_ sample: Sample) -> Bool {
        let rtt: Duration
        switch sample {
        case .timedSegment(_, _, retransmitted: true):
            return false
        case .timedSegment(let sent, let acked, retransmitted: false), .timestampEcho(let sent, let acked):
            rtt = acked - sent
        }
        guard rtt >= .zero else { return false }
        estimator.add(sample: rtt)
        backoffCount = 0
        return true
    }

    /// A segment with data (new or retransmitted) went out: start the timer if it is not
    /// running (5.1).
    public mutating func segmentSent(at now: Instant) {
        if deadline == nil { deadline = now + currentRTO }
    }

    /// An ACK acknowledged new data: stop the timer when nothing is outstanding (5.2),
    /// otherwise restart it with the current RTO (5.3).
    public mutating func newDataAcknowledged(at now: Instant, allAcknowledged: Bool) {
        deadline = allAcknowledged ? nil : now + currentRTO
    }

    /// Whether the timer has fired by `now`. If so it backs off (5.5) and restarts (5.6);
    /// the caller retransmits the earliest unacknowledged segment (5.4).
    public mutating func expire(at now: Instant) -> Bool {
        guard let d = deadline, d <= now else { return false }
        backoffCount += 1
        deadline = now + currentRTO
        return true
    }

    public mutating func stop() { deadline = nil }

    /// The handshake completed after the SYN was retransmitted: with no sample yet the RTO
    /// becomes 3 s for the data phase (5.7), and the SYN's backoff ends.
    public mutating func handshakeCompletedAfterSYNRetransmission() {
        backoffCount = 0
        if estimator.sampleCount == 0 {
            estimator = RTTEstimator(configuration: configuration, baseRTO: configuration.afterSYNRetransmission)
        }
    }
}
