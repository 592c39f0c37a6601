import OffloadCore
import OffloadEngine
import OffloadWire

/// IPv4 fragments through the gateway, done by the software one fragment at a time (the
/// engine keys only whole packets). The first fragment carries the TCP or UDP header: it is
/// decided like its flow (route, NAT mapping) and rewritten with the flow's action, and the
/// action is remembered for its datagram. A later fragment has no ports: it takes its
/// datagram's action for addresses, MACs and TTL. A later fragment that comes before its
/// first one has nothing to go by and is dropped (the sender's retransmission, or the peer's
/// reassembly timeout, deals with it), as fragments that cannot be translated are in NATs
/// without reassembly.
struct FragmentTranslation {
    /// A datagram, as its fragments name it (RFC 791).
    struct Datagram: Hashable {
        var source: IPv4Address
        var destination: IPv4Address
        var `protocol`: UInt8
        var identification: UInt16

        init(_ ip: IPv4Packet) {
            source = ip.source
            destination = ip.destination
            self.protocol = ip.protocol.rawValue
            identification = ip.identification
        }
    }

    /// How long a datagram's action is kept for its later fragments (Linux's ipfrag_time).
    static let lifetime = Duration.seconds(30)
    /// The most datagrams remembered at once; the oldest goes first.
    let capacity: Int
    private var actions: [Datagram: FlowAction.Forward] = [:]
    private var order: [(datagram: Datagram, due: Instant)] = []
    private var orderHead = 0

    init(capacity: Int = 4096) { self.capacity = capacity }

    var count: Int { actions.count }

    /// The key of a first fragment's flow (it carries the ports), or nil for a later
    /// fragment or a first one too short for them.
    static func flowKey(of ip: IPv4Packet, port: UInt16) -> FlowKey? {
        guard ip.fragmentOffset == 0 else { return nil }
        let proto = ip.protocol.rawValue
        var ports: (UInt16, UInt16) = (0, 0)
        if proto == 6 || proto == 17 {
            let l4 = ip.payload
            guard l4.count >= 4 else { return nil }
            ports = (UInt16(l4[0]) << 8 | UInt16(l4[1]), UInt16(l4[2]) << 8 | UInt16(l4[3]))
        } else if proto == 1, ip.payload.count < 8 {
            return nil
        }
        return FlowKey(ingressPort: port, protocol: proto, source: ip.source, destination: ip.destination,
                       sourcePort: ports.0, destinationPort: ports.1)
    }

    /// A first fragment too short to hold what its translation rewrites (TCP's header to
    /// its checksum, UDP's, an echo's identifier and checksum), or a TCP fragment at offset
    /// 8 that would overlap the first one's header (RFC 1858): not forwarded.
    static func isTiny(_ ip: IPv4Packet) -> Bool {
        let proto = ip.protocol.rawValue
        if ip.fragmentOffset == 0 {
            let needed = proto == 6 ? 18 : proto == 17 || proto == 1 ? 8 : 0
            return ip.payload.count < needed
        }
        return proto == 6 && ip.fragmentOffset == 8
    }

    mutating func remember(_ forward: FlowAction.Forward, for datagram: Datagram, now: Instant) {
        expire(now: now)
        if actions.count >= capacity, orderHead < order.count {
            actions[order[orderHead].datagram] = nil
            orderHead += 1
        }
        if actions.updateValue(forward, forKey: datagram) == nil { order.append((datagram, now + Self.lifetime)) }
    }

    func action(for datagram: Datagram) -> FlowAction.Forward? { actions[datagram] }

    /// Forgets the datagrams whose time is up.
    mutating func expire(now: Instant) {
        while orderHead < order.count, order[orderHead].due <= now {
            actions[order[orderHead].datagram] = nil
            orderHead += 1
        }
        if orderHead >= 1024, orderHead * 2 >= order.count {
            order.removeFirst(orderHead)
            orderHead = 0
        }
    }

    /// Rewrites a fragment with its datagram's action: MACs, TTL, addresses, the header
    /// checksum; in the first fragment also the ports and the TCP or UDP checksum, which
    /// covers the whole datagram and so changes by the same amounts (RFC 1624). An ICMP
    /// echo's identifier is its port: the translated source port of a request going out, the
    /// translated destination port of a reply coming in. The caller checked that the TTL
    /// allows forwarding.
    static func apply(_ forward: FlowAction.Forward, to ethernet: MutableEthernetFrame, _ ip: MutableIPv4Packet) {
        ethernet.setDestination(forward.destinationMAC)
        ethernet.setSource(forward.sourceMAC)
        let packet = ip.packet
        let (oldSource, oldDestination) = (packet.source, packet.destination)
        let newSource = forward.translatedSource ?? oldSource, newDestination = forward.translatedDestination ?? oldDestination
        ip.setTimeToLive(packet.timeToLive - 1)
        ip.setSource(newSource)
        ip.setDestination(newDestination)
        ip.fillChecksum()
        let proto = packet.protocol.rawValue
        guard packet.fragmentOffset == 0 else { return }
        let l4 = ip.payload
        func load16(_ at: Int) -> UInt16 { UInt16(l4[at]) << 8 | UInt16(l4[at + 1]) }
        func store16(_ at: Int, _ v: UInt16) { l4[at] = UInt8(v >> 8); l4[at + 1] = UInt8(v & 0xff) }
        if proto == 1 {
            guard l4.count >= 8 else { return }
            let old = load16(4), new = forward.translatedSourcePort ?? forward.translatedDestinationPort ?? old
            store16(4, new)
            // ICMP's checksum has no pseudo-header: only the identifier changes it.
            return TransportChecksum.update(in: l4, protocol: proto) { InternetChecksum.update($0, old: old, new: new) }
        }
        guard proto == 6 || proto == 17, l4.count >= 4 else { return }
        let (oldSourcePort, oldDestinationPort) = (load16(0), load16(2))
        let newSourcePort = forward.translatedSourcePort ?? oldSourcePort
        let newDestinationPort = forward.translatedDestinationPort ?? oldDestinationPort
        store16(0, newSourcePort)
        store16(2, newDestinationPort)
        TransportChecksum.update(in: l4, protocol: proto) {
            var sum = InternetChecksum.update($0, old: oldSource.rawValue, new: newSource.rawValue)
            sum = InternetChecksum.update(sum, old: oldDestination.rawValue, new: newDestination.rawValue)
            sum = InternetChecksum.update(sum, old: oldSourcePort, new: newSourcePort)
            return InternetChecksum.update(sum, old: oldDestinationPort, new: newDestinationPort)
        }
    }
}
