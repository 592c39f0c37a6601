import OffloadCore
import OffloadWire

/// A socket handle: what `connect` and `accept` give the application.
public struct TCPSocket: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int
    public var description: String { "socket \(rawValue)" }
}

/// What `send` did with the buffer: queued it (the completion gives it back), or refused
/// it and gives it back at once with the reason. Either way the buffer is never lost.
public enum SendResult: ~Copyable {
    case queued(MessageID)
    case refused(TCPError, TxBuffer)
}

/// The TCP of one IPv4 address, without I/O: connections by 4-tuple, listeners with a
/// bounded SYN queue and SYN cookies past it (RFC 4987), RFC 6528 initial sequence numbers,
/// RSTs for segments nobody wants, and the socket API over it: connect, listen, accept,
/// send (owned buffers, zero copy, completions), read, close, abort.
///
/// It is handed segments (`receive`) and the time (`poll`); `poll` emits what to send.
public final class TCPStack {
    public struct Configuration: Sendable {
        public var tcp = TCPConfiguration()
        /// Connections at most, listeners' half-open ones included.
        public var maximumConnections = 4096
        /// Half-open connections a listener keeps; SYNs past it get a SYN cookie.
        public var synQueueLimit = 128
        public var synCookies = true
        public var ephemeralPorts: ClosedRange<UInt16> = 49_152...65_535
        /// Seeds the secrets of sequence numbers and cookies, and the port choice (the
        /// simulator passes its seed; real use passes something random).
        public var seed: UInt64 = 0x5eed
        public init() {}
    }

    final class Listener {
        let port: UInt16
        let backlog: Int
        var acceptQueue: [TCPSocket] = []
        var halfOpen = 0
        init(port: UInt16, backlog: Int) {
            self.port = port
            self.backlog = backlog
        }
    }

    final class SocketEntry {
        let socket: TCPSocket
        let connection: TCPConnection
        /// The connection's 4-tuple, kept here: the connection's own copy is in its control
        /// block, which is the engine's while it is offloaded.
        let id: TCPConnectionID
        var buffers = TxBufferQueue()
        /// The listener that made it, until the application accepts it (nil from then on,
        /// and for connections of our own).
        var listener: UInt16?
        var closedByApplication = false
        /// Nobody will read what the connection received (the application aborted it, or it
        /// ended before anyone accepted it): the socket goes without waiting for that.
        var discardsInput = false
        /// Set while the engine runs the connection (see `TCPStack+Offload`).
        var offload: Offload?
        /// Whether the connection may be offloaded (not after the engine gave it back).
        var mayOffload = true
        /// Closed by the application before its handshake finished: it is offloaded with its
        /// data first, and the close follows (so that the engine carries the data).
        var closeAfterOffload = false
        /// Completions not yet taken by the application.
        var completions: [CompletionRange] = []
        init(socket: TCPSocket, connection: TCPConnection, listener: UInt16?) {
            self.socket = socket
            self.connection = connection
            id = connection.id
            self.listener = listener
        }
    }

