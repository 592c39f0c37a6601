import OffloadCore

/// IP protocol numbers this stack knows.
public struct IPProtocol: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let icmp = IPProtocol(rawValue: 1)
    public static let tcp = IPProtocol(rawValue: 6)
    public static let udp = IPProtocol(rawValue: 17)
    public var description: String {
        switch self {
        case .icmp: return "ICMP"
        case .tcp: return "TCP"
        case .udp: return "UDP"
        default: return "protocol \(rawValue)"
        }
    }
}

/// An IPv4 packet (RFC 791): a checked view over its bytes.
///
/// After `init(checking:)` the version is 4, the header length is at least 20 and lies within
/// the total length, and the total length lies within the bytes; `bytes` is then trimmed to
/// the total length (Ethernet padding is left out).
public struct IPv4Packet {
    public enum Field {
        public static let versionAndHeaderLength = 0
        public static let typeOfService = 1
        public static let totalLength = 2
        public static let identification = 4
        public static let flagsAndFragmentOffset = 6
        public static let timeToLive = 8
        public static let `protocol` = 9
        public static let checksum = 10
        public static let source = 12
        public static let destination = 16
        public static let options = 20
    }
    public static let minimumHeaderLength = 20
    public static let flagDontFragment: UInt16 = 0x4000
    public static let flagMoreFragments: UInt16 = 0x2000
    public static let fragmentOffsetMask: UInt16 = 0x1fff

    /// The packet: header and payload, `totalLength` bytes.
    public let bytes: UnsafeRawBufferPointer

    /// Checks a whole packet (see the type's documentation).
    @inlinable
    public init(checking bytes: UnsafeRawBufferPointer) throws(WireError) {
        let ihl = try Self.checkHeader(bytes)
        let total = Int(bytes.u16(Field.totalLength))
        guard total >= ihl else { throw .badHeaderLength(format: .ipv4, value: ihl) }
        guard total <= bytes.count else { throw .badLength(format: .ipv4, field: "total length", value: total) }
        self.bytes = bytes.slice(0, total)
    }

    /// Checks only the header: for the original datagram quoted in an ICMP error, whose total
    /// length counts bytes that are not there. `bytes` is kept as given (header and what follows).
    @inlinable
    public init(checkingHeader bytes: UnsafeRawBufferPointer) throws(WireError) {
        let ihl = try Self.checkHeader(bytes)
        guard Int(bytes.u16(Field.totalLength)) >= ihl else { throw .badHeaderLength(format: .ipv4, value: ihl) }
        self.bytes = bytes
    }

