/// Why a TCP call failed or a connection ended, each with a message a person can act on.
public enum TCPError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The peer answered our SYN with a reset: nothing listens there.
    case connectionRefused
    /// The peer reset the connection.
    case connectionReset
    /// No answer after every retransmission.
    case timedOut
    /// The application aborted the connection.
    case aborted
    /// The socket was closed for sending: no more data may be sent.
    case sendAfterClose
    /// The connection is not (or no longer) in a state that can do this.
    case notConnected
    /// The socket handle names no socket (closed and released, or never made).
    case badSocket
    /// More bytes are waiting to be acknowledged than the send queue's bound; wait for
    /// completions and send again.
    case sendQueueFull(limit: Int)
    /// Something already listens on, or uses, this port.
    case portInUse(UInt16)
    /// Every ephemeral port is in use towards that peer.
    case noEphemeralPort
    /// Too many connections or listeners for the stack's bounds.
    case tooManyConnections(limit: Int)
    /// An empty message: there is nothing to send.
    case emptyMessage
    /// Port 0 names no port: nothing can listen or be reached there.
    case invalidPort
    /// The stack was stopped (its runtime ended): the connection ended with it.
    case stackStopped
    /// A message larger than the stack takes (`TCPConfiguration.largestMessage`): send it in pieces.
    case messageTooLarge(limit: Int)
    /// The task waiting for the call was cancelled.
    case cancelled

    public var description: String {
        switch self {
        case .connectionRefused: "connection refused: the peer reset our SYN (nothing listens on that port)"
        case .connectionReset: "connection reset by the peer"
        case .timedOut: "connection timed out: no answer after every retransmission"
        case .aborted: "connection aborted by the application"
        case .sendAfterClose: "cannot send after close: the sending side is shut down"
        case .notConnected: "the socket is not connected"
        case .badSocket: "no such socket (closed and released, or never opened)"
        case .sendQueueFull(let limit): "send queue full (\(limit) bytes awaiting acknowledgement): wait for completions"
        case .portInUse(let port): "port \(port) is already in use"
        case .noEphemeralPort: "no free ephemeral port towards that peer"
        case .tooManyConnections(let limit): "too many connections (limit \(limit))"
        case .emptyMessage: "cannot send an empty message"
        case .invalidPort: "port 0 is not a port: listen on or connect to 1 to 65535"
        case .stackStopped: "the TCP stack was stopped: its connections ended with it"
        case .messageTooLarge(let limit): "a message is at most \(limit) bytes: send it in pieces"
        case .cancelled: "the waiting task was cancelled"
        }
    }
}
