import OffloadCore
import OffloadWire

/// The ICMP errors the software sends about packets it cannot deliver (RFC 792, with the
/// rules of RFC 1812 §4.3.2.7), built in the buffer of the packet they are about.
enum ICMPErrorFrame {
    /// RFC 1812: quote as much of the original as fits in a 576-byte datagram.
    static let maximumQuote = 576 - IPv4Packet.minimumHeaderLength - ICMPv4Packet.headerLength

    /// Rewrites `buffer`, an Ethernet + IPv4 frame, into an ICMP error of `type` and `code`
    /// about it, from `interface` back to the frame's sender (its Ethernet source: the
    /// neighbour it came from). False, with the buffer unchanged, where no error may be sent:
    /// about an ICMP error, a fragment other than the first, a packet to a broadcast or
    /// multicast address, or from an address that is not one host's. `nextHopMTU` goes in
    /// a "fragmentation needed" message's low 16 bits of the otherwise unused word (RFC 1191).
    static func rewrite(_ buffer: inout PacketBuffer, type: UInt8, code: UInt8, nextHopMTU: UInt16 = 0,
                        from interface: SoftwareInterface) -> Bool {
        let start = EthernetFrame.headerLength
        guard let ethernet = try? EthernetFrame(checking: buffer.bytes), ethernet.etherType == .ipv4,
              let original = try? IPv4Packet(checking: ethernet.payload) else { return false }
        let source = original.source, destination = original.destination
        guard original.fragmentOffset == 0, !ethernet.destination.isMulticast,
              !destination.isMulticast, destination != .broadcast,
              // Class E (240/4, the limited broadcast among it) names no host either.
              source != .any, !source.isMulticast, !source.isLoopback, source.rawValue >> 28 != 0xf else { return false }
        if original.protocol == .icmp {
            let message = original.payload
            guard message.count >= 1 else { return false }
            let type = message[0]
            let isQuery = type == ICMPv4Packet.MessageType.echoRequest || type == ICMPv4Packet.MessageType.echoReply
            guard isQuery else { return false }
        }
        let sender = ethernet.source
        let quoted = min(original.totalLength, maximumQuote)
        let headers = IPv4Packet.minimumHeaderLength + ICMPv4Packet.headerLength
        let length = max(start + headers + quoted, 60)
        guard (try? buffer.setCount(length)) != nil else { return false }
        let frame = buffer.mutableBytes
        // The quote moves back to make room for the new headers (the regions overlap).
        (frame.baseAddress! + start + headers).copyMemory(from: frame.baseAddress! + start, byteCount: quoted)
        let padding = length - (start + headers + quoted)
        if padding > 0 {
            UnsafeMutableRawBufferPointer(rebasing: frame[(length - padding)...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
        EthernetRepr(destination: sender, source: interface.hardwareAddress, etherType: .ipv4).emit(into: frame)
        let message = UnsafeMutableRawBufferPointer(rebasing: frame[(start + IPv4Packet.minimumHeaderLength)..<(start + headers + quoted)])
        message[0] = type
        message[1] = code
        message.set16(2, 0)  // checksum, computed below
        message.set32(4, UInt32(nextHopMTU))  // unused (RFC 792), but for the next hop's MTU
        message.set16(2, InternetChecksum.checksum(UnsafeRawBufferPointer(message)))
        IPv4Repr(source: interface.address, destination: source, protocol: .icmp, payloadLength: message.count,
                 dontFragment: false)
            .emit(into: UnsafeMutableRawBufferPointer(rebasing: frame[start...]), checksums: .verify)
        buffer.offload = .none
        return true
    }
}

extension UnsafeMutableRawBufferPointer {
    fileprivate func set16(_ offset: Int, _ value: UInt16) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    fileprivate func set32(_ offset: Int, _ value: UInt32) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }
}
