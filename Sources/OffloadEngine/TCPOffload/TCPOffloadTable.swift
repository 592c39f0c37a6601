import OffloadCore
import OffloadTCP

/// The engine's offloaded TCP connections (seed 003): a fixed number of slots, each holding
/// a connection's state machine (its control block, T2, and its message contexts, T3), the
/// flow its segments arrive on and the headers its segments leave with. A connection-table
/// entry `offloadedTCP(slot:)` sends the flow's segments here.
public final class TCPOffloadTable {
    struct Slot {
        var connection: TCPConnection
        var host: UInt32
        var headers: TCPFrameHeaders
        var port: UInt16
        /// The application closed: the connection goes back once its data is acknowledged.
        var closing = false
        /// The MSS both sides allow, before options: what a TSO piece and its options share.
        var segmentSizeLimit: UInt16

        /// The flow of the connection's incoming segments (from the headers it sends with).
        var key: FlowKey {
            let id = connection.id
            return FlowKey(ingressPort: port, protocol: 6, source: headers.destination, destination: headers.source,
                           sourcePort: id.remotePort, destinationPort: id.localPort)
        }
    }

    public let capacity: Int
    var slots: [Slot?]
    private var free: [UInt32]
    /// Slot by the host's name for the connection (for the host's commands).
    var byHost: HostSlotIndex
    /// Which connections the engine's poll visits.
    var schedule: TCPOffloadSchedule
    /// IPv4 identification of the engine's segments.
    var identification: UInt16 = 0
    /// Events for the host (engine to host).
    public let events: SPSCRing<TCPOffloadEvent>
    /// Offload and upload answers that found the ring full, in order, sent before anything
    /// else (rare: completions leave the ring a reserve, and the host drains it every turn).
    private var overflow: [TCPOffloadEvent] = []
    public internal(set) var counters = TCPOffloadCounters()
    /// Where a segment's headers are built (engine memory; the payload stays in the host's).
    let headerScratch: UnsafeMutableRawBufferPointer

    init(capacity: Int, eventCapacity: Int) {
        self.capacity = capacity
        slots = Array(repeating: nil, count: capacity)
        free = (0..<UInt32(capacity)).reversed()
        byHost = HostSlotIndex(capacity: capacity)
        schedule = TCPOffloadSchedule(capacity: capacity)
        events = SPSCRing(capacity: eventCapacity)
        headerScratch = .allocate(byteCount: TCPFrameHeaders.maximumLength, alignment: 16)
    }

    deinit { headerScratch.deallocate() }

    /// Connections the engine runs now.
    public var count: Int { byHost.count }

    /// The connection in a slot, if any (for tests and reports).
    public func connection(host: UInt32) -> TCPConnection? {
        byHost[host].flatMap { slots[Int($0)]?.connection }
    }

    /// Sends an event to the host, behind any that wait.
    func emit(_ event: TCPOffloadEvent) {
        if overflow.isEmpty, events.push(event) == nil { return }
        overflow.append(event)
        counters.eventsDelayed &+= 1
    }

    /// Sends the events that waited, as far as the ring has room.
    func flushOverflow() {
        var sent = 0
        while sent < overflow.count, events.push(overflow[sent]) == nil { sent += 1 }
        if sent > 0 { overflow.removeFirst(sent) }
    }

    /// Completion events the ring has room for beside the reserve kept for offload and
    /// upload answers.
    var completionRoom: Int {
        overflow.isEmpty ? max(0, events.capacity - events.count - min(64, events.capacity / 4)) : 0
    }

    /// Whether a connection needs a visit without waiting for a timer: it has something to
    /// send, or something happened to it since the last poll.
    public var hasOutput: Bool { schedule.readyCount > 0 }

    /// The earliest timer of the offloaded connections.
    public var nextDeadline: Instant? { schedule.nextDeadline() }