    @inlinable init(unchecked bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// Version 4, IHL at least 5, the header present; returns the header length in bytes.
    @inlinable
    static func checkHeader(_ bytes: UnsafeRawBufferPointer) throws(WireError) -> Int {
        guard bytes.count >= minimumHeaderLength else {
            throw .truncated(format: .ipv4, needed: minimumHeaderLength, available: bytes.count)
        }
        let vihl = bytes[Field.versionAndHeaderLength]
        guard vihl >> 4 == 4 else { throw .badField(format: .ipv4, field: "version", value: Int(vihl >> 4)) }
        let ihl = Int(vihl & 0xf) * 4
        guard ihl >= minimumHeaderLength else { throw .badHeaderLength(format: .ipv4, value: ihl) }
        guard ihl <= bytes.count else { throw .truncated(format: .ipv4, needed: ihl, available: bytes.count) }
        return ihl
    }

    @inlinable public var version: UInt8 { bytes[Field.versionAndHeaderLength] >> 4 }
    /// Header length in bytes (IHL × 4).
    @inlinable public var headerLength: Int { Int(bytes[Field.versionAndHeaderLength] & 0xf) &* 4 }
    @inlinable public var typeOfService: UInt8 { bytes[Field.typeOfService] }
    @inlinable public var totalLength: Int { Int(bytes.u16(Field.totalLength)) }
    @inlinable public var identification: UInt16 { bytes.u16(Field.identification) }
    @inlinable public var dontFragment: Bool { bytes.u16(Field.flagsAndFragmentOffset) & Self.flagDontFragment != 0 }
    @inlinable public var moreFragments: Bool { bytes.u16(Field.flagsAndFragmentOffset) & Self.flagMoreFragments != 0 }
    /// Fragment offset in bytes.
    @inlinable public var fragmentOffset: Int { Int(bytes.u16(Field.flagsAndFragmentOffset) & Self.fragmentOffsetMask) &* 8 }
    /// Whether this is a fragment (more fragments follow, or the offset is not 0).
    @inlinable public var isFragment: Bool { bytes.u16(Field.flagsAndFragmentOffset) & (Self.flagMoreFragments | Self.fragmentOffsetMask) != 0 }
    @inlinable public var timeToLive: UInt8 { bytes[Field.timeToLive] }
    @inlinable public var `protocol`: IPProtocol { IPProtocol(rawValue: bytes[Field.protocol]) }
    @inlinable public var checksum: UInt16 { bytes.u16(Field.checksum) }
    @inlinable public var source: IPv4Address { IPv4Address(rawValue: bytes.u32(Field.source)) }
    @inlinable public var destination: IPv4Address { IPv4Address(rawValue: bytes.u32(Field.destination)) }
    /// Header bytes after the fixed 20 (options), possibly empty.
    @inlinable public var options: UnsafeRawBufferPointer { bytes.slice(Field.options, headerLength) }
    /// Whether the header checksum verifies.
    @inlinable public var verifyChecksum: Bool { InternetChecksum.checksum(bytes.slice(0, headerLength)) == 0 }
    /// The bytes after the header, up to the total length (for a quoted header: what is present).
    @inlinable public var payload: UnsafeRawBufferPointer { bytes.slice(headerLength, bytes.count) }
}

/// A writable IPv4 packet view, for rewriting fields in place (NAT, TTL).
public struct MutableIPv4Packet {
    public typealias Field = IPv4Packet.Field
    public let bytes: UnsafeMutableRawBufferPointer

    /// Checks as `IPv4Packet(checking:)` does; `bytes` is trimmed to the total length.
    @inlinable
    public init(checking bytes: UnsafeMutableRawBufferPointer) throws(WireError) {
        let view = try IPv4Packet(checking: UnsafeRawBufferPointer(bytes))
        self.bytes = UnsafeMutableRawBufferPointer(rebasing: bytes[0..<view.bytes.count])
    }

    @inlinable public var packet: IPv4Packet { IPv4Packet(unchecked: bytes.readOnly) }
    @inlinable public var payload: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: bytes[packet.headerLength...])
    }

    @inlinable public func setTimeToLive(_ ttl: UInt8) { bytes[Field.timeToLive] = ttl }
    @inlinable public func setSource(_ a: IPv4Address) { bytes.set32(Field.source, a.rawValue) }
    @inlinable public func setDestination(_ a: IPv4Address) { bytes.set32(Field.destination, a.rawValue) }
    @inlinable public func setChecksum(_ c: UInt16) { bytes.set16(Field.checksum, c) }
    @inlinable public func setIdentification(_ id: UInt16) { bytes.set16(Field.identification, id) }

    /// Recomputes the header checksum from scratch.
    @inlinable
    public func fillChecksum() {
        setChecksum(0)
        setChecksum(InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<packet.headerLength])))
    }

    /// Decrements the TTL and updates the checksum incrementally. Returns false, changing
    /// nothing, when the TTL is already 0.
    @inlinable @discardableResult
    public func decrementTimeToLive() -> Bool {
        let old = UInt16(bytes[Field.timeToLive]) << 8 | UInt16(bytes[Field.protocol])
        guard old >> 8 > 0 else { return false }
        bytes[Field.timeToLive] &-= 1
        setChecksum(InternetChecksum.update(packet.checksum, old: old, new: old &- 0x100))
        return true
    }

    /// Replaces the source address, updating the header checksum incrementally.
    @inlinable
    public func rewriteSource(_ a: IPv4Address) {
        setChecksum(InternetChecksum.update(packet.checksum, old: packet.source.rawValue, new: a.rawValue))
        setSource(a)
    }

    /// Replaces the destination address, updating the header checksum incrementally.
    @inlinable
    public func rewriteDestination(_ a: IPv4Address) {
        setChecksum(InternetChecksum.update(packet.checksum, old: packet.destination.rawValue, new: a.rawValue))
        setDestination(a)
    }
}

