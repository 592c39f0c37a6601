import OffloadCore
import OffloadEngine
import OffloadWire

/// The gateway's software decisions (the slow path's policy): route by destination,
/// source-NAT flows that leave by the outside port, translate replies to the outside
/// address back to the inside host that owns the port, resolve next hops with ARP (and
/// answer ARP for its own addresses), answer ICMP echo to its addresses, and say which
/// flows are unreachable so the slow path answers them with ICMP errors.
public final class GatewayPolicy: SlowPathPolicy {
    public struct Port: Sendable {
        public var address: IPv4CIDR
        public var hardwareAddress: MACAddress

        public init(address: IPv4CIDR, hardwareAddress: MACAddress) {
            self.address = address
            self.hardwareAddress = hardwareAddress
        }
    }

    public let ports: [Port]
    public private(set) var routes: RouteTable
    /// The port that faces the outside, and the NAT behind it; nil routes without NAT.
    public let outsidePort: UInt16?
    public private(set) var nat: NAT44?
    /// The ARP cache of each port.
    public private(set) var neighbors: [NeighborCache]
    public private(set) var counters = GatewayCounters()
    private let clock: any Clock
    private var icmpErrors: TokenBucket
    /// ARP timers run at most this often.
    private static let timerInterval = Duration.milliseconds(50)
    private var nextTimers = Instant.zero
    /// The actions of fragmented datagrams, for their later fragments.
    private var fragments = FragmentTranslation()
    /// A neighbour's MAC address changed since the slow path last asked (`takeNeighborChange`).
    private var neighborMoved = false
    /// Whether the engine's translation notices reach `noteTranslation` (so idle NAT
    /// mappings may be freed).
    private var countsNATEntries = false

    /// `nat` shapes the NAT behind `outsidePort` (its outside address is that port's own).
    /// Its mappings are freed only if the engine announces its translating entries
    /// (`Engine.Configuration.announcesTranslations`): without the notices nothing says a
    /// mapping is unused, and it is kept.
    public init(ports: [Port], routes: RouteTable, outsidePort: UInt16?, clock: any Clock,
                neighbors: NeighborCache.Configuration = .init(), icmpErrorsPerSecond: Int = 1000,
                nat: NATSettings = .init()) {
        self.ports = ports
        self.routes = routes
        self.outsidePort = outsidePort
        self.clock = clock
        self.neighbors = Array(repeating: NeighborCache(configuration: neighbors), count: ports.count)
        icmpErrors = TokenBucket(perSecond: icmpErrorsPerSecond, burst: max(1, icmpErrorsPerSecond / 20), now: clock.now)
        if let outside = outsidePort {
            self.nat = NAT44(outsideAddress: ports[Int(outside)].address.address, ports: nat.ports, linger: nat.linger)
        }
    }

    /// The NAT's outside ports and how long a mapping outlives its last entry.
    public struct NATSettings: Sendable {
        public var ports: ClosedRange<UInt16>
        public var linger: Duration

        public init(ports: ClosedRange<UInt16> = 1024...65535, linger: Duration = .seconds(90)) {
            self.ports = ports
            self.linger = linger
        }
    }

    /// Why a port forward could not be made.
    public enum PortForwardError: Error, Equatable, Sendable, CustomStringConvertible {
        /// The gateway has no NAT (no outside port): there is no outside address to forward from.
        case noNAT
        /// The outside port, or the inside end, is forwarded already.
        case alreadyForwarded(protocol: UInt8, port: UInt16)
        /// The inside end is not a host inside: one of the gateway's own addresses, or an
        /// address no inside port routes to (the outside's, or none).
        case notInside(IPv4Address)

        public var description: String {
            switch self {
            case .noNAT: "a port forward needs the NAT (an outside port)"
            case .notInside(let address):
                "\(address) is not a host inside: a port forward leads to an address an inside port routes to"
            case .alreadyForwarded(let p, let port):
                "\(p == 6 ? "tcp" : p == 17 ? "udp" : "protocol \(p)") port \(port), or its inside end, is forwarded already"
            }
        }
    }

