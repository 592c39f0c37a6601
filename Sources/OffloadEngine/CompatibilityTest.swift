import OffloadCore
import OffloadWire

/// Why a re-inserted packet failed the compatibility test of audit mode (B7, seed 000
/// claims 1 and 2). Each is a drop counter of its own.
public enum CompatibilityFailure: String, CaseIterable, Sendable, Error, CustomStringConvertible {
    case unsupportedEtherType = "unsupported-ethertype"
    case truncated = "truncated"
    case badIPVersion = "bad-ip-version"
    case badHeaderLength = "bad-header-length"
    case totalLengthMismatch = "total-length-mismatch"
    case badHeaderChecksum = "bad-header-checksum"
    case ttlExpired = "ttl-expired"
    case ipOptions = "ip-options"
    case fragment = "fragment"
    case badL4Length = "bad-l4-length"
    case badL4Checksum = "bad-l4-checksum"
    case badOffloadMetadata = "bad-offload-metadata"
    case oversize = "oversize"
    case malformedARP = "malformed-arp"

    public var description: String { rawValue }
}

/// The compatibility test a packet from the software must pass before the engine takes it
/// back, unless it carries a valid engine mark: supported EtherType (IPv4), version and
/// header length, total length consistent with the frame, header checksum, TTL, no options
/// or fragments, L4 length and checksum (or offload metadata that says where the device
/// finishes it), and size within the MTU (or valid TSO metadata).
public struct CompatibilityTest: Sendable {
    /// Largest IPv4 packet (header included) a frame may carry without TSO metadata, where
    /// the port it leaves by is not known.
    public var mtu: Int

    public init(mtu: Int = 1500) { self.mtu = mtu }

    /// Checks an Ethernet frame; throws the first failure found. `mtu`: the MTU of the port
    /// it leaves by, where that is known (else `self.mtu`).
    public func check(_ frame: UnsafeRawBufferPointer, metadata: OffloadMetadata,
                      mtu: Int? = nil) throws(CompatibilityFailure) {
        let mtu = mtu ?? self.mtu
        let ethernet: EthernetFrame
        do { ethernet = try EthernetFrame(checking: frame) } catch { throw .truncated }
        if ethernet.etherType == .arp {
            // The software's ARP answers and requests: an Ethernet/IPv4 request or reply.
            guard let arp = try? ARPPacket(checking: ethernet.payload),
                  arp.operation == ARPOperation.request.rawValue || arp.operation == ARPOperation.reply.rawValue else {
                throw .malformedARP
            }
            // No offload work to do on ARP (a device would "finish" a checksum over its
            // fields), and no more than a frame's worth of it.
            guard case .none = metadata else { throw .badOffloadMetadata }
            guard ethernet.payload.count <= mtu else { throw .oversize }
            return
        }
        guard ethernet.etherType == .ipv4 else { throw .unsupportedEtherType }
        let ipBytes = ethernet.payload
        let packet: IPv4Packet
        do { packet = try IPv4Packet(checking: ipBytes) } catch {
            switch error {
            case .badField: throw .badIPVersion
            case .badHeaderLength: throw .badHeaderLength
            case .badLength: throw .totalLengthMismatch
            default: throw .truncated
            }
        }
        // Anything after the IP packet may only be the padding of a minimum-size frame.
        if ipBytes.count > packet.totalLength, frame.count > 60 { throw .totalLengthMismatch }
        guard packet.verifyChecksum else { throw .badHeaderChecksum }
        guard packet.headerLength == IPv4Packet.minimumHeaderLength else { throw .ipOptions }
        guard !packet.isFragment else { throw .fragment }
        guard packet.timeToLive > 0 else { throw .ttlExpired }

        let l4Start = EthernetFrame.headerLength + packet.headerLength
        switch metadata {
        case .none:
            guard packet.totalLength <= mtu else { throw .oversize }
            try checkL4(packet, partial: false)
        case .partialChecksum(let start, let offset):
            guard packet.totalLength <= mtu else { throw .oversize }
            try checkPartialLocation(packet, start: Int(start), offset: Int(offset), l4Start: l4Start)
            try checkL4(packet, partial: true)
        case .tcpSegmentation(let segmentSize, _, let start, let offset):
            guard packet.protocol == .tcp, segmentSize > 0 else { throw .badOffloadMetadata }
            try checkPartialLocation(packet, start: Int(start), offset: Int(offset), l4Start: l4Start)
            try checkL4(packet, partial: true)
            // Each frame the device cuts carries this packet's headers, options included, and
            // `segmentSize` bytes: it must fit the MTU. (The metadata's header length is only
            // a hint, as virtio-net's: the kernel gives the skb's linear length there.)
            let tcpHeaderLength = Int(ipBytes[packet.headerLength + 12] >> 4) &* 4
            guard packet.headerLength + tcpHeaderLength + Int(segmentSize) <= mtu else { throw .badOffloadMetadata }
        case .udpSegmentation(let segmentSize, _, let start, let offset):
            guard packet.protocol == .udp, segmentSize > 0 else { throw .badOffloadMetadata }
            try checkPartialLocation(packet, start: Int(start), offset: Int(offset), l4Start: l4Start)
            try checkL4(packet, partial: true)
            guard packet.headerLength + 8 + Int(segmentSize) <= mtu else { throw .badOffloadMetadata }
        }
    }

    /// A partial checksum must start at the L4 header and point at its checksum field.
    private func checkPartialLocation(_ packet: IPv4Packet, start: Int, offset: Int, l4Start: Int) throws(CompatibilityFailure) {
        let field: Int
        switch packet.protocol {
        case .tcp: field = 16
        case .udp: field = 6
        default: throw .badOffloadMetadata
        }
        guard start == l4Start, offset == field else { throw .badOffloadMetadata }
    }

    private func checkL4(_ packet: IPv4Packet, partial: Bool) throws(CompatibilityFailure) {
        let payload = packet.payload
        switch packet.protocol {
        case .tcp:
            let segment: TCPPacket
            do { segment = try TCPPacket(checking: payload) } catch { throw .badL4Length }
            guard partial || segment.verifyChecksum(source: packet.source, destination: packet.destination) else {
                throw .badL4Checksum
            }
        case .udp:
            let datagram: UDPPacket
            do { datagram = try UDPPacket(checking: payload) } catch { throw .badL4Length }
            guard datagram.length == payload.count else { throw .badL4Length }
            guard partial || datagram.verifyChecksum(source: packet.source, destination: packet.destination) else {
                throw .badL4Checksum
            }
        case .icmp:
            guard payload.count >= ICMPv4Packet.headerLength else { throw .badL4Length }
            guard InternetChecksum.checksum(payload) == 0 else { throw .badL4Checksum }
        default:
            break
        }
    }
}
