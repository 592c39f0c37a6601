/// What one connection did, for reports and for tests that check the stack's work.
public struct TCPConnectionCounters: Hashable, Sendable {
    public var segmentsSent: UInt64 = 0
    public var segmentsReceived: UInt64 = 0
    public var bytesSent: UInt64 = 0
    /// Payload bytes sent again.
    public var bytesRetransmitted: UInt64 = 0
    public var segmentsRetransmitted: UInt64 = 0
    /// In-order payload bytes handed to the receive buffer.
    public var bytesReceived: UInt64 = 0
    public var duplicateBytesReceived: UInt64 = 0
    public var outOfOrderSegments: UInt64 = 0
    public var fastRetransmits: UInt64 = 0
    /// Retransmissions found lost during SACK recovery, and sent again.
    public var lostRetransmissions: UInt64 = 0
    public var retransmissionTimeouts: UInt64 = 0
    /// Times an ICMP "fragmentation needed" lowered the segment size (RFC 1191).
    public var pathMTUDecreases: UInt64 = 0
    public var zeroWindowProbes: UInt64 = 0
    /// Tail loss probes sent (RFC 8985 section 7).
    public var tailLossProbes: UInt64 = 0
    public var challengeACKs: UInt64 = 0
    /// Segments dropped by PAWS (RFC 7323): an old timestamp.
    public var pawsDrops: UInt64 = 0
    /// Segments outside the receive window (answered with an ACK, within the limit below).
    public var outOfWindowSegments: UInt64 = 0
    /// Segments not acceptable whose ACK the `invalidSegmentACKInterval` held back.
    public var invalidSegmentACKsLimited: UInt64 = 0
    public var resetsReceived: UInt64 = 0
    public var resetsSent: UInt64 = 0
    public init() {}
}