    /// Forwards TCP or UDP (`protocol` 6 or 17) that comes to the NAT's outside address at
    /// `outsidePort` to `address`:`port` inside (destination NAT: a server behind the
    /// gateway); what that server sends from its port leaves from `outsidePort`.
    public func forwardPort(protocol proto: UInt8, outsidePort: UInt16, to address: IPv4Address,
                            port: UInt16) throws(PortForwardError) {
        guard nat != nil else { throw .noNAT }
        guard !ports.contains(where: { $0.address.address == address }),
              let (egress, _) = routes.nextHop(for: address), egress != self.outsidePort, Int(egress) < ports.count else {
            throw .notInside(address)
        }
        do throws(NAT44.Failure) {
            try nat!.forward(outsidePort: outsidePort, to: NAT44.Inside(protocol: proto, address: address, port: port))
        } catch {
            throw .alreadyForwarded(protocol: proto, port: outsidePort)
        }
    }

    /// Records a neighbour that never expires, and that ARP does not change (a static ARP entry).
    public func addNeighbor(port: UInt16, address: IPv4Address, hardwareAddress: MACAddress) {
        neighbors[Int(port)].addPermanent(address, is: hardwareAddress)
    }

    // MARK: New flows

    public func decide(_ key: FlowKey, send: Originate) -> FlowDecision {
        let icmp = key.protocol == IPProtocol.icmp.rawValue
        // ICMP through the NAT is translated one message at a time (`ICMPTranslation`).
        if icmp, key.ingressPort == outsidePort, let nat, key.destination == nat.outsideAddress { return .local }
        var destination = key.destination
        var translatedDestination: (IPv4Address, UInt16)?
        // Hairpinning (RFC 4787 REQ-9, RFC 5382 REQ-8): an inside host that sends to a
        // mapping of another (or its own) reaches it, from its own mapping, as an outside
        // host would.
        let hairpin = key.ingressPort != outsidePort && isTranslatedTransport(key)
        if let nat, key.destination == nat.outsideAddress, key.ingressPort == outsidePort || hairpin,
           let inside = nat.reverse(protocol: key.protocol, outsidePort: key.destinationPort) {
            // A reply to a mapping: back to the inside host that owns the port.
            destination = inside.address
            translatedDestination = (inside.address, inside.port)
        } else if ports.contains(where: { $0.address.address == key.destination }) {
            // For the gateway itself: ICMP is answered here; nothing else listens.
            if icmp { return .install(.deliver(connection: 0)) }
            counters.notListening &+= 1
            return .unreachable(code: ICMPv4Packet.UnreachableCode.port, reason: "no-listener")
        } else if isBroadcast(key.destination) {
            // A directed broadcast: not forwarded (RFC 2644), so not resolved with ARP, and not
            // answered (RFC 1812 4.3.2.7).
            return .drop(reason: "directed-broadcast")
        }
        guard let (egress, hop) = routes.nextHop(for: destination), Int(egress) < ports.count,
              egress != key.ingressPort || translatedDestination != nil else {
            counters.noRoute &+= 1
            return .unreachable(code: ICMPv4Packet.UnreachableCode.network, reason: "no-route")
        }
        let now = clock.now
        guard let mac = neighbor(hop, on: egress, now: now, send: send) else {
            counters.waitedForNeighbor &+= 1
            return .wait(NextHop(port: egress, address: hop))
        }
        if icmp, egress == outsidePort, nat != nil {
            // Its answer comes back through the software too, which cannot hold it: the way
            // back is resolved while the message is on its way (a packet released from
            // waiting cannot wait again, so this one does not wait for it).
            if let (back, backHop) = routes.nextHop(for: key.source), Int(back) < ports.count {
                _ = neighbor(backHop, on: back, now: now, send: send)
            }
            return .local
        }
        var forward = FlowAction.Forward(outputPort: egress, destinationMAC: mac,
                                         sourceMAC: ports[Int(egress)].hardwareAddress)
        if let (address, port) = translatedDestination {
            forward.translatedDestination = address
            if key.protocol == 6 || key.protocol == 17 { forward.translatedDestinationPort = port }
        }
        if (translatedDestination == nil && egress == outsidePort || translatedDestination != nil && hairpin), nat != nil {
            let inside = NAT44.Inside(protocol: key.protocol, address: key.source, port: key.sourcePort)
            do {
                // In place: a copy of the NAT out of `self.nat` would copy its tables on
                // every new flow.
                let port = try nat!.map(inside, now: now)
                forward.translatedSource = nat!.outsideAddress
                if key.protocol == 6 || key.protocol == 17 { forward.translatedSourcePort = port }
            } catch {
                counters.natExhausted &+= 1
                return .unreachable(code: ICMPv4Packet.UnreachableCode.host, reason: "nat-ports-exhausted", transient: true)
            }
        }
        return .install(.forward(forward))
    }

