import OffloadCore
import OffloadWire

/// The NAT's ICMP behaviour (RFC 5508), done by the software one message at a time: ICMP is
/// rare, so no entry is installed for it.
///
/// - An echo's identifier is its port: each inside host's echoes get a mapping of their own
///   (made by the request), and the reply goes back to the host that sent the request.
/// - An error quotes the packet it is about. One that comes to the outside address quotes a
///   packet the NAT sent out, so it goes to the inside host of that packet's mapping, with
///   the quote translated back to what that host sent (fragmentation needed for path MTU
///   discovery, port unreachable, time exceeded for traceroute). One that an inside host
///   sends out quotes a packet that came in through the NAT, and its quote is translated to
///   what the outside sent.
///
/// Each function rewrites the IPv4 packet in place (outer address, the quote or the
/// identifier, every checksum) and says where it goes now, or nil when the message is about
/// no mapping (or too short to tell): the caller drops it.
enum ICMPTranslation {
    /// An ICMP message to the NAT's outside address; returns the inside host it goes to.
    static func inward(_ ip: MutableIPv4Packet, nat: NAT44) -> IPv4Address? {
        guard let icmp = try? MutableICMPv4Packet(checking: ip.payload) else { return nil }
        let inside: NAT44.Inside
        switch icmp.packet.type {
        case ICMPv4Packet.MessageType.echoReply:
            guard let end = nat.reverse(protocol: IPProtocol.icmp.rawValue, outsidePort: icmp.packet.identifier) else {
                return nil
            }
            inside = end
            icmp.setIdentifier(end.port)
        case let type where isError(type):
            // The quote is what the NAT sent: from the outside address and a mapped port.
            guard let quote = Quote(icmp.data), quote.address(.source) == nat.outsideAddress,
                  let port = quote.port(.source),
                  let end = nat.reverse(protocol: quote.protocol, outsidePort: port) else { return nil }
            inside = end
            quote.rewrite(.source, to: end.address, port: end.port)
        default:
            return nil
        }
        ip.setDestination(inside.address)
        icmp.fillChecksum()
        ip.fillChecksum()
        return inside.address
    }

    /// An ICMP message from an inside host that leaves by the outside port: its source
    /// becomes the outside address. False when it cannot be translated (an error about a
    /// packet that did not come through the NAT, or another kind of message).
    static func outward(_ ip: MutableIPv4Packet, nat: inout NAT44, now: Instant) -> Bool {
        guard let icmp = try? MutableICMPv4Packet(checking: ip.payload) else { return false }
        switch icmp.packet.type {
        case ICMPv4Packet.MessageType.echoRequest:
            let end = NAT44.Inside(protocol: IPProtocol.icmp.rawValue, address: ip.packet.source,
                                   port: icmp.packet.identifier)
            guard let port = try? nat.map(end, now: now) else { return false }
            icmp.setIdentifier(port)
        case let type where isError(type):
            // The quote is what came in through the NAT: to the inside host and its port.
            guard let quote = Quote(icmp.data), let port = quote.port(.destination),
                  let mapped = nat.port(of: NAT44.Inside(protocol: quote.protocol, address: quote.address(.destination),
                                                         port: port)) else { return false }
            quote.rewrite(.destination, to: nat.outsideAddress, port: mapped)
        default:
            return false
        }
        ip.setSource(nat.outsideAddress)
        icmp.fillChecksum()
        ip.fillChecksum()
        return true
    }

    /// Destination unreachable, time exceeded, parameter problem: the errors that quote a packet.
    static func isError(_ type: UInt8) -> Bool { type == 3 || type == 11 || type == 12 }

    /// The packet an ICMP error quotes: its IP header and at least the 8 bytes after it.
    struct Quote {
        enum End { case source, destination }

        let bytes: UnsafeMutableRawBufferPointer
        let headerLength: Int
        let `protocol`: UInt8

        init?(_ bytes: UnsafeMutableRawBufferPointer) {
            // A later fragment's first bytes are data, not ports: such a quote names no mapping.
            guard let header = try? IPv4Packet(checkingHeader: UnsafeRawBufferPointer(bytes)),
                  header.fragmentOffset == 0, bytes.count >= header.headerLength + 8 else { return nil }
            self.bytes = bytes
            headerLength = header.headerLength
            self.protocol = header.protocol.rawValue
        }

        func address(_ end: End) -> IPv4Address { IPv4Address(rawValue: load32(end == .source ? 12 : 16)) }

        /// The TCP or UDP port of `end`; for ICMP, an echo's identifier (the request's going
        /// out, the reply's coming in); nil for other messages and protocols.
        func port(_ end: End) -> UInt16? {
            switch self.protocol {
            case 6, 17: return load16(headerLength + (end == .source ? 0 : 2))
            case 1:
                let type = bytes[headerLength]
                let echo = end == .source ? ICMPv4Packet.MessageType.echoRequest : ICMPv4Packet.MessageType.echoReply
                return type == echo ? load16(headerLength + 4) : nil
            default: return nil
            }
        }

        /// Rewrites `end`'s address and port with the quote's checksums: its IP header's
        /// anew, and its TCP, UDP or ICMP checksum by the change (RFC 1624) where quoted.
        func rewrite(_ end: End, to address: IPv4Address, port: UInt16) {
            let addressAt = end == .source ? 12 : 16
            let oldAddress = load32(addressAt)
            let portAt = self.protocol == 1 ? headerLength + 4 : headerLength + (end == .source ? 0 : 2)
            let oldPort = load16(portAt)
            store32(addressAt, address.rawValue)
            store16(portAt, port)
            store16(10, 0)
            store16(10, InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<headerLength])))
            let proto = self.protocol
            TransportChecksum.update(in: UnsafeMutableRawBufferPointer(rebasing: bytes[headerLength...]), protocol: proto) {
                let sum = InternetChecksum.update($0, old: oldPort, new: port)
                // ICMP's checksum has no pseudo-header; TCP's and UDP's cover the addresses.
                return proto == 1 ? sum : InternetChecksum.update(sum, old: oldAddress, new: address.rawValue)
            }
        }

        private func load16(_ at: Int) -> UInt16 { UInt16(bigEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt16.self)) }
        private func load32(_ at: Int) -> UInt32 { UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self)) }
        private func store16(_ at: Int, _ v: UInt16) { bytes.storeBytes(of: v.bigEndian, toByteOffset: at, as: UInt16.self) }
        private func store32(_ at: Int, _ v: UInt32) { bytes.storeBytes(of: v.bigEndian, toByteOffset: at, as: UInt32.self) }
    }
}
