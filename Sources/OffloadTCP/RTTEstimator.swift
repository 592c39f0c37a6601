import OffloadCore

/// The smoothed round-trip time and its variation, and the retransmission timeout they give
/// (RFC 6298 section 2), before any backoff. Arithmetic in whole nanoseconds.
public struct RTTEstimator: Hashable, Sendable {
    /// RFC 6298's constants: alpha = 1/8, beta = 1/4, K = 4.
    public static let alphaShift = 3
    public static let betaShift = 2
    public static let k: Int64 = 4

    public let configuration: RetransmissionTimer.Configuration
    /// SRTT, nil before the first sample.
    public private(set) var smoothedRTT: Duration?
    /// RTTVAR, nil before the first sample.
    public private(set) var rttVariation: Duration?
    /// RTO before backoff: the initial RTO until the first sample, then
    /// SRTT + max(G, K * RTTVAR) within the configured minimum and maximum.
    public private(set) var baseRTO: Duration
    /// Samples taken.
    public private(set) var sampleCount = 0

    public init(configuration: RetransmissionTimer.Configuration = .init()) {
        self.configuration = configuration
        baseRTO = configuration.clamp(configuration.initialRTO)
    }

    /// No samples yet, and an RTO other than the initial one (RFC 6298 (5.7)).
    init(configuration: RetransmissionTimer.Configuration, baseRTO: Duration) {
        self.configuration = configuration
        self.baseRTO = configuration.clamp(baseRTO)
    }

    /// Folds in one round-trip measurement R (RFC 6298 (2.2) for the first, (2.3) after).
    /// A negative R (a clock that went backward) is ignored.
    public mutating func add(sample: Duration) {
        let r = sample.nanoseconds
        guard r >= 0 else { return }
        let srtt: Int64, rttvar: Int64
        if let s = smoothedRTT?.nanoseconds, let v = rttVariation?.nanoseconds {
            // RTTVAR first, with the SRTT from before this sample.
            let deviation = s > r ? s - r : r - s
            rttvar = v - (v >> Self.betaShift) + (deviation >> Self.betaShift)
            srtt = s - (s >> Self.alphaShift) + (r >> Self.alphaShift)
        } else {
            srtt = r
            rttvar = r / 2
        }
        smoothedRTT = .nanoseconds(srtt)
        rttVariation = .nanoseconds(rttvar)
        sampleCount += 1
        let (kv, overflow) = Self.k.multipliedReportingOverflow(by: rttvar)
        let spread = overflow ? Int64.max : max(configuration.clockGranularity.nanoseconds, kv)
        baseRTO = configuration.clamp(.nanoseconds(srtt.addingReportingOverflow(spread).overflow
                                                   ? Int64.max : srtt + spread))
    }
}
