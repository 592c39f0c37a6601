import OffloadCore
import OffloadEngine
import OffloadLink
import OffloadTCP

/// The software of a host behind the engine: every frame for the host reaches it through
/// the exception queue (a TCP or UDP flow to the host's address gets a `deliver` entry, so
/// its packets come as local deliveries; ARP comes as frames that are no flow), the host
/// (ARP, ICMP, UDP, TCP) takes it, and what the host sends leaves through the engine's
/// transmit path as frames the software originates.
///
/// With offload (seed 003) it is also the host's TCP's way to the engine (`TCPOffloadPort`):
/// established connections move to the engine's TCP, their segments go there straight from
/// the connection table, and the engine's events (completions, uploads) come back here.
public final class HostPolicy: SlowPathPolicy {
    public let host: IPv4Host
    private let clock: any Clock
    /// The port the host's link is on the engine.
    private let port: UInt16
    /// Connection ids of `deliver` entries, given out in order.
    private var nextConnection: UInt32 = 1
    private let offload: Offload?
    /// TCP payload bytes the software copied into frames of its own (segments of connections
    /// it runs itself); an offloaded transfer adds none (T3).
    public private(set) var payloadBytesCopied: UInt64 = 0

    /// The engine's side of offload: where commands go and events come from.
    final class Offload {
        let commands: ReinsertionQueue
        let events: SPSCRing<TCPOffloadEvent>
        /// Offloaded flows, by key and by the host's name for the connection.
        var flows: [FlowKey: UInt32] = [:]
        var keys: [UInt32: FlowKey] = [:]
        /// Commands waiting for room in the queue, in order.
        var waiting: [TCPOffloadCommand] = []

        init(commands: ReinsertionQueue, events: SPSCRing<TCPOffloadEvent>) {
            self.commands = commands
            self.events = events
        }
    }

    /// `offloadTo`: the engine whose TCP takes the host's established connections, or nil
    /// to keep them all in software.
    public init<P: Link & ~Copyable>(host: IPv4Host, clock: any Clock, port: UInt16 = 0, offloadTo engine: Engine<P>?) {
        self.host = host
        self.clock = clock
        self.port = port
        offload = engine.map { Offload(commands: $0.reinsertion, events: $0.tcp.events) }
        if offload != nil { host.tcp?.offloadPort = self }
    }

    public convenience init(host: IPv4Host, clock: any Clock, port: UInt16 = 0) {
        self.init(host: host, clock: clock, port: port, offloadTo: Optional<Engine<MemoryLink>>.none)
    }

    public func decide(_ key: FlowKey, send: Originate) -> FlowDecision {
        guard key.destination == host.address else { return .install(.drop) }
        // An offloaded flow's entry is the engine's; its packet goes on as a local one.
        if offload?.flows[key] != nil { return .local }
        // 31 bits: the top one marks an engine's own connection in the entry.
        defer { nextConnection = nextConnection == 0x7fff_ffff ? 1 : nextConnection + 1 }
        return .install(.deliver(connection: nextConnection))
    }

    public func answer(_ frame: UnsafeMutableRawBufferPointer, ingressPort: UInt16, send: Originate) -> LocalAnswer {
        if let offload {
            takeEvents(offload)
            // A segment that reached the software while its connection moved to the engine:
            // back to the engine, in its turn, to go on to the connection there. The offload
            // goes first if it still waits (the slow path keeps room for this packet's own
            // messages, of which a local answer uses one).
            if let key = FlowKey(frame: UnsafeRawBufferPointer(frame), port: ingressPort), offload.flows[key] != nil {
                flush(offload, keeping: 1)
                return .toEngine
            }
        }
        host.receive(frame: UnsafeRawBufferPointer(frame), offload: .none, now: clock.now) { header, payload in
            originate(header, payload, send: send)
        }
        if host.takeNeighborMove(), let offload { retargetOffloaded(offload) }
        return .consumed
    }

    /// Frames the host may send per poll: about as many as the engine reads per burst, so
    /// that a sender does not write far faster than it reads its ACKs (a TAP's queue towards
    /// us is short, and the ACKs it drops cost timeouts).
    public var framesPerPoll = 64

    public func poll(send: Originate, room: Int) {
        if let offload {
            takeEvents(offload)
            flush(offload)
        }
        host.poll(now: clock.now, budget: min(room, framesPerPoll)) { header, payload in
            originate(header, payload, send: send)
        }
    }

