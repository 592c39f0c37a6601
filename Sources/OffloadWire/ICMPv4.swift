import OffloadCore

/// An ICMPv4 message (RFC 792): a checked view over its bytes.
///
/// After `init(checking:)` the 8-byte header is present. Echo messages carry an identifier
/// and sequence number in the second word; errors carry (for destination unreachable,
/// fragmentation needed) the next-hop MTU there, then the quoted original datagram.
public struct ICMPv4Packet {
    public enum Field {
        public static let type = 0
        public static let code = 1
        public static let checksum = 2
        public static let identifier = 4
        public static let sequenceNumber = 6
        /// Low 16 bits of the second word in "fragmentation needed" (RFC 1191).
        public static let nextHopMTU = 6
        public static let data = 8
    }
    public enum MessageType {
        public static let echoReply: UInt8 = 0
        public static let destinationUnreachable: UInt8 = 3
        public static let echoRequest: UInt8 = 8
        public static let timeExceeded: UInt8 = 11
    }
    public enum UnreachableCode {
        public static let network: UInt8 = 0
        public static let host: UInt8 = 1
        public static let `protocol`: UInt8 = 2
        public static let port: UInt8 = 3
        public static let fragmentationNeeded: UInt8 = 4
    }
    public static let headerLength = 8
    /// An error quotes the original IP header and at least this many bytes after it.
    public static let minimumQuotedData = 8

    /// The whole message (normally an IPv4 payload).
    public let bytes: UnsafeRawBufferPointer

    @inlinable
    public init(checking bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.headerLength else {
            throw .truncated(format: .icmpv4, needed: Self.headerLength, available: bytes.count)
        }
        self.bytes = bytes
    }

    @inlinable init(unchecked bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    @inlinable public var type: UInt8 { bytes[Field.type] }
    @inlinable public var code: UInt8 { bytes[Field.code] }
    @inlinable public var checksum: UInt16 { bytes.u16(Field.checksum) }
    @inlinable public var identifier: UInt16 { bytes.u16(Field.identifier) }
    @inlinable public var sequenceNumber: UInt16 { bytes.u16(Field.sequenceNumber) }
    @inlinable public var nextHopMTU: UInt16 { bytes.u16(Field.nextHopMTU) }
    /// Everything after the 8-byte header: echo data, or the quoted datagram of an error.
    @inlinable public var data: UnsafeRawBufferPointer { bytes.slice(Field.data, bytes.count) }
    @inlinable public var isError: Bool {
        type == MessageType.destinationUnreachable || type == MessageType.timeExceeded
    }
    /// The quoted original IP header of an error (checked as a header only: its total
    /// length counts bytes that were not quoted).
    @inlinable
    public func quotedHeader() throws(WireError) -> IPv4Packet { try IPv4Packet(checkingHeader: data) }

    @inlinable public var verifyChecksum: Bool { InternetChecksum.checksum(bytes) == 0 }
}

/// A writable ICMPv4 view, for rewriting the echo identifier (NAT) and the checksum.
public struct MutableICMPv4Packet {
    public typealias Field = ICMPv4Packet.Field
    public let bytes: UnsafeMutableRawBufferPointer

    @inlinable
    public init(checking bytes: UnsafeMutableRawBufferPointer) throws(WireError) {
        _ = try ICMPv4Packet(checking: UnsafeRawBufferPointer(bytes))
        self.bytes = bytes
    }

    @inlinable public var packet: ICMPv4Packet { ICMPv4Packet(unchecked: bytes.readOnly) }
    @inlinable public var data: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(rebasing: bytes[Field.data...]) }
    @inlinable public func setIdentifier(_ id: UInt16) { bytes.set16(Field.identifier, id) }
    @inlinable public func setChecksum(_ c: UInt16) { bytes.set16(Field.checksum, c) }
    /// Recomputes the checksum over the whole message.
    @inlinable public func fillChecksum() { fillL4Checksum(bytes, field: Field.checksum, pseudoHeader: nil, policy: .verify) }
    /// Updates the checksum for a 16-bit field changed from `old` to `new` (RFC 1624).
    @inlinable public func updateChecksum(old: UInt16, new: UInt16) {
        setChecksum(InternetChecksum.update(packet.checksum, old: old, new: new))
    }
}

/// An ICMPv4 message this stack handles, as a value. Echo data and the quoted datagram's
/// bytes after its IP header are payload: `emit` expects them already in place.
public enum ICMPv4Repr: Equatable, Hashable, Sendable {
    case echoRequest(identifier: UInt16, sequenceNumber: UInt16, dataLength: Int)
    case echoReply(identifier: UInt16, sequenceNumber: UInt16, dataLength: Int)
    /// `nextHopMTU` is the low half of the second word (0 unless code 4, fragmentation needed);
    /// `quoted` is the original IP header and `quotedDataLength` the bytes quoted after it (at least 8).
    case destinationUnreachable(code: UInt8, nextHopMTU: UInt16, quoted: IPv4Repr, quotedDataLength: Int)
    case timeExceeded(code: UInt8, quoted: IPv4Repr, quotedDataLength: Int)