    /// A NATed flow's replies are known in advance: they come back by the port the flow
    /// leaves by, to the translated addresses and ports. Their entry is decided like any
    /// flow's (the NAT's reply branch), and only installed when it forwards.
    public func replyFlow(of key: FlowKey, forward: FlowAction.Forward, send: Originate) -> (FlowKey, FlowAction)? {
        guard forward.translatedSource != nil || forward.translatedDestination != nil else { return nil }
        let reply = key.reply(to: forward)
        guard case .install(let action) = decide(reply, send: send), case .forward = action else { return nil }
        return (reply, action)
    }

    public func translationsWillBeAnnounced() { countsNATEntries = true }

    /// Counts the engine's entries per NAT mapping: an outgoing flow's entry translates to
    /// the mapping of its source, a reply's to the mapping its destination port is, and a
    /// hairpinned flow's to both.
    public func noteTranslation(_ notice: TranslationNotice) {
        for inside in natInside(of: notice.key) {
            if notice.began {
                nat!.entryBegan(inside)
            } else {
                nat!.entryEnded(inside, now: clock.now)
            }
        }
    }

    /// The mappings an entry for `key` translates with: its source's for a flow from the
    /// inside, its destination's for one to the outside address; a hairpinned flow both.
    private func natInside(of key: FlowKey) -> [NAT44.Inside] {
        guard let nat else { return [] }
        let toMapping = key.destination == nat.outsideAddress
            ? nat.reverse(protocol: key.protocol, outsidePort: key.destinationPort) : nil
        if key.ingressPort == outsidePort { return toMapping.map { [$0] } ?? [] }
        let own = NAT44.Inside(protocol: key.protocol, address: key.source, port: key.sourcePort)
        guard isTranslatedTransport(key), let toMapping else { return [own] }
        return [own, toMapping]
    }

    /// TCP and UDP: what hairpinning translates (their ports name the mappings).
    private func isTranslatedTransport(_ key: FlowKey) -> Bool { key.protocol == 6 || key.protocol == 17 }

    public func resolution(of hop: NextHop) -> ResolutionState {
        let cache = neighbors[Int(hop.port)]
        if cache.lookup(hop.address, now: clock.now) != nil { return .resolved }
        if case .incomplete? = cache.entries[hop.address] { return .pending }
        return .failed
    }

    public func poll(send: Originate, room: Int) {
        let now = clock.now
        guard now >= nextTimers else { return }
        nextTimers = now + Self.timerInterval
        if countsNATEntries { nat?.releaseIdle(now: now) }
        fragments.expire(now: now)
        for port in neighbors.indices {
            let (retry, failed) = neighbors[port].expire(now: now)
            for hop in retry { sendARPRequest(port: UInt16(port), for: hop, send: send) }
            counters.resolutionsFailed &+= UInt64(failed.count)
        }
    }

    /// The flows' entries hold their next hop's MAC address: when one changed, all of them
    /// are rebuilt (which ones forward to it is not known; a move is rare).
    public func takeNeighborChange() -> Bool {
        defer { neighborMoved = false }
        return neighborMoved
    }

    public func icmpErrorSource(port: UInt16) -> SoftwareInterface? {
        guard Int(port) < ports.count else { return nil }
        guard icmpErrors.take(now: clock.now) else {
            counters.icmpErrorsRateLimited &+= 1
            return nil
        }
        return SoftwareInterface(address: ports[Int(port)].address.address,
                                 hardwareAddress: ports[Int(port)].hardwareAddress)
    }

