import OffloadCore

/// A UDP datagram (RFC 768): a checked view over its bytes.
///
/// After `init(checking:)` the length field is at least 8 and at most the bytes given;
/// `bytes` is trimmed to it.
public struct UDPPacket {
    public enum Field {
        public static let sourcePort = 0
        public static let destinationPort = 2
        public static let length = 4
        public static let checksum = 6
        public static let payload = 8
    }
    public static let headerLength = 8

    /// Header and payload, `length` bytes.
    public let bytes: UnsafeRawBufferPointer

    /// Checks a datagram; `bytes` is normally an IPv4 payload.
    @inlinable
    public init(checking bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.headerLength else {
            throw .truncated(format: .udp, needed: Self.headerLength, available: bytes.count)
        }
        let length = Int(bytes.u16(Field.length))
        guard length >= Self.headerLength, length <= bytes.count else {
            throw .badLength(format: .udp, field: "length", value: length)
        }
        self.bytes = bytes.slice(0, length)
    }

    @inlinable init(unchecked bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    @inlinable public var sourcePort: UInt16 { bytes.u16(Field.sourcePort) }
    @inlinable public var destinationPort: UInt16 { bytes.u16(Field.destinationPort) }
    @inlinable public var length: Int { Int(bytes.u16(Field.length)) }
    @inlinable public var checksum: UInt16 { bytes.u16(Field.checksum) }
    @inlinable public var payload: UnsafeRawBufferPointer { bytes.slice(Field.payload, bytes.count) }

    /// Whether the checksum verifies under the pseudo-header (a checksum of 0, "none", does).
    @inlinable
    public func verifyChecksum(source: IPv4Address, destination: IPv4Address) -> Bool {
        checksum == 0 || ipv4L4Checksum(bytes, source: source, destination: destination, protocol: IPProtocol.udp.rawValue) == 0
    }
}

/// A writable UDP view, for rewriting ports and checksums in place.
public struct MutableUDPPacket {
    public typealias Field = UDPPacket.Field
    public let bytes: UnsafeMutableRawBufferPointer

    @inlinable
    public init(checking bytes: UnsafeMutableRawBufferPointer) throws(WireError) {
        let view = try UDPPacket(checking: UnsafeRawBufferPointer(bytes))
        self.bytes = UnsafeMutableRawBufferPointer(rebasing: bytes[0..<view.bytes.count])
    }

    @inlinable public var packet: UDPPacket { UDPPacket(unchecked: bytes.readOnly) }
    @inlinable public var payload: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: bytes[Field.payload...])
    }
    @inlinable public func setSourcePort(_ port: UInt16) { bytes.set16(Field.sourcePort, port) }
    @inlinable public func setDestinationPort(_ port: UInt16) { bytes.set16(Field.destinationPort, port) }
    @inlinable public func setChecksum(_ c: UInt16) { bytes.set16(Field.checksum, c) }

    /// Fills the checksum per `policy` (full, pseudo-header only, or 0).
    @inlinable
    public func fillChecksum(source: IPv4Address, destination: IPv4Address, policy: ChecksumPolicy = .verify) {
        fillL4Checksum(bytes, field: Field.checksum, pseudoHeader: (source, destination, IPProtocol.udp.rawValue),
                       policy: policy, zeroMeansNone: true)
    }

    /// Updates a full checksum for a 16-bit field (port) changed from `old` to `new`
    /// (RFC 1624); a checksum of 0 ("none") stays 0.
    @inlinable
    public func updateChecksum(old: UInt16, new: UInt16) {
        let c = packet.checksum
        guard c != 0 else { return }
        let u = InternetChecksum.update(c, old: old, new: new)
        setChecksum(u == 0 ? 0xffff : u)
    }

    /// Updates a full checksum for a 32-bit pseudo-header field (address) changed from `old` to `new`.
    @inlinable
    public func updateChecksum(old: UInt32, new: UInt32) {
        let c = packet.checksum
        guard c != 0 else { return }
        let u = InternetChecksum.update(c, old: old, new: new)
        setChecksum(u == 0 ? 0xffff : u)
    }
}

/// A UDP header as a value.
public struct UDPRepr: Equatable, Hashable, Sendable {
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var payloadLength: Int

    public init(sourcePort: UInt16, destinationPort: UInt16, payloadLength: Int) {
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.payloadLength = payloadLength
    }

    /// Reads a checked datagram. With `.verify` a non-zero checksum that does not verify
    /// is `.badChecksum`; `.partial` (the field holds the pseudo-header sum) and `.ignore`
    /// skip the check.
    @inlinable
    public static func parse(_ packet: UDPPacket, source: IPv4Address, destination: IPv4Address,
                             checksums: ChecksumPolicy) throws(WireError) -> UDPRepr {
        if checksums == .verify && !packet.verifyChecksum(source: source, destination: destination) {
            throw .badChecksum(format: .udp)
        }
        return UDPRepr(sourcePort: packet.sourcePort, destinationPort: packet.destinationPort,
                       payloadLength: packet.length - UDPPacket.headerLength)
    }

    public var headerLength: Int { UDPPacket.headerLength }
    public var bufferLength: Int { UDPPacket.headerLength + payloadLength }

    /// Writes the header into `buffer`, which holds the whole datagram (`bufferLength`
    /// bytes, the payload already in place after the header), then the checksum per `checksums`.
    @inlinable
    public func emit(into buffer: UnsafeMutableRawBufferPointer, source: IPv4Address, destination: IPv4Address,
                     checksums: ChecksumPolicy) {
        typealias F = UDPPacket.Field
        precondition(buffer.count >= bufferLength && bufferLength <= 65535, "UDPRepr.emit: buffer too small")
        let datagram = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<bufferLength])
        datagram.set16(F.sourcePort, sourcePort)
        datagram.set16(F.destinationPort, destinationPort)
        datagram.set16(F.length, UInt16(bufferLength))
        fillL4Checksum(datagram, field: F.checksum, pseudoHeader: (source, destination, IPProtocol.udp.rawValue),
                       policy: checksums, zeroMeansNone: true)
    }
}
