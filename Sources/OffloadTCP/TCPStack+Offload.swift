import OffloadCore

/// Where a host's TCP offloads connections (T1): the host's glue to an engine. Commands go
/// to the engine in the order they are given; the engine's answers come back to the stack
/// through `offloadDidComplete` and `offloadDidUpload`.
public protocol TCPOffloadPort: AnyObject {
    /// Offers an established connection to the engine under the host's name for it. False
    /// when it cannot go now (its next hop is not resolved yet); the stack offers it again.
    func offload(_ connection: TCPConnection, as host: UInt32, now: Instant) -> Bool
    /// A message of application memory for an offloaded connection (T3).
    func post(_ bytes: UnsafeRawBufferPointer, to host: UInt32)
    /// The application read from an offloaded connection's receive buffer.
    func applicationRead(_ host: UInt32)
    /// Asks for the connection back now.
    func upload(_ host: UInt32)
    /// The application closed: the connection comes back once its data is acknowledged.
    func close(_ host: UInt32)
    /// The path to the peer takes packets of at most `mtu` bytes: an ICMP message quoting
    /// `quotedSequence` said so (RFC 1191, `TCPConnection.pathMTUDecreased`), or the host's
    /// own link shrank (nil).
    func pathMTUDecreased(_ host: UInt32, mtu: Int, quotedSequence: UInt32?)
}

extension TCPStack {
    /// Where an offloaded socket stands. While it is set, the engine owns the connection's
    /// delegated state; the stack only reads its receive buffer.
    struct Offload {
        /// The id the next posted message gets (ids run on from the connection's).
        var nextID: MessageID
        var uploadRequested = false
        /// What the application did meanwhile, done once the connection is back.
        var closeWhenBack = false
        var abortWhenBack = false
    }

    /// Offloads every established connection that may go and is not offloaded yet.
    func offloadEstablished(now: Instant) {
        guard let port = offloadPort, !offloadCandidates.isEmpty else { return }
        let candidates = offloadCandidates
        offloadCandidates.removeAll(keepingCapacity: true)
        for socket in candidates {
            guard let entry = sockets[socket], entry.offload == nil, entry.mayOffload,
                  entry.connection.state == .established, !entry.closedByApplication || entry.closeAfterOffload
            else { continue }
            let host = UInt32(truncatingIfNeeded: socket.rawValue)
            // Read before the connection goes: an engine on its own thread may run it at once.
            let nextID = entry.connection.sendQueue.nextID
            if port.offload(entry.connection, as: host, now: now) {
                entry.offload = Offload(nextID: nextID)
                counters.connectionsOffloaded &+= 1
                if entry.closeAfterOffload {
                    entry.offload!.closeWhenBack = true
                    port.close(host)
                }
            } else if entry.closeAfterOffload {
                entry.closeAfterOffload = false
                entry.connection.close()
            } else {
                offloadCandidates.append(socket)
            }
        }
    }

    /// The engine completed messages of an offloaded connection.
    public func offloadDidComplete(host: UInt32, _ range: CompletionRange) {
        sockets[TCPSocket(rawValue: Int(host))]?.completions.append(range)
    }

    /// The engine handed a connection back (or never took it): the stack runs it again.
    /// Messages posted after the engine let go are queued on it here, from their buffers.
    /// `forSegment`: it came back for a segment the host handles itself (SYN, FIN, RST); if
    /// the connection is still established once the host has handled it (a repeated SYN-ACK),
    /// it goes back to the engine.
    public func offloadDidUpload(host: UInt32, _ connection: TCPConnection, forSegment: Bool, now: Instant) {
        let socket = TCPSocket(rawValue: Int(host))
        guard let entry = sockets[socket], entry.connection === connection else { return }
        if let offload = entry.offload {
            // Completions the connection holds are older than anything posted after it left.
            entry.completions += connection.takeCompletions()
            let missing = Int(offload.nextID - connection.sendQueue.nextID)
            for i in (entry.buffers.count - missing)..<entry.buffers.count {
                do {
                    _ = try connection.send(entry.buffers.bytes(at: i))
                } catch {
                    // The connection ended in the engine (a timeout), the one way `send` throws
                    // here (the stack checked the limits when it posted): the rest fail with it,
                    // after the failures the connection already holds, so ids stay in order.
                    let id = offload.nextID - MessageID(entry.buffers.count - i)
                    entry.completions.append(CompletionRange(lower: id, upper: offload.nextID - 1,
                                                             status: .failed(connection.error ?? error)))
                    break
                }
            }
            entry.offload = nil
            // A read made after the engine let go rang nobody: the window update is due here.
            connection.applicationRead()
            counters.connectionsUploaded &+= 1
            if offload.abortWhenBack {
                connection.abort()
            } else if offload.closeWhenBack {
                connection.close()
            }
        }
        entry.mayOffload = forSegment && !entry.closedByApplication
        if connection.state == .closed { ended(socket, entry) }
    }

    /// Asks the engine for a connection back (it stays with the host afterwards until
    /// `offload(_:)`). False when the socket is not offloaded.
    @discardableResult
    public func upload(_ socket: TCPSocket) -> Bool {
        guard let entry = sockets[socket], var offload = entry.offload, let port = offloadPort else { return false }
        if !offload.uploadRequested {
            offload.uploadRequested = true
            entry.offload = offload
            port.upload(UInt32(truncatingIfNeeded: socket.rawValue))
        }
        return true
    }

    /// Lets a connection be offloaded again (after `upload`), at the next poll.
    public func offload(_ socket: TCPSocket) {
        guard let entry = sockets[socket], entry.offload == nil else { return }
        entry.mayOffload = true
        offloadCandidates.append(socket)
    }

    /// Whether the engine runs the socket's connection now.
    public func isOffloaded(_ socket: TCPSocket) -> Bool { sockets[socket]?.offload != nil }

    /// Sockets whose connection the engine runs now.
    public var offloadedCount: Int { sockets.values.reduce(0) { $0 + ($1.offload == nil ? 0 : 1) } }
}
