/// The connection states of RFC 9293 section 3.3.2.
public enum TCPState: String, Hashable, Sendable, CustomStringConvertible {
    case closed
    case listen
    case synSent = "syn-sent"
    case synReceived = "syn-received"
    case established
    case finWait1 = "fin-wait-1"
    case finWait2 = "fin-wait-2"
    case closeWait = "close-wait"
    case closing
    case lastAck = "last-ack"
    case timeWait = "time-wait"

    public var description: String { rawValue }

    /// Both SYNs have been exchanged.
    public var isSynchronized: Bool {
        switch self {
        case .closed, .listen, .synSent, .synReceived: false
        default: true
        }
    }

    /// Data may still arrive from the peer (its FIN has not).
    var receivesData: Bool { self == .established || self == .finWait1 || self == .finWait2 }
    /// We have sent our FIN (or will, being past close).
    var hasClosedSending: Bool {
        switch self {
        case .finWait1, .finWait2, .closing, .lastAck, .timeWait: true
        default: false
        }
    }
}
