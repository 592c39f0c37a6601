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
    private let messages: SPSCRing<SoftwareMessage>
    private let policy: Policy
    /// Actions decided so far, so later packets of a flow are processed like its first.
    public private(set) var actions: [FlowKey: FlowAction] = [:]
    public private(set) var processed: UInt64 = 0
    public private(set) var dropped: [String: UInt64] = [:]

    public init(exceptions: SPSCRing<ExceptionItem>, messages: SPSCRing<SoftwareMessage>, processing: Processing,
                policy: @escaping Policy) {
        self.exceptions = exceptions
        self.messages = messages
        self.processing = processing
        self.policy = policy
    }

    /// Handles up to `max` packets. Returns how many (0 when there was nothing to do or the
    /// re-insertion queue is full). A packet is taken only when the queue has room for what
    /// it may send (an install and the packet), so nothing is ever held back or lost.
    @discardableResult
    public func step(max: Int = 32) -> Int {
        var done = 0
        while done < max, messages.capacity - messages.count >= 2, let item = exceptions.pop() {
            handle(item)
            done += 1
        }
        return done
    }

    private func send(_ message: consuming SoftwareMessage) {
        // Room was checked before the packet was taken; only this thread adds.
        if messages.push(message) != nil { preconditionFailure("SlowPath: re-insertion queue overfilled") }
    }

    private func handle(_ item: consuming ExceptionItem) {
        processed &+= 1
        let countedFlow = item.countedFlow
        let key = item.key
        let reason = item.reason
        let buffer = item.buffer
        guard let key, reason == .miss || reason == .doNotUse || reason == .tableFull else {
            return reinsertDrop(buffer, countedFlow, "\(reason)")
        }
        let action: FlowAction
        if let known = actions[key] {
            action = known
        } else {
            action = policy(key) ?? .drop
            actions[key] = action
        }
        // The first packet also carries the entry's action to the engine, ahead of itself.
        if reason == .miss { send(.install(key, action)) }
        reinsert(buffer, countedFlow, action)
    }

    private func reinsert(_ buffer: consuming PacketBuffer, _ countedFlow: FlowKey?, _ action: FlowAction) {
        guard case .forward(let forward) = action else { return reinsertDrop(buffer, countedFlow, "policy") }
        if processing == .partial, countedFlow != nil {
            return send(.reinsert(Reinsertion(buffer: buffer, verdict: .complete, countedFlow: countedFlow)))
        }
        let frame = buffer
        guard SlowPath.rewrite(frame.mutableBytes, forward) else {
            return reinsertDrop(frame, countedFlow, "ttl-exceeded")
        }
        send(.reinsert(Reinsertion(buffer: frame, verdict: .transmit(port: forward.outputPort), countedFlow: countedFlow)))
    }

    private func reinsertDrop(_ buffer: consuming PacketBuffer, _ countedFlow: FlowKey?, _ reason: String) {
        dropped[reason, default: 0] += 1
        send(.reinsert(Reinsertion(buffer: buffer, verdict: .drop(reason), countedFlow: countedFlow)))
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
