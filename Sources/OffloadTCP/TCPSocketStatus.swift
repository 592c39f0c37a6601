/// What an application may know of its socket at any moment, whoever runs the connection.
///
/// While the engine runs a connection (T1) its state machine belongs to the engine, and an
/// engine on a thread of its own changes it at any time; the host then answers from what
/// it holds itself: the receive buffer the engine fills (`TCPReceiveBuffer`, made for two
/// threads), the peer's FIN marked in it, and the messages the engine has not completed.
/// Applications read this rather than `TCPStack.connection(_:)`, which is for a connection
/// the host runs (and for tests and reports on one thread).
public struct TCPSocketStatus: Sendable, Equatable {
    /// The connection's 4-tuple.
    public var id: TCPConnectionID
    /// ESTABLISHED or CLOSE-WAIT while the engine runs the connection (the states it runs).
    public var state: TCPState
    /// Why the connection ended, when it did not end by an orderly close.
    public var error: TCPError?
    /// Bytes received in order, waiting to be read.
    public var readableBytes: Int
    /// The peer has closed its side and every byte before its FIN has been read (or the
    /// connection ended).
    public var isAtEndOfInput: Bool
    /// Bytes sent and not yet acknowledged by the peer.
    public var unacknowledgedBytes: Int
    /// The largest message `send` would queue now rather than refuse for a full send queue
    /// (`.max` while nothing is queued).
    public var sendRoom: Int
    /// Data may still be sent (the application has not closed, the connection can carry it).
    public var canSend: Bool
    /// The engine runs the connection now.
    public var isOffloaded: Bool

    /// Whether `send` would take a message of `size` bytes now.
    public func hasRoom(for size: Int) -> Bool { size <= sendRoom }
}

extension TCPStack {
    /// The socket's status, or nil once the socket is released. Safe while an engine on
    /// another thread runs the connection: it reads no state of the engine's.
    public func status(_ socket: TCPSocket) -> TCPSocketStatus? {
        guard let entry = sockets[socket] else { return nil }
        let limit = configuration.tcp.sendLimit, largest = TCPConfiguration.largestMessage
        if isStopped {
            // What was received can still be read; nothing more comes, and nothing is sent.
            let received = entry.connection.receiveBuffer
            return TCPSocketStatus(
                id: entry.id, state: .closed, error: .stackStopped, readableBytes: received.count,
                isAtEndOfInput: received.count == 0, unacknowledgedBytes: 0, sendRoom: 0, canSend: false,
                isOffloaded: entry.offload != nil)
        }
        guard entry.offload != nil else {
            let c = entry.connection
            return TCPSocketStatus(
                id: entry.id, state: c.state, error: c.error, readableBytes: c.readableBytes,
                isAtEndOfInput: c.isAtEndOfInput, unacknowledgedBytes: c.unacknowledgedBytes,
                sendRoom: c.sendQueue.isEmpty ? largest : max(0, limit - c.unacknowledgedBytes),
                canSend: c.canSend && !entry.closedByApplication, isOffloaded: false)
        }
        // The engine's: only the receive buffer is shared. The rest is the host's own count
        // of what it posted (`send` checks the same room).
        let received = entry.connection.receiveBuffer
        var completed = 0
        for range in entry.completions { completed += range.count }
        var completedBytes = 0
        for i in 0..<min(completed, entry.buffers.count) { completedBytes += entry.buffers.bytes(at: i).count }
        return TCPSocketStatus(
            id: entry.id, state: received.hasEnd ? .closeWait : .established, error: nil, readableBytes: received.count,
            isAtEndOfInput: received.isAtEnd, unacknowledgedBytes: entry.buffers.byteCount - completedBytes,
            sendRoom: entry.buffers.isEmpty ? largest : max(0, limit - entry.buffers.byteCount),
            canSend: !entry.closedByApplication, isOffloaded: true)
    }
}
