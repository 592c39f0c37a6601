import OffloadCore

/// The smoothed round-trip time and its variation, and the retransmission timeout they give
/// (RFC 6298 section 2), before any backoff. Arithmetic in whole nanoseconds.
public struct RTTEstimator: Hashable, Sendable {
    /// RFC 6298's constants: alpha = 1/8, beta = 1/4, K = 4.
    public static let alphaShift = 3
    public static let betaShift = 2
    public static let k: Int64 = 4

    public let configuration: RetransmissionTimer.Configuration
    // In nanoseconds (-1: no sample yet): a control block holds one estimator per connection.
    private var smoothedNanoseconds: Int64 = -1
    private var variationNanoseconds: Int64 = -1
    private var baseNanoseconds: Int64
    /// SRTT, nil before the first sample.
    public var smoothedRTT: Duration? { smoothedNanoseconds < 0 ? nil : .nanoseconds(smoothedNanoseconds) }
    /// RTTVAR, nil before the first sample.
    public var rttVariation: Duration? { variationNanoseconds < 0 ? nil : .nanoseconds(variationNanoseconds) }
    /// RTO before backoff: the initial RTO until the first sample, then
    /// SRTT + max(G, K * RTTVAR) within the configured minimum and maximum.
    public var baseRTO: Duration { .nanoseconds(baseNanoseconds) }
    /// Samples taken.
    public private(set) var sampleCount = 0

    public init(configuration: RetransmissionTimer.Configuration = .init()) {
        self.configuration = configuration
        baseNanoseconds = configuration.clamp(configuration.initialRTO).nanoseconds
    }

    /// No samples yet, and an RTO other than the initial one (RFC 6298 (5.7)).
    init(configuration: RetransmissionTimer.Configuration, baseRTO: Duration) {
        self.configuration = configuration
        baseNanoseconds = configuration.clamp(baseRTO).nanoseconds
    }

    /// Folds in one round-trip measurement R (RFC 6298 (2.2) for the first, (2.3) after).
    /// A negative R (a clock that went backward) is ignored.
    public mutating func add(sample: Duration) {
        let r = sample.nanoseconds
        guard r >= 0 else { return }
        let srtt: Int64, rttvar: Int64
        if smoothedNanoseconds >= 0 && variationNanoseconds >= 0 {
            let s = smoothedNanoseconds, v = variationNanoseconds
            // RTTVAR first, with the SRTT from before this sample.
            let deviation = s > r ? s - r : r - s
            rttvar = v - (v >> Self.betaShift) + (deviation >> Self.betaShift)
            srtt = s - (s >> Self.alphaShift) + (r >> Self.alphaShift)
        } else {
            srtt = r
            rttvar = r / 2
        }
        smoothedNanoseconds = srtt
        variationNanoseconds = rttvar
        sampleCount += 1
        let (kv, overflow) = Self.k.multipliedReportingOverflow(by: rttvar)
        let spread = overflow ? Int64.max : max(configuration.clockGranularity.nanoseconds, kv)
        baseNanoseconds = configuration.clamp(.nanoseconds(srtt.addingReportingOverflow(spread).overflow
                                                           ? Int64.max : srtt + spread)).nanoseconds
    }
}