    /// Whether the engine has told the software something it has not taken yet.
    public var hasEvents: Bool { hasEngineEvents || !(offload?.waiting.isEmpty ?? true) }

    /// Whether the engine has left events in its ring; safe from any thread.
    public var hasEngineEvents: Bool { (offload?.events.count ?? 0) > 0 }

    /// A frame of the host's, headers and payload slices copied into a buffer of the
    /// software's own (a frame that finds none is counted by the slow path and lost, as on a
    /// full device). Offloaded connections' segments leave from the engine without this copy.
    private func originate(_ header: UnsafeRawBufferPointer, _ payload: PayloadSlices, send: Originate) {
        payloadBytesCopied &+= UInt64(payload.byteCount)
        send(port) { buffer in
            let length = header.count + payload.byteCount
            guard length <= buffer.count, let base = buffer.baseAddress else { return 0 }
            buffer.copyMemory(from: header)
            var at = header.count
            for slice in payload.slices where slice.count > 0 {
                (base + at).copyMemory(from: slice.baseAddress!, byteCount: slice.count)
                at += slice.count
            }
            return length
        }
    }

    // MARK: Offload

    private func takeEvents(_ offload: Offload) {
        guard let tcp = host.tcp else { return }
        while let event = offload.events.pop() {
            switch event {
            case .offloaded:
                break
            case .completed(let id, let range):
                tcp.offloadDidComplete(host: id, range)
            case .uploaded(let id, let connection, let reason):
                if let key = offload.keys.removeValue(forKey: id) { offload.flows[key] = nil }
                // Posts still waiting here are queued on the connection by the stack.
                offload.waiting.removeAll { if case .post(id, _) = $0 { true } else { false } }
                tcp.offloadDidUpload(host: id, connection, forSegment: reason == .reset, now: clock.now)
            }
        }
    }

    /// A neighbour answers from a new MAC address: the engine's connections to it (or
    /// through it) send there from now on. Their headers were copied at offload, so the
    /// engine learns of a move only from the host; a move is rare, so every offloaded
    /// connection is told its next hop again.
    private func retargetOffloaded(_ offload: Offload) {
        for (id, key) in offload.keys.sorted(by: { $0.key < $1.key }) {
            guard let headers = host.frameHeaders(to: key.source, now: clock.now) else { continue }
            command(.nextHop(host: id, headers.destinationMAC), offload)
        }
    }

    /// Sends a command, behind any that wait; the slow path's reserve for a packet in hand
    /// stays free.
    private func command(_ command: TCPOffloadCommand, _ offload: Offload) {
        offload.waiting.append(command)
        flush(offload)
    }

    /// Sends waiting commands while the queue has more room than `keeping`: by default the
    /// slow path's reserve for a packet it may take.
    private func flush(_ offload: Offload, keeping: Int = SlowPath.messagesPerPacket) {
        var sent = 0
        while sent < offload.waiting.count && offload.commands.room > keeping {
            offload.commands.send(.tcp(offload.waiting[sent]))
            sent += 1
        }
        if sent > 0 { offload.waiting.removeFirst(sent) }
    }
}

extension HostPolicy: TCPOffloadPort {
    public func offload(_ connection: TCPConnection, as id: UInt32, now: Instant) -> Bool {
        let c = connection.id
        guard let offload, let headers = host.frameHeaders(to: c.remote, now: now) else { return false }
        let key = FlowKey(ingressPort: port, protocol: 6, source: c.remote, destination: c.local,
                          sourcePort: c.remotePort, destinationPort: c.localPort)
        offload.flows[key] = id
        offload.keys[id] = key
        command(.offload(TCPOffloadRequest(host: id, key: key, connection: connection, headers: headers, port: port)),
                offload)
        return true
    }

    public func post(_ bytes: UnsafeRawBufferPointer, to id: UInt32) {
        if let offload { command(.post(host: id, bytes: bytes), offload) }
    }

    public func applicationRead(_ id: UInt32) {
        if let offload { command(.windowOpened(host: id), offload) }
    }

    public func upload(_ id: UInt32) {
        if let offload { command(.upload(host: id), offload) }
    }

    public func close(_ id: UInt32) {
        if let offload { command(.close(host: id), offload) }
    }

    public func pathMTUDecreased(_ id: UInt32, mtu: Int, quotedSequence: UInt32?) {
        if let offload { command(.pathMTU(host: id, mtu: mtu, quotedSequence: quotedSequence), offload) }
    }
}
