/// The id of one message (one `send`) on a connection: 0, 1, 2, ... in send order, so the
/// messages a cumulative ACK completes always form one inclusive range.
public typealias MessageID = UInt64

/// Messages completed together, as Linux's MSG_ZEROCOPY reports them: `[lower, upper]`.
public struct CompletionRange: Hashable, Sendable, CustomStringConvertible {
    public var lower: MessageID
    public var upper: MessageID
    /// Acknowledged by the peer, or given up (the connection was reset or timed out: the
    /// peer may not have all of it).
    public var status: CompletionStatus

    public init(lower: MessageID, upper: MessageID, status: CompletionStatus) {
        precondition(lower <= upper, "CompletionRange: lower above upper")
        self.lower = lower
        self.upper = upper
        self.status = status
    }

    public var count: Int { Int(upper - lower) + 1 }
    public var description: String { "[\(lower), \(upper)] \(status)" }
}

public enum CompletionStatus: Hashable, Sendable, CustomStringConvertible {
    /// The peer's cumulative ACK covered the message's last byte.
    case acknowledged
    /// The connection ended before that; why.
    case failed(TCPError)

    public var description: String {
        switch self {
        case .acknowledged: "acknowledged"
        case .failed(let e): "failed: \(e)"
        }
    }
}

/// One message handed back: its id, how it ended, and the application's buffer.
public struct TCPCompletion: ~Copyable, Sendable {
    public let id: MessageID
    public let status: CompletionStatus
    public var buffer: TxBuffer

    public init(id: MessageID, status: CompletionStatus, buffer: consuming TxBuffer) {
        self.id = id
        self.status = status
        self.buffer = buffer
    }
}