    /// Reads a checked message. With `.verify` a bad checksum is `.badChecksum` (`.partial`,
    /// a checksum left to the device, and `.ignore` skip it). An error whose quote is
    /// shorter than the original IP header plus 8 bytes is `.truncated`; a quoted header is
    /// checked as a header (version, IHL; fragments are `.unsupported`) but its checksum is
    /// not verified (a router may quote it after changing the TTL). Other types are `.unsupported`.
    @inlinable
    public static func parse(_ packet: ICMPv4Packet, checksums: ChecksumPolicy) throws(WireError) -> ICMPv4Repr {
        typealias T = ICMPv4Packet.MessageType
        if checksums == .verify && !packet.verifyChecksum { throw .badChecksum(format: .icmpv4) }
        switch packet.type {
        case T.echoRequest, T.echoReply:
            guard packet.code == 0 else { throw .badField(format: .icmpv4, field: "echo code", value: Int(packet.code)) }
            let n = packet.data.count
            return packet.type == T.echoRequest
                ? .echoRequest(identifier: packet.identifier, sequenceNumber: packet.sequenceNumber, dataLength: n)
                : .echoReply(identifier: packet.identifier, sequenceNumber: packet.sequenceNumber, dataLength: n)
        case T.destinationUnreachable, T.timeExceeded:
            let quotedPacket = try packet.quotedHeader()
            let quoted = try IPv4Repr.parse(quotedPacket, checksums: .ignore)
            let quotedData = quotedPacket.payload.count
            guard quotedData >= ICMPv4Packet.minimumQuotedData else {
                throw .truncated(format: .icmpv4, needed: ICMPv4Packet.headerLength + quotedPacket.headerLength + ICMPv4Packet.minimumQuotedData,
                                 available: packet.bytes.count)
            }
            if packet.type == T.timeExceeded {
                return .timeExceeded(code: packet.code, quoted: quoted, quotedDataLength: quotedData)
            }
            return .destinationUnreachable(code: packet.code, nextHopMTU: packet.nextHopMTU, quoted: quoted,
                                           quotedDataLength: quotedData)
        default:
            throw .unsupported(format: .icmpv4, what: "type \(packet.type) code \(packet.code)")
        }
    }

    /// The 8-byte ICMP header, plus for an error the quoted 20-byte IP header.
    @inlinable
    public var headerLength: Int {
        switch self {
        case .echoRequest, .echoReply: return ICMPv4Packet.headerLength
        case .destinationUnreachable, .timeExceeded: return ICMPv4Packet.headerLength + IPv4Packet.minimumHeaderLength
        }
    }

    /// Bytes after `headerLength`: echo data, or the quoted bytes after the quoted IP header.
    @inlinable
    public var payloadLength: Int {
        switch self {
        case .echoRequest(_, _, let n), .echoReply(_, _, let n): return n
        case .destinationUnreachable(_, _, _, let n), .timeExceeded(_, _, let n): return n
        }
    }

    @inlinable public var bufferLength: Int { headerLength + payloadLength }

    /// Writes the header (and an error's quoted IP header, its checksum recomputed) into
    /// `buffer`, which holds the whole message (`bufferLength` bytes, the payload already in
    /// place), then the checksum per `checksums` (`.partial` leaves 0 for a device to fill:
    /// ICMP has no pseudo-header).
    @inlinable
    public func emit(into buffer: UnsafeMutableRawBufferPointer, checksums: ChecksumPolicy) {
        typealias F = ICMPv4Packet.Field
        typealias T = ICMPv4Packet.MessageType
        precondition(buffer.count >= bufferLength, "ICMPv4Repr.emit: buffer too small")
        let message = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<bufferLength])
        switch self {
        case .echoRequest(let id, let seq, _), .echoReply(let id, let seq, _):
            if case .echoRequest = self { message[F.type] = T.echoRequest } else { message[F.type] = T.echoReply }
            message[F.code] = 0
            message.set16(F.identifier, id)
            message.set16(F.sequenceNumber, seq)
        case .destinationUnreachable(let code, let mtu, let quoted, _):
            message[F.type] = T.destinationUnreachable
            message[F.code] = code
            message.set16(4, 0)
            message.set16(F.nextHopMTU, mtu)
            quoted.emit(into: UnsafeMutableRawBufferPointer(rebasing: message[F.data...]), checksums: .verify)
        case .timeExceeded(let code, let quoted, _):
            message[F.type] = T.timeExceeded
            message[F.code] = code
            message.set32(4, 0)
            quoted.emit(into: UnsafeMutableRawBufferPointer(rebasing: message[F.data...]), checksums: .verify)
        }
        fillL4Checksum(message, field: F.checksum, pseudoHeader: nil, policy: checksums)
    }
}
