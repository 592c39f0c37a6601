import OffloadCore

/// A datagram as the application sees it.
public struct UDPDatagram: Hashable, Sendable {
    public var peer: IPv4Address
    public var peerPort: UInt16
    public var payload: [UInt8]

    public init(peer: IPv4Address, peerPort: UInt16, payload: [UInt8]) {
        self.peer = peer
        self.peerPort = peerPort
        self.payload = payload
    }
}

public enum UDPError: Error, Hashable, Sendable, CustomStringConvertible {
    case portInUse(UInt16)
    case notBound(UInt16)
    /// More than fits in one unfragmented datagram on the link.
    case tooLarge(bytes: Int, limit: Int)
    /// The send queue is full; try again after the host has run.
    case sendQueueFull(limit: Int)
    /// The host was stopped (its runtime ended): nothing more arrives.
    case stopped
    /// The task waiting for a datagram was cancelled.
    case cancelled

    public var description: String {
        switch self {
        case .portInUse(let p): "UDP port \(p) is already bound"
        case .notBound(let p): "UDP port \(p) is not bound"
        case .tooLarge(let n, let limit): "a \(n)-byte datagram does not fit the link (at most \(limit) bytes)"
        case .sendQueueFull(let limit): "UDP send queue full (\(limit) datagrams waiting)"
        case .stopped: "the host was stopped: nothing more arrives"
        case .cancelled: "the waiting task was cancelled"
        }
    }
}

/// The host's UDP: bound ports with bounded receive queues (a datagram that finds its queue
/// full is dropped and counted, as a socket buffer would), and a bounded queue of datagrams
/// to send, which the host sends at its next poll. Without I/O, like the TCP.
public struct UDPSockets: Sendable {
    public struct Counters: Hashable, Sendable {
        public var datagramsReceived: UInt64 = 0
        public var datagramsSent: UInt64 = 0
        /// For a port nobody bound.
        public var droppedNoPort: UInt64 = 0
        /// The port's receive queue was full.
        public var droppedQueueFull: UInt64 = 0
        public init() {}
    }

    struct Port {
        var queue: [UDPDatagram] = []
        var head = 0
        let capacity: Int
        var count: Int { queue.count - head }
    }

    /// Payload bytes at most (an MTU of 1500 less the IPv4 and UDP headers).
    public let maximumPayload: Int
    public let sendQueueLimit: Int
    public private(set) var counters = Counters()
    private var ports: [UInt16: Port] = [:]
    var outgoing: [(localPort: UInt16, UDPDatagram)] = []

    public init(maximumPayload: Int = 1472, sendQueueLimit: Int = 1024) {
        self.maximumPayload = maximumPayload
        self.sendQueueLimit = sendQueueLimit
    }

    /// Receives datagrams to `port`, keeping at most `capacity` unread.
    public mutating func bind(port: UInt16, capacity: Int = 256) throws(UDPError) {
        guard ports[port] == nil else { throw .portInUse(port) }
        ports[port] = Port(capacity: max(1, capacity))
    }

    /// Unbinds; unread datagrams are dropped.
    public mutating func unbind(port: UInt16) { ports[port] = nil }

    /// Queues a datagram from `port` (bound) to `peer`; it leaves at the host's next poll.
    public mutating func send(from port: UInt16, _ datagram: UDPDatagram) throws(UDPError) {
        guard ports[port] != nil else { throw .notBound(port) }
        guard datagram.payload.count <= maximumPayload else {
            throw .tooLarge(bytes: datagram.payload.count, limit: maximumPayload)
        }
        guard outgoing.count < sendQueueLimit else { throw .sendQueueFull(limit: sendQueueLimit) }
        outgoing.append((port, datagram))
    }

    /// Whether a datagram to `port` waits to be read.
    public func hasDatagram(port: UInt16) -> Bool { (ports[port]?.count ?? 0) > 0 }

    /// The oldest unread datagram to `port`, or nil.
    public mutating func receive(port: UInt16) -> UDPDatagram? {
        guard var p = ports[port], p.count > 0 else { return nil }
        let datagram = p.queue[p.head]
        p.head += 1
        if p.head == p.queue.count {
            p.queue.removeAll(keepingCapacity: true)
            p.head = 0
        }
        ports[port] = p
        return datagram
    }

    /// Takes one arriving datagram.
    mutating func deliver(to port: UInt16, _ datagram: UDPDatagram) {
        guard var p = ports[port] else {
            counters.droppedNoPort &+= 1
            return
        }
        guard p.count < p.capacity else {
            counters.droppedQueueFull &+= 1
            return
        }
        p.queue.append(datagram)
        ports[port] = p
        counters.datagramsReceived &+= 1
    }

    /// Hands every queued datagram to `send`, oldest first.
    mutating func flush(_ send: (UInt16, UDPDatagram) -> Void) {
        for (port, datagram) in outgoing { send(port, datagram) }
        counters.datagramsSent &+= UInt64(outgoing.count)
        outgoing.removeAll(keepingCapacity: true)
    }

    public var hasOutput: Bool { !outgoing.isEmpty }
}