    // MARK: Packets for the gateway itself

    public func answer(_ frame: UnsafeMutableRawBufferPointer, ingressPort: UInt16, send: Originate) -> LocalAnswer {
        guard Int(ingressPort) < ports.count, let ethernet = try? EthernetFrame(checking: UnsafeRawBufferPointer(frame)) else {
            return .drop("malformed")
        }
        switch ethernet.etherType {
        case .arp: return answerARP(frame, port: ingressPort)
        case .ipv4:
            return translateFragment(frame, port: ingressPort, send: send)
                ?? translateICMP(frame, port: ingressPort, send: send) ?? answerEcho(frame, port: ingressPort)
        default: return .drop("unsupported-ethertype")
        }
    }

    /// RFC 826: learn from a packet about us (or update a known sender); answer a request
    /// for our address on that port, in place.
    private func answerARP(_ frame: UnsafeMutableRawBufferPointer, port: UInt16) -> LocalAnswer {
        let start = EthernetFrame.headerLength
        guard let arp = try? ARPRepr.parse(ARPPacket(checking: UnsafeRawBufferPointer(rebasing: frame[start...]))) else {
            return .drop("malformed-arp")
        }
        let me = ports[Int(port)]
        let forUs = arp.targetProtocolAddress == me.address.address
        if neighbors[Int(port)].learn(arp.senderProtocolAddress, is: arp.senderHardwareAddress, now: clock.now,
                                      add: forUs) == .moved {
            counters.neighborsMoved &+= 1
            neighborMoved = true
        }
        guard forUs else { return .drop("arp-not-for-us") }
        guard arp.operation == .request else { return .consumed }
        let reply = ARPRepr(operation: .reply, senderHardwareAddress: me.hardwareAddress,
                            senderProtocolAddress: me.address.address,
                            targetHardwareAddress: arp.senderHardwareAddress,
                            targetProtocolAddress: arp.senderProtocolAddress)
        EthernetRepr(destination: arp.senderHardwareAddress, source: me.hardwareAddress, etherType: .arp).emit(into: frame)
        reply.emit(into: UnsafeMutableRawBufferPointer(rebasing: frame[start...]))
        counters.arpAnswered &+= 1
        return .send(port: port)
    }

    /// An IPv4 fragment, forwarded with its datagram's action (`FragmentTranslation`); nil
    /// when the packet is no fragment.
    private func translateFragment(_ frame: UnsafeMutableRawBufferPointer, port: UInt16, send: Originate) -> LocalAnswer? {
        guard let ethernet = try? MutableEthernetFrame(checking: frame),
              let ip = try? MutableIPv4Packet(checking: ethernet.payload), ip.packet.isFragment else { return nil }
        guard ip.packet.verifyChecksum else { return .drop("bad-header-checksum") }
        guard !FragmentTranslation.isTiny(ip.packet) else { return .drop("tiny-fragment") }
        guard ip.packet.timeToLive > 1 else { return .timeExceeded }
        let datagram = FragmentTranslation.Datagram(ip.packet)
        let forward: FlowAction.Forward
        if let key = FragmentTranslation.flowKey(of: ip.packet, port: port) {
            switch decide(key, send: send) {
            case .install(.forward(let decided)): forward = decided
            case .local:
                // ICMP through the NAT: a large echo (the only ICMP that comes in fragments).
                guard let echo = echoThroughNAT(ip.packet, port: port, send: send) else {
                    return .drop("fragment-not-forwarded")
                }
                forward = echo
            case .wait: return .drop("unresolved")
            case .unreachable(_, let reason, _), .drop(let reason): return .drop(reason)
            default: return .drop("fragment-not-forwarded")
            }
            fragments.remember(forward, for: datagram, now: clock.now)
        } else {
            guard let known = fragments.action(for: datagram) else { return .drop("fragment-without-first") }
            forward = known
        }
        FragmentTranslation.apply(forward, to: ethernet, ip)
        counters.fragmentsForwarded &+= 1
        return .send(port: forward.outputPort)
    }