    public let address: IPv4Address
    public let configuration: Configuration
    public internal(set) var counters = TCPStackCounters()
    /// By 4-tuple (one lookup per segment), and by socket handle.
    private var connections: [TCPConnectionID: SocketEntry] = [:]
    var sockets: [TCPSocket: SocketEntry] = [:]
    /// Set by `stop()`: the stack no longer runs, and refuses what would need it to.
    public internal(set) var isStopped = false
    private var listeners: [UInt16: Listener] = [:]
    /// The next socket id to try. Ids are the engine's names for offloaded connections (32
    /// bits, `TCPOffloadPort`): they wrap after 2^32 sockets, skipping those still open.
    var nextSocket = 1
    private let sequenceNumbers: InitialSequenceNumbers
    private let cookies: SYNCookies
    private var random: SeededRandom
    /// RSTs and cookie SYN-ACKs, sent at the next poll.
    private var control: [(TCPConnectionID, TCPRepr)] = []
    static let controlQueueLimit = 1024
    /// The MTU of the link the stack sends on, when it caps the MSS below the configured
    /// one: a new connection advertises and sends segments of at most this less 40 bytes
    /// (the IPv4 and TCP headers). Set it again when the link's MTU changes: when it
    /// shrinks, open connections send smaller segments from then on too, as Linux's do.
    public var linkMTU: Int? {
        didSet {
            guard let mtu = linkMTU, let old = oldValue, mtu < old else { return }
            for entry in sockets.values {
                if entry.offload != nil {
                    offloadPort?.pathMTUDecreased(UInt32(truncatingIfNeeded: entry.socket.rawValue), mtu: mtu,
                                                  quotedSequence: nil)
                } else {
                    _ = entry.connection.linkMTUDecreased(to: mtu)
                }
            }
        }
    }
    /// The connections' configuration, the MSS capped by `linkMTU`.
    private var connectionConfiguration: TCPConfiguration {
        var tcp = configuration.tcp
        // At least 88 bytes, as Linux (TCP_MIN_MSS): an MTU of 68 leaves too little to be useful.
        if let linkMTU { tcp.maximumSegmentSize = max(88, min(tcp.maximumSegmentSize, linkMTU - 40)) }
        return tcp
    }
    /// Where established connections are offloaded to (T1), if anywhere.
    public weak var offloadPort: (any TCPOffloadPort)?
    /// Established connections not offloaded yet.
    var offloadCandidates: [TCPSocket] = []

    public init(address: IPv4Address, configuration: Configuration = .init()) {
        self.address = address
        self.configuration = configuration
        var random = SeededRandom(seed: configuration.seed)
        sequenceNumbers = InitialSequenceNumbers(seed: random.next())
        cookies = SYNCookies(seed: random.next())
        self.random = random
    }

    // MARK: The socket API

    /// Opens a connection (the SYN leaves at the next poll).
    public func connect(to remote: IPv4Address, port remotePort: UInt16, now: Instant) throws(TCPError) -> TCPSocket {
        guard !isStopped else { throw .stackStopped }
        guard remotePort != 0 else { throw .invalidPort }
        guard connections.count < configuration.maximumConnections else {
            throw .tooManyConnections(limit: configuration.maximumConnections)
        }
        let id = try ephemeralID(to: remote, port: remotePort)
        let iss = sequenceNumbers.next(local: address, localPort: id.localPort, remote: remote, remotePort: remotePort,
                                       now: now)
        let connection = TCPConnection(connecting: id, initialSendSequence: iss, configuration: connectionConfiguration,
                                       timestampOffset: UInt32(truncatingIfNeeded: random.next()), now: now)
        counters.connectionsOpened &+= 1
        return register(connection, listener: nil)
    }

    /// Accepts connections on `port`; `backlog` bounds the established ones not yet accepted.
    public func listen(port: UInt16, backlog: Int = 128) throws(TCPError) {
        guard !isStopped else { throw .stackStopped }
        guard port != 0 else { throw .invalidPort }
        guard listeners[port] == nil else { throw .portInUse(port) }
        listeners[port] = Listener(port: port, backlog: max(1, backlog))
    }

    /// Stops listening on `port`; connections not yet accepted are reset.
    public func stopListening(port: UInt16) {
        guard listeners.removeValue(forKey: port) != nil else { return }
        for entry in sockets.values where entry.listener == port {
            entry.listener = nil
            abort(entry.socket)
        }
    }

    /// Whether `accept(port:)` would return a connection.
    public func hasAcceptable(port: UInt16) -> Bool { !(listeners[port]?.acceptQueue.isEmpty ?? true) }

    /// The next established connection on `port`, or nil.
    public func accept(port: UInt16) -> TCPSocket? {
        guard let listener = listeners[port], !listener.acceptQueue.isEmpty else { return nil }
        let socket = listener.acceptQueue.removeFirst()
        sockets[socket]?.listener = nil
        return socket
    }