    /// Engine memory per offloaded connection, message contexts (the send queue's
    /// descriptors) aside: the control block (T2), the slot around it and the connection's
    /// table entry. The slot counts the bookkeeping of the poll (`TCPOffloadSchedule`) and of
    /// the host's names (`HostSlotIndex`) too. (What the state machine object keeps beside
    /// its control block, its flags and its queues' headers, is measured by `offload bench`.)
    public static var bytesPerConnection: (total: Int, controlBlock: Int, slot: Int, entry: Int) {
        let block = MemoryLayout<TCPControlBlock>.size
        // The slot's place in `slots` and in the free list, the connection's reference aside
        // (the object is the control block's and the queues').
        let slot = MemoryLayout<Slot?>.stride - MemoryLayout<TCPConnection>.size + MemoryLayout<UInt32>.stride
            + TCPOffloadSchedule.bytesPerConnection + HostSlotIndex.bytesPerConnection
        let entry = MemoryLayout<FlowEntry>.stride
        return (block + slot + entry, block, slot, entry)
    }

    func adopt(_ request: TCPOffloadRequest) -> UInt32? {
        guard byHost[request.host] == nil, let slot = free.popLast() else { return nil }
        let constant = request.connection.block.constant
        slots[Int(slot)] = Slot(connection: request.connection, host: request.host, headers: request.headers,
                                port: request.port,
                                segmentSizeLimit: UInt16(clamping: min(constant.localMSS, constant.remoteMSS)))
        byHost.insert(host: request.host, slot: slot)
        schedule.markReady(slot)
        return slot
    }

    func release(_ slot: UInt32) -> Slot? {
        guard let s = slots[Int(slot)] else { return nil }
        slots[Int(slot)] = nil
        byHost.remove(host: s.host)
        // A ready mark may stay: a visit to an empty slot is skipped.
        schedule.forget(slot)
        free.append(slot)
        return s
    }
}

/// What the engine's TCP did.
public struct TCPOffloadCounters: Sendable, Equatable, CounterTable {
    public var offloaded: UInt64 = 0
    public var uploads = ReasonCounters<TCPUploadReason>()
    public var payloadBytesReceived: UInt64 = 0
    /// Segments received with data or a FIN: what the application may have to read.
    public var segmentsForTheApplication: UInt64 = 0
    public var segmentsSent: UInt64 = 0
    /// Payload bytes sent, retransmissions included: gathered from the application's
    /// buffers, never copied by the engine.
    public var payloadBytesSent: UInt64 = 0
    /// Of the segments sent, TSO super-segments the device cuts up.
    public var superSegmentsSent: UInt64 = 0
    public var messagesPosted: UInt64 = 0
    /// Posts for a connection that had ended in the engine (it is on its way back to the host).
    public var postsRefused: UInt64 = 0
    public var messagesCompleted: UInt64 = 0
    /// Segments dropped before the state machine: a bad checksum or a malformed header.
    public var segmentsDropped: UInt64 = 0
    /// Segments the link refused (the state machine sends them again).
    public var transmitFailures: UInt64 = 0
    /// Offload and upload answers that waited for room in the events ring.
    public var eventsDelayed: UInt64 = 0
    /// Times a connection's completions waited, all or some, for room in the events ring.
    public var completionsDelayed: UInt64 = 0

    public init() {}

    public var rows: [(String, UInt64)] {
        [("tcp offload: connections offloaded", offloaded),
         ("tcp offload: payload bytes received", payloadBytesReceived),
         ("tcp offload: segments with data or a FIN", segmentsForTheApplication),
         ("tcp offload: segments sent", segmentsSent),
         ("tcp offload: payload bytes sent", payloadBytesSent),
         ("tcp offload: super-segments sent (TSO)", superSegmentsSent),
         ("tcp offload: messages posted", messagesPosted),
         ("tcp offload: posts refused", postsRefused),
         ("tcp offload: messages completed", messagesCompleted),
         ("tcp offload: segments dropped", segmentsDropped),
         ("tcp offload: transmit failures", transmitFailures),
         ("tcp offload: events delayed", eventsDelayed),
         ("tcp offload: completions delayed", completionsDelayed)]
            + uploads.rows("tcp offload: uploaded, ")
    }
}