    /// The action for a fragmented ICMP echo through the NAT, from its first fragment: the
    /// request's identifier mapped going out, the reply's mapped back coming in.
    private func echoThroughNAT(_ ip: IPv4Packet, port: UInt16, send: Originate) -> FlowAction.Forward? {
        // No copy of the NAT is held here: its map below would copy its tables.
        guard let outside = nat?.outsideAddress, ip.payload.count >= 8 else { return nil }
        let type = ip.payload[0], id = UInt16(ip.payload[4]) << 8 | UInt16(ip.payload[5])
        let inward = port == outsidePort && ip.destination == outside
        var target = ip.destination
        var inside: NAT44.Inside?
        if inward {
            guard type == ICMPv4Packet.MessageType.echoReply,
                  let end = nat!.reverse(protocol: IPProtocol.icmp.rawValue, outsidePort: id) else { return nil }
            inside = end
            target = end.address
        } else {
            guard type == ICMPv4Packet.MessageType.echoRequest else { return nil }
        }
        let now = clock.now
        guard let (egress, hop) = routes.nextHop(for: target), Int(egress) < ports.count,
              let mac = neighbor(hop, on: egress, now: now, send: send) else { return nil }
        var forward = FlowAction.Forward(outputPort: egress, destinationMAC: mac, sourceMAC: ports[Int(egress)].hardwareAddress)
        if let inside {
            forward.translatedDestination = inside.address
            forward.translatedDestinationPort = inside.port
        } else {
            let end = NAT44.Inside(protocol: IPProtocol.icmp.rawValue, address: ip.source, port: id)
            guard let mapped = try? nat!.map(end, now: now) else { return nil }
            forward.translatedSource = outside
            forward.translatedSourcePort = mapped
        }
        return forward
    }

    /// An ICMP message through the NAT, translated in place (`ICMPTranslation`) and sent on
    /// towards its next hop; nil for ICMP that is not through the NAT (an echo request to
    /// one of our addresses, say).
    private func translateICMP(_ frame: UnsafeMutableRawBufferPointer, port: UInt16, send: Originate) -> LocalAnswer? {
        guard nat != nil, let ethernet = try? MutableEthernetFrame(checking: frame),
              let ip = try? MutableIPv4Packet(checking: ethernet.payload), ip.packet.protocol == .icmp,
              ip.packet.verifyChecksum, let type = ip.payload.first else { return nil }
        let target = ip.packet.destination
        let inward = port == outsidePort && target == nat!.outsideAddress
        if inward && type == ICMPv4Packet.MessageType.echoRequest { return nil }
        guard inward || (port != outsidePort && !ports.contains(where: { $0.address.address == target })
                         && routes.nextHop(for: target)?.0 == outsidePort) else { return nil }
        // The message's checksum is made anew below: a corrupted one must not leave valid.
        guard InternetChecksum.checksum(UnsafeRawBufferPointer(ip.payload)) == 0 else { return .drop("bad-icmp-checksum") }
        let ttl = ip.packet.timeToLive
        guard ttl > 1 else { return .timeExceeded }
        ip.setTimeToLive(ttl - 1)
        let now = clock.now
        let destination: IPv4Address
        if inward {
            guard let inside = ICMPTranslation.inward(ip, nat: nat!) else { return .drop("icmp-without-mapping") }
            destination = inside
        } else {
            guard ICMPTranslation.outward(ip, nat: &nat!, now: now) else { return .drop("icmp-without-mapping") }
            destination = target
        }
        guard let (egress, hop) = routes.nextHop(for: destination), Int(egress) < ports.count else {
            return .drop("no-route")
        }
        // Rarely unknown: the inside host an answer goes back to has talked to us.
        guard let mac = neighbor(hop, on: egress, now: now, send: send) else { return .drop("unresolved") }
        ethernet.setDestination(mac)
        ethernet.setSource(ports[Int(egress)].hardwareAddress)
        return .send(port: egress)
    }

