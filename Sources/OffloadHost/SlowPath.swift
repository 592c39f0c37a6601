import OffloadCore
import OffloadEngine
import OffloadWire

/// The software side of seed 000: takes packets from the engine's exception queue in
/// arrival order, builds the entry for a new flow (the policy decides its action), processes
/// each packet completely or partially (B6), and re-inserts it.
public final class SlowPath {
    /// B6: who finishes a forwarded packet. Both give byte-identical frames.
    public enum Processing: Sendable {
        /// The software rewrites headers, TTL and checksums; the engine only transmits.
        case complete
        /// The software decides; the engine completes the packet with the entry's action.
        case partial
    }

    /// What to do with a new flow: its action, or nil to drop it.
    public typealias Policy = (FlowKey) -> FlowAction?

    public let processing: Processing
    private let exceptions: SPSCRing<ExceptionItem>
    private let queue: ReinsertionQueue
    private let policy: Policy
    /// Actions decided so far, so later packets of a flow are processed like its first.
    public private(set) var actions: [FlowKey: FlowAction] = [:]
    static let actionCacheLimit = 65_536
    public private(set) var processed: UInt64 = 0
    public private(set) var dropped: [String: UInt64] = [:]

    public init(exceptions: SPSCRing<ExceptionItem>, reinsertion: ReinsertionQueue, processing: Processing,
                policy: @escaping Policy) {
        self.exceptions = exceptions
        self.queue = reinsertion
        self.processing = processing
        self.policy = policy
    }

    /// Handles up to `max` packets. Returns how many (0 when there was nothing to do or the
    /// re-insertion queue is full). A packet is taken only when the queue has room for what
    /// it may send (an install and the packet), so nothing is ever held back or lost.
    @discardableResult
    public func step(max: Int = 32) -> Int {
        var done = 0
        while done < max, queue.room >= 2, let item = exceptions.pop() {
            handle(item)
            done += 1
        }
        return done
    }

    private func send(_ message: consuming SoftwareMessage) {
        // Room was checked before the packet was taken; only this thread adds.
        queue.send(message)
    }

    private func handle(_ item: consuming ExceptionItem) {
        processed &+= 1
        let key = item.key
        let reason = item.reason
        let origin = Origin(countedFlow: item.countedFlow, mark: item.mark, ingressPort: item.ingressPort)
        let buffer = item.buffer
        guard let key, reason == .miss || reason == .doNotUse || reason == .tableFull else {
            return reinsertDrop(buffer, origin, "\(reason)")
        }
        let action: FlowAction
        if reason != .miss, let known = actions[key] {
            action = known
        } else {
            // A miss is a new entry: the policy decides afresh (it may have changed). The
            // cache only serves the flow's later packets that reach the software meanwhile,
            // so it is emptied when it grows large rather than tracking the engine's expiry.
            if actions.count >= SlowPath.actionCacheLimit { actions.removeAll(keepingCapacity: true) }
            var decided = policy(key) ?? .drop
            // B8: a UDP flow whose first packet is RTP gets its statistics kept by the engine.
            if key.protocol == 17, case .forward(var forward) = decided, SlowPath.carriesRTP(buffer.bytes) {
                forward.carriesRTP = true
                decided = .forward(forward)
            }
            action = decided
            actions[key] = action
        }
        // The first packet also carries the entry's action to the engine, ahead of itself.
        if reason == .miss { send(.install(key, action)) }
        reinsert(buffer, origin, action)
    }

    /// What a re-inserted packet carries back from its exception item.
    struct Origin {
        let countedFlow: FlowKey?
        let mark: AuditMark?
        let ingressPort: UInt16

        func reinsertion(_ buffer: consuming PacketBuffer, _ verdict: Reinsertion.Verdict) -> SoftwareMessage {
            .reinsert(Reinsertion(buffer: buffer, verdict: verdict, countedFlow: countedFlow, mark: mark,
                                  ingressPort: ingressPort))
        }
    }

    private func reinsert(_ buffer: consuming PacketBuffer, _ origin: Origin, _ action: FlowAction) {
        guard case .forward(let forward) = action else { return reinsertDrop(buffer, origin, "policy") }
        if processing == .partial, origin.countedFlow != nil {
            return send(origin.reinsertion(buffer, .complete))
        }
        let frame = buffer
        guard SlowPath.rewrite(frame.mutableBytes, forward) else {
            return reinsertDrop(frame, origin, "ttl-exceeded")
        }
        send(origin.reinsertion(frame, .transmit(port: forward.outputPort)))
    }

    private func reinsertDrop(_ buffer: consuming PacketBuffer, _ origin: Origin, _ reason: String) {
        dropped[reason, default: 0] += 1
        send(origin.reinsertion(buffer, .drop(reason)))
    }

    /// Whether an Ethernet + IPv4 + UDP frame's payload is RTP.
    static func carriesRTP(_ frame: UnsafeRawBufferPointer) -> Bool {
        guard let ethernet = try? EthernetFrame(checking: frame), let ip = try? IPv4Packet(checking: ethernet.payload),
              let udp = try? UDPPacket(checking: ip.payload) else { return false }
        return RTPFlowStatistics.looksLikeRTP(udp.payload)
    }

    /// Complete processing in software: MACs, NAT addresses and ports, TTL, and every
    /// checksum recomputed from scratch. False when TTL would reach 0.
    static func rewrite(_ frame: UnsafeMutableRawBufferPointer, _ forward: FlowAction.Forward) -> Bool {
        guard let ethernet = try? MutableEthernetFrame(checking: frame),
              let ip = try? MutableIPv4Packet(checking: ethernet.payload) else { return false }
        let packet = ip.packet
        guard packet.timeToLive > 1 else { return false }
        ethernet.setDestination(forward.destinationMAC)
        ethernet.setSource(forward.sourceMAC)
        ip.setTimeToLive(packet.timeToLive - 1)
        if let a = forward.translatedSource { ip.setSource(a) }
        if let a = forward.translatedDestination { ip.setDestination(a) }
        ip.fillChecksum()
        let source = ip.packet.source, destination = ip.packet.destination
        switch packet.protocol {
        case .udp:
            guard let udp = try? MutableUDPPacket(checking: ip.payload) else { return true }
            if let p = forward.translatedSourcePort { udp.setSourcePort(p) }
            if let p = forward.translatedDestinationPort { udp.setDestinationPort(p) }
            if udp.packet.checksum != 0 { udp.fillChecksum(source: source, destination: destination) }
        case .tcp:
            guard let tcp = try? MutableTCPPacket(checking: ip.payload) else { return true }
            if let p = forward.translatedSourcePort { tcp.setSourcePort(p) }
            if let p = forward.translatedDestinationPort { tcp.setDestinationPort(p) }
            tcp.fillChecksum(source: source, destination: destination)
        default:
            break
        }
        return true
    }
}
