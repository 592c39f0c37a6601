import OffloadCore

/// Why the host dropped a frame. Every dropped frame is counted under one of these.
public enum HostDropReason: String, CaseIterable, Sendable, CustomStringConvertible {
    case malformedEthernet = "malformed-ethernet"
    case malformedARP = "malformed-arp"
    case malformedIPv4 = "malformed-ipv4"
    case malformedICMP = "malformed-icmp"
    case malformedTCP = "malformed-tcp"
    case malformedUDP = "malformed-udp"
    case badChecksum = "bad-checksum"
    case ipFragment = "ip-fragment"
    case notForUs = "not-for-us"
    case unsupportedEtherType = "unsupported-ethertype"
    case unsupportedProtocol = "unsupported-protocol"
    case unsupportedICMP = "unsupported-icmp-type"
    case resolutionFailed = "resolution-failed"
    case resolutionQueueFull = "resolution-queue-full"
    case neighborTableFull = "neighbor-table-full"
    case noRoute = "no-route"
    case tooLargeToAnswer = "too-large-to-answer"
    case transmitFailed = "transmit-failed"

    public var description: String { rawValue }
}

/// What the host has done, for the table printed when it stops.
public struct HostCounters: Sendable, Equatable, CounterTable {
    public var framesReceived: UInt64 = 0
    public var framesTransmitted: UInt64 = 0
    public var arpRequestsAnswered: UInt64 = 0
    public var arpRequestsSent: UInt64 = 0
    public var arpRepliesReceived: UInt64 = 0
    public var echoRequestsAnswered: UInt64 = 0
    public var echoRequestsSent: UInt64 = 0
    public var echoRepliesReceived: UInt64 = 0
    public var icmpErrorsReceived: UInt64 = 0
    public var tcpSegmentsReceived: UInt64 = 0
    public var tcpSegmentsSent: UInt64 = 0
    public var drops = ReasonCounters<HostDropReason>()

    public init() {}

    public subscript(drop reason: HostDropReason) -> UInt64 {
        get { drops[reason] }
        set { drops[reason] = newValue }
    }

    public var totalDrops: UInt64 { drops.total }

    /// Name and value of every counter, in a stable order (drops last, by reason).
    public var rows: [(String, UInt64)] {
        [("frames received", framesReceived), ("frames transmitted", framesTransmitted),
         ("arp requests answered", arpRequestsAnswered), ("arp requests sent", arpRequestsSent),
         ("arp replies received", arpRepliesReceived), ("echo requests answered", echoRequestsAnswered),
         ("echo requests sent", echoRequestsSent), ("echo replies received", echoRepliesReceived),
         ("icmp errors received", icmpErrorsReceived), ("tcp segments received", tcpSegmentsReceived),
         ("tcp segments sent", tcpSegmentsSent)]
            + drops.rows("dropped: ")
    }

}