/// An IPv4 header as a value. Options are not kept: a parsed header with options emits
/// without them.
public struct IPv4Repr: Equatable, Hashable, Sendable {
    public var source: IPv4Address
    public var destination: IPv4Address
    public var `protocol`: IPProtocol
    /// Bytes after the header.
    public var payloadLength: Int
    public var timeToLive: UInt8
    public var typeOfService: UInt8
    public var identification: UInt16
    public var dontFragment: Bool

    public init(source: IPv4Address, destination: IPv4Address, protocol: IPProtocol, payloadLength: Int,
                timeToLive: UInt8 = 64, typeOfService: UInt8 = 0, identification: UInt16 = 0,
                dontFragment: Bool = true) {
        self.source = source
        self.destination = destination
        self.protocol = `protocol`
        self.payloadLength = payloadLength
        self.timeToLive = timeToLive
        self.typeOfService = typeOfService
        self.identification = identification
        self.dontFragment = dontFragment
    }

    /// Reads a checked packet. Fragments are `.unsupported`; with `.verify` or `.partial`
    /// a header checksum that does not verify is `.badChecksum`.
    @inlinable
    public static func parse(_ packet: IPv4Packet, checksums: ChecksumPolicy) throws(WireError) -> IPv4Repr {
        if packet.isFragment {
            throw .unsupported(format: .ipv4, what: packet.moreFragments ? "fragment (more fragments)" : "fragment (offset \(packet.fragmentOffset))")
        }
        if checksums.forHeader == .verify && !packet.verifyChecksum { throw .badChecksum(format: .ipv4) }
        return IPv4Repr(source: packet.source, destination: packet.destination, protocol: packet.protocol,
                        payloadLength: packet.totalLength - packet.headerLength, timeToLive: packet.timeToLive,
                        typeOfService: packet.typeOfService, identification: packet.identification,
                        dontFragment: packet.dontFragment)
    }

    public var headerLength: Int { IPv4Packet.minimumHeaderLength }
    public var bufferLength: Int { IPv4Packet.minimumHeaderLength + payloadLength }

    /// Writes the 20-byte header at the start of `buffer` with its checksum (computed with
    /// `.verify` or `.partial`, 0 with `.ignore`). The payload is not touched.
    @inlinable
    public func emit(into buffer: UnsafeMutableRawBufferPointer, checksums: ChecksumPolicy) {
        typealias F = IPv4Packet.Field
        precondition(buffer.count >= IPv4Packet.minimumHeaderLength, "IPv4Repr.emit: buffer too small")
        precondition(payloadLength >= 0 && payloadLength <= 65535 - 20, "IPv4Repr.emit: payload length out of range")
        buffer[F.versionAndHeaderLength] = 0x45
        buffer[F.typeOfService] = typeOfService
        buffer.set16(F.totalLength, UInt16(bufferLength))
        buffer.set16(F.identification, identification)
        buffer.set16(F.flagsAndFragmentOffset, dontFragment ? IPv4Packet.flagDontFragment : 0)
        buffer[F.timeToLive] = timeToLive
        buffer[F.protocol] = `protocol`.rawValue
        buffer.set16(F.checksum, 0)
        buffer.set32(F.source, source.rawValue)
        buffer.set32(F.destination, destination.rawValue)
        if checksums.forHeader == .verify {
            buffer.set16(F.checksum, InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: buffer[0..<20])))
        }
    }
}
