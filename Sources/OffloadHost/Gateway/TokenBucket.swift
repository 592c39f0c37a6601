import OffloadCore

/// A rate limit: `perSecond` tokens a second, at most `burst` saved up (as Linux limits the
/// ICMP errors it sends: icmp_msgs_per_sec and icmp_msgs_burst).
struct TokenBucket: Sendable {
    let perSecond: Int
    let burst: Int
    private var tokens: Int
    private var refilled: Instant

    init(perSecond: Int, burst: Int, now: Instant) {
        self.perSecond = perSecond
        self.burst = burst
        tokens = burst
        refilled = now
    }

    /// Takes a token if there is one.
    mutating func take(now: Instant) -> Bool {
        // The product overflows after a long quiet (about 106 days at 1000/s): that long
        // refills any bucket.
        let (scaled, overflow) = (now - refilled).nanoseconds.multipliedReportingOverflow(by: Int64(perSecond))
        let earned = overflow ? burst : Int(scaled / 1_000_000_000)
        if earned > 0 {
            tokens = min(burst, tokens + earned)
            refilled = now
        }
        guard tokens > 0 else { return false }
        tokens -= 1
        return true
    }
}
