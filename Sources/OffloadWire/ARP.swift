import OffloadCore

/// An ARP packet for Ethernet and IPv4 (RFC 826), the only kind there is here: a checked view.
public struct ARPPacket {
    public enum Field {
        public static let hardwareType = 0
        public static let protocolType = 2
        public static let hardwareLength = 4
        public static let protocolLength = 5
        public static let operation = 6
        public static let senderHardwareAddress = 8
        public static let senderProtocolAddress = 14
        public static let targetHardwareAddress = 18
        public static let targetProtocolAddress = 24
    }
    /// Length of an Ethernet/IPv4 ARP packet (frames pad it to 46).
    public static let length = 28
    public static let hardwareTypeEthernet: UInt16 = 1

    /// The 28 bytes of the packet (any padding after them is left out).
    public let bytes: UnsafeRawBufferPointer

    /// Checks the length and that the packet is Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4).
    @inlinable
    public init(checking bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.length else {
            throw .truncated(format: .arp, needed: Self.length, available: bytes.count)
        }
        let htype = bytes.u16(Field.hardwareType)
        guard htype == Self.hardwareTypeEthernet else {
            throw .badField(format: .arp, field: "hardware type", value: Int(htype))
        }
        let ptype = bytes.u16(Field.protocolType)
        guard ptype == EtherType.ipv4.rawValue else {
            throw .badField(format: .arp, field: "protocol type", value: Int(ptype))
        }
        guard bytes[Field.hardwareLength] == 6 else {
            throw .badField(format: .arp, field: "hardware length", value: Int(bytes[Field.hardwareLength]))
        }
        guard bytes[Field.protocolLength] == 4 else {
            throw .badField(format: .arp, field: "protocol length", value: Int(bytes[Field.protocolLength]))
        }
        self.bytes = bytes.slice(0, Self.length)
    }

    @inlinable public var operation: UInt16 { bytes.u16(Field.operation) }
    @inlinable public var senderHardwareAddress: MACAddress { MACAddress(loadingFrom: bytes.baseAddress.unsafelyUnwrapped, offset: Field.senderHardwareAddress) }
    @inlinable public var senderProtocolAddress: IPv4Address { IPv4Address(loadingFrom: bytes.baseAddress.unsafelyUnwrapped, offset: Field.senderProtocolAddress) }
    @inlinable public var targetHardwareAddress: MACAddress { MACAddress(loadingFrom: bytes.baseAddress.unsafelyUnwrapped, offset: Field.targetHardwareAddress) }
    @inlinable public var targetProtocolAddress: IPv4Address { IPv4Address(loadingFrom: bytes.baseAddress.unsafelyUnwrapped, offset: Field.targetProtocolAddress) }
}

/// An ARP operation: request (1) or reply (2).
public enum ARPOperation: UInt16, Sendable, Hashable {
    case request = 1
    case reply = 2
}

/// An Ethernet/IPv4 ARP packet as a value.
public struct ARPRepr: Equatable, Hashable, Sendable {
    public var operation: ARPOperation
    public var senderHardwareAddress: MACAddress
    public var senderProtocolAddress: IPv4Address
    public var targetHardwareAddress: MACAddress
    public var targetProtocolAddress: IPv4Address

    public init(operation: ARPOperation, senderHardwareAddress: MACAddress, senderProtocolAddress: IPv4Address,
                targetHardwareAddress: MACAddress, targetProtocolAddress: IPv4Address) {
        self.operation = operation
        self.senderHardwareAddress = senderHardwareAddress
        self.senderProtocolAddress = senderProtocolAddress
        self.targetHardwareAddress = targetHardwareAddress
        self.targetProtocolAddress = targetProtocolAddress
    }

    /// Reads the packet; an operation other than request or reply is `.badField`.
    @inlinable
    public static func parse(_ packet: ARPPacket) throws(WireError) -> ARPRepr {
        guard let op = ARPOperation(rawValue: packet.operation) else {
            throw .badField(format: .arp, field: "operation", value: Int(packet.operation))
        }
        return ARPRepr(operation: op, senderHardwareAddress: packet.senderHardwareAddress,
                       senderProtocolAddress: packet.senderProtocolAddress,
                       targetHardwareAddress: packet.targetHardwareAddress,
                       targetProtocolAddress: packet.targetProtocolAddress)
    }

    public var headerLength: Int { ARPPacket.length }
    public var bufferLength: Int { ARPPacket.length }

    /// Writes the 28 bytes at the start of `buffer`.
    @inlinable
    public func emit(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= ARPPacket.length, "ARPRepr.emit: buffer too small")
        typealias F = ARPPacket.Field
        let p = buffer.baseAddress.unsafelyUnwrapped
        buffer.set16(F.hardwareType, ARPPacket.hardwareTypeEthernet)
        buffer.set16(F.protocolType, EtherType.ipv4.rawValue)
        buffer[F.hardwareLength] = 6
        buffer[F.protocolLength] = 4
        buffer.set16(F.operation, operation.rawValue)
        senderHardwareAddress.store(to: p, offset: F.senderHardwareAddress)
        senderProtocolAddress.store(to: p, offset: F.senderProtocolAddress)
        targetHardwareAddress.store(to: p, offset: F.targetHardwareAddress)
        targetProtocolAddress.store(to: p, offset: F.targetProtocolAddress)
    }
}
