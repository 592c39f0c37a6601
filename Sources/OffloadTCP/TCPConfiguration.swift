/// What one connection (or a whole stack) is set up with.
public struct TCPConfiguration: Sendable, Hashable {
    /// The MSS we advertise: the link's MTU less 40 (IPv4 and TCP headers).
    public var maximumSegmentSize = 1460
    /// Bytes of received data held for the application: the receive window.
    public var receiveBufferSize = 256 * 1024
    /// Bytes sent but not yet acknowledged that `send` accepts before `sendQueueFull`
    /// (at most `largestMessage`: see `sendLimit`).
    public var sendQueueLimit = 4 * 1024 * 1024
    /// The largest message, and the most a send queue holds: data in flight must span less
    /// than half the sequence space for its acknowledgements to be told apart.
    public static let largestMessage = 1 << 30
    /// `sendQueueLimit`, kept within `largestMessage`.
    public var sendLimit: Int { max(0, min(sendQueueLimit, Self.largestMessage)) }
    public var windowScaling = true
    public var selectiveAcknowledgments = true
    public var timestamps = true
    public var congestionControl: CongestionAlgorithm = .cubic
    public var retransmission = RetransmissionTimer.Configuration()
    /// An ACK for a single segment waits at most this long for another (Linux: 40 ms).
    public var delayedACKTimeout: Duration = .milliseconds(40)
    /// Send small segments at once (TCP_NODELAY) instead of waiting for the ACK of
    /// outstanding data (Nagle, RFC 896).
    public var noDelay = false
    /// TIME_WAIT lasts twice this (RFC 9293: MSL 2 minutes; Linux waits 60 s in all).
    public var maximumSegmentLifetime: Duration = .seconds(30)
    /// SYN (and SYN-ACK) retransmissions before giving up (Linux: 6).
    public var synRetries = 6
    /// Data retransmissions without progress before giving up (Linux: tcp_retries2 = 15).
    public var dataRetries = 15
    /// Time to live of our packets (cached state, T2).
    public var timeToLive: UInt8 = 64
    /// At most one ACK per this interval answers a segment without data that was not
    /// acceptable (out of the window, an old timestamp, an ACK of what was never sent), so
    /// that two ends whose numbers a middlebox changed do not answer each other's answers for
    /// ever (Linux: `tcp_invalid_ratelimit`, 500 ms).
    public var invalidSegmentACKInterval: Duration = .milliseconds(500)

    public init() {}

    /// The window scale we offer: the smallest shift that lets the window field describe
    /// the whole receive buffer (RFC 7323, at most 14).
    public var receiveWindowShift: UInt8 {
        guard windowScaling else { return 0 }
        var shift: UInt8 = 0
        while shift < 14 && receiveBufferSize >> Int(shift) > 65_535 { shift += 1 }
        return shift
    }
}
