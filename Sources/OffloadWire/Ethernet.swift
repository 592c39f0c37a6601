import OffloadCore

/// EtherType values this stack knows.
public struct EtherType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let ipv4 = EtherType(rawValue: 0x0800)
    public static let arp = EtherType(rawValue: 0x0806)
    public static let vlan = EtherType(rawValue: 0x8100)
    public static let ipv6 = EtherType(rawValue: 0x86dd)
    public var description: String {
        switch self {
        case .ipv4: return "IPv4"
        case .arp: return "ARP"
        case .vlan: return "802.1Q"
        case .ipv6: return "IPv6"
        default: return "0x" + String(rawValue, radix: 16)
        }
    }
}

/// An Ethernet II frame (no FCS): a checked view over its bytes.
public struct EthernetFrame {
    public enum Field {
        public static let destination = 0
        public static let source = 6
        public static let etherType = 12
        public static let payload = 14
    }
    public static let headerLength = 14

    /// The whole frame.
    public let bytes: UnsafeRawBufferPointer

    /// Checks that `bytes` hold at least an Ethernet header.
    @inlinable
    public init(checking bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.headerLength else {
            throw .truncated(format: .ethernet, needed: Self.headerLength, available: bytes.count)
        }
        self.bytes = bytes
    }

    @inlinable public var destination: MACAddress { MACAddress(loadingFrom: bytes.baseAddress.unsafelyUnwrapped, offset: Field.destination) }
    @inlinable public var source: MACAddress { MACAddress(loadingFrom: bytes.baseAddress.unsafelyUnwrapped, offset: Field.source) }
    @inlinable public var etherType: EtherType { EtherType(rawValue: bytes.u16(Field.etherType)) }
    @inlinable public var payload: UnsafeRawBufferPointer { bytes.slice(Field.payload, bytes.count) }
}

/// A writable Ethernet frame view, for rewriting addresses in place.
public struct MutableEthernetFrame {
    public let bytes: UnsafeMutableRawBufferPointer

    @inlinable
    public init(checking bytes: UnsafeMutableRawBufferPointer) throws(WireError) {
        _ = try EthernetFrame(checking: UnsafeRawBufferPointer(bytes))
        self.bytes = bytes
    }
    @inlinable public var frame: EthernetFrame { EthernetFrame(unchecked: bytes.readOnly) }
    @inlinable public func setDestination(_ a: MACAddress) { a.store(to: bytes.baseAddress.unsafelyUnwrapped, offset: EthernetFrame.Field.destination) }
    @inlinable public func setSource(_ a: MACAddress) { a.store(to: bytes.baseAddress.unsafelyUnwrapped, offset: EthernetFrame.Field.source) }
    @inlinable public func setEtherType(_ t: EtherType) { bytes.set16(EthernetFrame.Field.etherType, t.rawValue) }
    @inlinable public var payload: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: bytes[EthernetFrame.Field.payload...])
    }
}

extension EthernetFrame {
    @inlinable init(unchecked bytes: UnsafeRawBufferPointer) { self.bytes = bytes }
}

/// An Ethernet II header as a value.
public struct EthernetRepr: Equatable, Hashable, Sendable {
    public var destination: MACAddress
    public var source: MACAddress
    public var etherType: EtherType

    @inlinable
    public init(destination: MACAddress, source: MACAddress, etherType: EtherType) {
        self.destination = destination
        self.source = source
        self.etherType = etherType
    }

    @inlinable
    public static func parse(_ frame: EthernetFrame) -> EthernetRepr {
        EthernetRepr(destination: frame.destination, source: frame.source, etherType: frame.etherType)
    }

    public var headerLength: Int { EthernetFrame.headerLength }
    /// The frame length for a payload of `payloadLength` bytes.
    public func bufferLength(payloadLength: Int) -> Int { EthernetFrame.headerLength + payloadLength }

    /// Writes the 14-byte header at the start of `buffer`.
    @inlinable
    public func emit(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= EthernetFrame.headerLength, "EthernetRepr.emit: buffer too small")
        let p = buffer.baseAddress.unsafelyUnwrapped
        destination.store(to: p, offset: EthernetFrame.Field.destination)
        source.store(to: p, offset: EthernetFrame.Field.source)
        buffer.set16(EthernetFrame.Field.etherType, etherType.rawValue)
    }
}