    /// Queues `buffer` as one message. The stack keeps it, uncopied, until the peer has
    /// acknowledged all of it; `takeCompletions` then gives it back.
    public func send(_ buffer: consuming TxBuffer, on socket: TCPSocket) -> SendResult {
        guard let entry = sockets[socket] else { return .refused(.badSocket, buffer) }
        guard !isStopped else { return .refused(.stackStopped, buffer) }
        guard !entry.closedByApplication else { return .refused(.sendAfterClose, buffer) }
        if let offload = entry.offload, let port = offloadPort {
            // The engine queues it (T3); the limit counts what is not yet completed.
            let limit = configuration.tcp.sendLimit
            guard !buffer.bytes.isEmpty else { return .refused(.emptyMessage, buffer) }
            guard buffer.bytes.count <= TCPConfiguration.largestMessage else {
                return .refused(.messageTooLarge(limit: TCPConfiguration.largestMessage), buffer)
            }
            guard entry.buffers.byteCount + buffer.bytes.count <= limit || entry.buffers.isEmpty else {
                return .refused(.sendQueueFull(limit: limit), buffer)
            }
            let id = offload.nextID
            entry.offload!.nextID += 1
            port.post(buffer.bytes, to: UInt32(truncatingIfNeeded: socket.rawValue))
            entry.buffers.append(buffer)
            return .queued(id)
        }
        do {
            let id = try entry.connection.send(buffer.bytes)
            entry.buffers.append(buffer)
            return .queued(id)
        } catch {
            return .refused(error, buffer)
        }
    }

    /// Hands back the buffers of messages completed since the last call, oldest first, and
    /// returns the completions coalesced as id ranges.
    @discardableResult
    public func takeCompletions(of socket: TCPSocket, _ body: (consuming TCPCompletion) -> Void) -> [CompletionRange] {
        guard let entry = sockets[socket] else { return [] }
        if entry.offload == nil { entry.completions += entry.connection.takeCompletions() }
        let ranges = entry.completions
        entry.completions.removeAll()
        for range in ranges {
            for id in range.lower...range.upper {
                guard let buffer = entry.buffers.removeFirst() else {
                    preconditionFailure("TCPStack: a completion without its buffer")
                }
                body(TCPCompletion(id: id, status: range.status, buffer: buffer))
            }
        }
        releaseIfDone(socket)
        return ranges
    }