    /// An ICMP echo request to one of our addresses becomes its reply, in place.
    private func answerEcho(_ frame: UnsafeMutableRawBufferPointer, port: UInt16) -> LocalAnswer {
        guard let ethernet = try? MutableEthernetFrame(checking: frame),
              let ip = try? MutableIPv4Packet(checking: ethernet.payload),
              (try? IPv4Repr.parse(ip.packet, checksums: .verify)) != nil,
              ip.packet.protocol == .icmp, ports.contains(where: { $0.address.address == ip.packet.destination }),
              let icmp = try? MutableICMPv4Packet(checking: ip.payload), icmp.packet.verifyChecksum,
              icmp.packet.type == ICMPv4Packet.MessageType.echoRequest, icmp.packet.code == 0 else {
            return .drop("not-for-us")
        }
        let sender = ethernet.frame.source
        let (me, them) = (ip.packet.destination, ip.packet.source)
        ethernet.setDestination(sender)
        ethernet.setSource(ports[Int(port)].hardwareAddress)
        ip.setSource(me)
        ip.setDestination(them)
        ip.setTimeToLive(64)
        ip.fillChecksum()
        icmp.bytes[ICMPv4Packet.Field.type] = ICMPv4Packet.MessageType.echoReply
        icmp.fillChecksum()
        counters.echoAnswered &+= 1
        return .send(port: port)
    }

    /// Whether `address` is the broadcast or network address of a port's subnet (RFC 1812
    /// 4.2.3.1: both address every host there). A /31 or /32 has neither.
    private func isBroadcast(_ address: IPv4Address) -> Bool {
        ports.contains { port in
            port.address.prefixLength < 31
                && (address == port.address.directedBroadcast || address == port.address.network)
        }
    }

    /// The MAC address of `hop` on `port`, or nil once its resolution has been started (one
    /// ARP request; the timers retry).
    private func neighbor(_ hop: IPv4Address, on port: UInt16, now: Instant, send: Originate) -> MACAddress? {
        if let mac = neighbors[Int(port)].lookup(hop, now: now) { return mac }
        if neighbors[Int(port)].startResolving(hop, now: now) { sendARPRequest(port: port, for: hop, send: send) }
        return nil
    }

    private func sendARPRequest(port: UInt16, for address: IPv4Address, send: Originate) {
        let me = ports[Int(port)]
        let request = ARPRepr(operation: .request, senderHardwareAddress: me.hardwareAddress,
                              senderProtocolAddress: me.address.address, targetHardwareAddress: .zero,
                              targetProtocolAddress: address)
        send(port) { out in
            EthernetRepr(destination: .broadcast, source: me.hardwareAddress, etherType: .arp).emit(into: out)
            request.emit(into: UnsafeMutableRawBufferPointer(rebasing: out[EthernetFrame.headerLength...]))
            out.baseAddress!.advanced(by: 42).initializeMemory(as: UInt8.self, repeating: 0, count: 18)
            return 60
        }
        counters.arpRequestsSent &+= 1
    }
}

/// What the gateway's software decided and answered.
public struct GatewayCounters: Sendable, Equatable, CounterTable {
    public var noRoute: UInt64 = 0
    public var notListening: UInt64 = 0
    public var natExhausted: UInt64 = 0
    public var waitedForNeighbor: UInt64 = 0
    public var resolutionsFailed: UInt64 = 0
    /// Resolved neighbours whose MAC address ARP changed (each rebuilt every entry).
    public var neighborsMoved: UInt64 = 0
    public var arpRequestsSent: UInt64 = 0
    public var arpAnswered: UInt64 = 0
    public var echoAnswered: UInt64 = 0
    public var icmpErrorsRateLimited: UInt64 = 0
    public var fragmentsForwarded: UInt64 = 0

    public var rows: [(String, UInt64)] {
        [("flows with no route", noRoute), ("flows to no listener", notListening),
         ("flows refused: NAT ports exhausted", natExhausted), ("flows that waited for ARP", waitedForNeighbor),
         ("ARP resolutions failed", resolutionsFailed), ("ARP: neighbours moved", neighborsMoved),
         ("ARP requests sent", arpRequestsSent),
         ("ARP requests answered", arpAnswered), ("ICMP echo answered", echoAnswered),
         ("ICMP errors rate-limited", icmpErrorsRateLimited), ("fragments forwarded", fragmentsForwarded)]
    }
}