    /// Copies out up to `buffer.count` received bytes; returns how many (0: none yet, the
    /// end, or a socket that is gone; `status` tells them apart: `isAtEndOfInput`, or nil).
    public func read(_ socket: TCPSocket, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var done = 0
        read(socket, max: buffer.count) { piece in
            UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + piece.count)]).copyMemory(from: piece)
            done += piece.count
        }
        return done
    }

    @discardableResult
    public func read(_ socket: TCPSocket, max: Int, _ body: (UnsafeRawBufferPointer) -> Void) -> Int {
        guard let entry = sockets[socket] else { return 0 }
        guard entry.offload != nil, let port = offloadPort else {
            let n = entry.connection.read(max: max, body)
            // A connection that ended kept its socket for these bytes.
            releaseIfDone(socket)
            return n
        }
        // The receive buffer is the host's memory; the engine is told the window moved.
        let n = entry.connection.readReceived(max: max, body)
        if n > 0 { port.applicationRead(UInt32(truncatingIfNeeded: socket.rawValue)) }
        return n
    }

    /// Shuts the sending side (a FIN after the queued data). The socket stays readable; it
    /// is released once the connection has ended, its completions are taken and what it
    /// received is read (`abort` gives up what is unread).
    public func close(_ socket: TCPSocket) {
        guard let entry = sockets[socket] else { return }
        entry.closedByApplication = true
        // A connection closed during its handshake with data queued carries the data once it
        // is established (the FIN follows it), on the engine when it is offloaded (in
        // SYN-SENT a deliberate departure from RFC 9293 3.10.4: see `TCPConnection.close`).
        // With nothing queued, a connection still in SYN-SENT just ends, as the RFC has it
        // and as it does without an engine: it did not retry its SYN to be offloaded and closed.
        let state = entry.connection.state
        if entry.offload == nil, offloadPort != nil, entry.mayOffload,
           state == .synSent && !entry.connection.sendQueue.isEmpty || state == .synReceived {
            entry.closeAfterOffload = true
            return
        }
        if entry.offload != nil {
            // FIN and TIME_WAIT are the host's: the connection comes back once the engine
            // has had its data acknowledged.
            if !entry.offload!.closeWhenBack {
                entry.offload!.closeWhenBack = true
                offloadPort?.close(UInt32(truncatingIfNeeded: socket.rawValue))
            }
            return
        }
        entry.connection.close()
        releaseIfDone(socket)
    }

    /// Ends the connection with a RST; queued messages complete as failed, and bytes
    /// received and not read are given up.
    public func abort(_ socket: TCPSocket) {
        guard let entry = sockets[socket] else { return }
        entry.closedByApplication = true
        entry.discardsInput = true
        if entry.offload != nil {
            entry.offload!.abortWhenBack = true
            upload(socket)
            return
        }
        entry.connection.abort()
    }

    /// The connection behind a socket (its state, counters, readable bytes), or nil once
    /// the socket is released. While an engine on another thread runs it, only that thread
    /// may read it: applications read `status(_:)`. Its operations (send, read, close,
    /// completions) are the stack's and the engine's (`package`): an application that used
    /// them behind the stack's back would take completions, and buffers, out of turn.
    public func connection(_ socket: TCPSocket) -> TCPConnection? { sockets[socket]?.connection }

    /// Sockets the stack holds (released ones excluded; TIME_WAIT ones included).
    public var socketCount: Int { sockets.count }
    public var connectionCount: Int { connections.count }
    public var listenerCount: Int { listeners.count }

    /// Everything back at rest: no connection, no socket, no control segment waiting.
    public var isQuiescent: Bool { connections.isEmpty && sockets.isEmpty && control.isEmpty }

    // MARK: Segments in

    /// Takes one segment addressed to `destination` (checked and parsed by the caller).
    public func receive(_ segment: TCPRepr, payload: UnsafeRawBufferPointer, source: IPv4Address,
                        destination: IPv4Address, now: Instant) {
        let id = TCPConnectionID(local: destination, localPort: segment.destinationPort, remote: source,
                                 remotePort: segment.sourcePort)
        if let entry = connections[id] {
            let socket = entry.socket
            guard entry.offload == nil else {
                // The host's glue sends these to the engine; none should get here.
                counters.segmentsForOffloaded &+= 1
                return
            }
            let wasSynchronized = entry.connection.state.isSynchronized
            let wasSynReceived = entry.connection.state == .synReceived
            entry.connection.receive(segment, payload: payload, now: now)
            if wasSynReceived && entry.connection.state.isSynchronized { established(socket, entry) }
            if entry.closeAfterOffload, entry.connection.state.isSynchronized, entry.connection.state != .established {
                // A close asked during the handshake waits for the offload, but the segment that
                // ended the handshake brought the peer's FIN too: the connection is past
                // ESTABLISHED, never to be offloaded, and closes here.
                entry.closeAfterOffload = false
                entry.connection.close()
            }
            if entry.mayOffload && entry.connection.state == .established && offloadPort != nil
                && (!wasSynchronized || !offloadCandidates.contains(socket)) {
                offloadCandidates.append(socket)
                offloadEstablished(now: now)
            }
            // Once offloaded, the connection is the engine's (which may run on another thread).
            if entry.offload == nil && entry.connection.state == .closed { ended(socket, entry) }
            return
        }
        if destination == address, let listener = listeners[segment.destinationPort] {
            receiveOnListener(listener, segment, payload: payload, id: id, now: now)
            return
        }
        counters.segmentsWithoutSocket &+= 1
        resetUnwanted(segment, id: id)
    }

    private func receiveOnListener(_ listener: Listener, _ segment: TCPRepr, payload: UnsafeRawBufferPointer,
                                   id: TCPConnectionID, now: Instant) {
        let flags = segment.flags
        if flags.contains(.rst) { return }
        if flags.contains(.ack) {
            // The ACK of a handshake only a cookie remembers.
            guard configuration.synCookies, !flags.contains(.syn),
                  let mss = cookies.check(local: id.local, localPort: id.localPort, remote: id.remote,
                                          remotePort: id.remotePort,
                                          sequence: SequenceNumber(segment.sequenceNumber),
                                          acknowledgment: SequenceNumber(segment.acknowledgmentNumber), now: now),
                  listener.acceptQueue.count < listener.backlog, connections.count < configuration.maximumConnections
            else {
                counters.synCookiesRejected &+= 1
                resetUnwanted(segment, id: id)
                return
            }
            counters.synCookiesAccepted &+= 1
            let connection = TCPConnection(cookieACK: segment, id: id, mss: Int(mss), configuration: connectionConfiguration,
                                           timestampOffset: UInt32(truncatingIfNeeded: random.next()), now: now)
            let socket = register(connection, listener: listener.port)
            connection.receive(segment, payload: payload, now: now)
            listener.acceptQueue.append(socket)
            counters.connectionsAccepted &+= 1
            if offloadPort != nil && connection.state == .established {
                offloadCandidates.append(socket)
                offloadEstablished(now: now)
            }
            return
        }
        guard flags.contains(.syn) else { return }
        guard listener.acceptQueue.count < listener.backlog else {
            counters.synsDroppedBacklogFull &+= 1
            return
        }
        if listener.halfOpen < configuration.synQueueLimit && connections.count < configuration.maximumConnections {
            let iss = sequenceNumbers.next(local: id.local, localPort: id.localPort, remote: id.remote,
                                           remotePort: id.remotePort, now: now)
            let connection = TCPConnection(accepting: segment, id: id, initialSendSequence: iss,
                                           configuration: connectionConfiguration,
                                           timestampOffset: UInt32(truncatingIfNeeded: random.next()), now: now)
            listener.halfOpen += 1
            _ = register(connection, listener: listener.port)
            return
        }
        guard configuration.synCookies else {
            counters.synsDroppedBacklogFull &+= 1
            return
        }
        // The SYN queue is full (a flood): answer with a cookie and keep nothing.
        let (isn, mss) = cookies.cookie(local: id.local, localPort: id.localPort, remote: id.remote,
                                        remotePort: id.remotePort, clientISN: SequenceNumber(segment.sequenceNumber),
                                        mss: segment.maxSegmentSize ?? 536, now: now)
        let reply = TCPRepr(sourcePort: id.localPort, destinationPort: id.remotePort, sequenceNumber: isn.rawValue,
                            acknowledgmentNumber: segment.sequenceNumber &+ 1, flags: [.syn, .ack],
                            windowSize: UInt16(min(configuration.tcp.receiveBufferSize, 65_535)),
                            maxSegmentSize: min(mss, UInt16(clamping: connectionConfiguration.maximumSegmentSize)))
        if queueControl(id, reply) { counters.synCookiesSent &+= 1 }
    }

    /// An ICMP "fragmentation needed" (RFC 1191) that quotes a segment this stack sent from
    /// `localPort` to `remote`:`remotePort`: the connection's segments from now on fit
    /// `mtu` (see `TCPConnection.pathMTUDecreased`); an offloaded one's engine is told.
    public func pathMTUDecreased(to mtu: Int, remote: IPv4Address, remotePort: UInt16, localPort: UInt16,
                                 quotedSequence: UInt32) {
        let id = TCPConnectionID(local: address, localPort: localPort, remote: remote, remotePort: remotePort)
        guard let entry = connections[id] else { return }
        if entry.offload != nil {
            offloadPort?.pathMTUDecreased(UInt32(truncatingIfNeeded: entry.socket.rawValue), mtu: mtu,
                                          quotedSequence: quotedSequence)
            return
        }
        _ = entry.connection.pathMTUDecreased(to: mtu, quotedSequence: SequenceNumber(quotedSequence))
    }

    /// An ICMP destination unreachable other than fragmentation needed, quoting a segment
    /// this stack sent: a refused SYN ends its connection (see
    /// `TCPConnection.destinationUnreachable`). Offloaded connections are synchronized, where
    /// such a message changes nothing.
    public func destinationUnreachable(code: UInt8, remote: IPv4Address, remotePort: UInt16, localPort: UInt16,
                                       quotedSequence: UInt32) {
        let id = TCPConnectionID(local: address, localPort: localPort, remote: remote, remotePort: remotePort)
        guard let entry = connections[id], entry.offload == nil else { return }
        _ = entry.connection.destinationUnreachable(code: code, quotedSequence: SequenceNumber(quotedSequence))
    }

    /// RFC 9293 3.10.7.1: a RST for a segment nobody wants (never for a RST).
    private func resetUnwanted(_ segment: TCPRepr, id: TCPConnectionID) {
        guard !segment.flags.contains(.rst) else { return }
        var reset: TCPRepr
        if segment.flags.contains(.ack) {
            reset = TCPRepr(sourcePort: id.localPort, destinationPort: id.remotePort,
                            sequenceNumber: segment.acknowledgmentNumber, flags: .rst, windowSize: 0)
        } else {
            let length = segment.payloadLength + (segment.flags.contains(.syn) ? 1 : 0)
                + (segment.flags.contains(.fin) ? 1 : 0)
            reset = TCPRepr(sourcePort: id.localPort, destinationPort: id.remotePort, sequenceNumber: 0,
                            acknowledgmentNumber: segment.sequenceNumber &+ UInt32(truncatingIfNeeded: length),
                            flags: [.rst, .ack], windowSize: 0)
        }
        reset.payloadLength = 0
        if queueControl(id, reset) { counters.resetsSent &+= 1 }
    }

    private func queueControl(_ id: TCPConnectionID, _ segment: TCPRepr) -> Bool {
        guard control.count < Self.controlQueueLimit else {
            counters.controlQueueDrops &+= 1
            return false
        }
        control.append((id, segment))
        return true
    }

    // MARK: Time and segments out

    /// Runs timers and emits the segments due, with the connection each belongs to: at
    /// most `budget` (the room the transmit path has); the rest wait for the next poll.
    public func poll(now: Instant, budget: Int = .max,
                     emit: (TCPConnectionID, TCPRepr, UnsafeBufferPointer<UnsafeRawBufferPointer>) -> Void) {
        offloadEstablished(now: now)
        var budget = budget
        let controls = min(budget, control.count)
        for (id, segment) in control[0..<controls] { emit(id, segment, UnsafeBufferPointer(start: nil, count: 0)) }
        control.removeFirst(controls)
        budget -= controls
        var finished: [(TCPSocket, SocketEntry)] = []
        for (socket, entry) in sockets where entry.offload == nil {
            let connection = entry.connection
            let id = connection.id
            // Timers run even with no budget left, so none is missed.
            budget -= connection.poll(now: now, budget: budget) { header, payload in emit(id, header, payload) }
            if connection.state == .closed { finished.append((socket, entry)) }
        }
        for (socket, entry) in finished { ended(socket, entry) }
    }

    /// The earliest timer of any connection.
    public var nextDeadline: Instant? {
        var next: Instant?
        for entry in sockets.values where entry.offload == nil {
            if let t = entry.connection.nextDeadline, next.map({ t < $0 }) ?? true { next = t }
        }
        return next
    }

    /// Something to send without waiting for a timer.
    public var hasOutput: Bool {
        !control.isEmpty || sockets.values.contains { $0.offload == nil && $0.connection.hasOutput }
    }

    // MARK: Bookkeeping

    private func register(_ connection: TCPConnection, listener: UInt16?) -> TCPSocket {
        // At most `maximumConnections` ids are in use, so one is free within as many tries.
        while sockets[TCPSocket(rawValue: nextSocket)] != nil { advanceSocketID() }
        let socket = TCPSocket(rawValue: nextSocket)
        advanceSocketID()
        let entry = SocketEntry(socket: socket, connection: connection, listener: listener)
        sockets[socket] = entry
        connections[connection.id] = entry
        return socket
    }

    private func advanceSocketID() {
        nextSocket = nextSocket >= Int(UInt32.max) ? 1 : nextSocket + 1
    }

    /// A passive open finished its handshake: into its listener's accept queue.
    private func established(_ socket: TCPSocket, _ entry: SocketEntry) {
        guard let port = entry.listener, let listener = listeners[port] else { return }
        listener.halfOpen -= 1
        if listener.acceptQueue.count < listener.backlog {
            listener.acceptQueue.append(socket)
            counters.connectionsAccepted &+= 1
        } else {
            counters.synsDroppedBacklogFull &+= 1
            entry.listener = nil
            entry.closedByApplication = true
            entry.connection.abort()
        }
    }

    /// A connection reached CLOSED (seen by a poll, a segment, or its return from the
    /// engine): forget its 4-tuple, once; release the socket if nobody needs it.
    func ended(_ socket: TCPSocket, _ entry: SocketEntry) {
        if connections[entry.connection.id] === entry {
            connections[entry.connection.id] = nil
            counters.connectionsClosed &+= 1
            if entry.connection.error != nil { counters.connectionsFailed &+= 1 }
            if let port = entry.listener, let listener = listeners[port] {
                if let i = listener.acceptQueue.firstIndex(of: socket) {
                    listener.acceptQueue.remove(at: i)
                } else {
                    listener.halfOpen -= 1
                }
                entry.closedByApplication = true // never accepted: nobody will close it, or read it
                entry.discardsInput = true
                _ = entry.connection.takeCompletions()
                entry.completions.removeAll()
            }
        }
        releaseIfDone(socket)
    }

    /// Releases a socket nobody needs any more: closed, its completions taken and what it
    /// received read (unless nobody will). Only after `ended` forgot its connection and
    /// its last RST left: a connection that an abort or a close ended between two polls stays
    /// (with its socket) until the next poll sends what it has and calls `ended`, or the
    /// 4-tuple would stay taken for good and the RST unsent.
    private func releaseIfDone(_ socket: TCPSocket) {
        guard let entry = sockets[socket], entry.closedByApplication, entry.offload == nil,
              entry.connection.state == .closed, entry.connection.pendingReset == nil,
              connections[entry.connection.id] !== entry,
              entry.buffers.isEmpty, entry.completions.isEmpty, entry.connection.completions.isEmpty,
              entry.discardsInput || entry.connection.receiveBuffer.isEmpty
        else { return }
        sockets[socket] = nil
    }

    private func ephemeralID(to remote: IPv4Address, port remotePort: UInt16) throws(TCPError) -> TCPConnectionID {
        let range = configuration.ephemeralPorts
        let span = Int(range.upperBound) - Int(range.lowerBound) + 1
        let start = Int(random.next() % UInt64(span))
        for i in 0..<span {
            let port = UInt16(Int(range.lowerBound) + (start + i) % span)
            let id = TCPConnectionID(local: address, localPort: port, remote: remote, remotePort: remotePort)
            if connections[id] == nil && listeners[port] == nil { return id }
        }
        throw .noEphemeralPort
    }
}
