import OffloadCore

/// The 10-byte virtio-net header (struct virtio_net_hdr, little-endian) that TAP with
/// `IFF_VNET_HDR` and AF_PACKET with `PACKET_VNET_HDR` put in front of every frame. It
/// carries a frame's offload work: a partial checksum and GSO super-frames.
public struct VirtioNetHeader: Equatable, Hashable, Sendable {
    public static let size = 10

    public static let flagNeedsChecksum: UInt8 = 1  // VIRTIO_NET_HDR_F_NEEDS_CSUM
    public static let flagDataValid: UInt8 = 2      // VIRTIO_NET_HDR_F_DATA_VALID
    public static let gsoNone: UInt8 = 0
    public static let gsoTCPv4: UInt8 = 1
    public static let gsoUDP: UInt8 = 3
    public static let gsoTCPv6: UInt8 = 4
    public static let gsoUDPL4: UInt8 = 5   // VIRTIO_NET_HDR_GSO_UDP_L4 (UDP GSO, Linux 4.18)
    public static let gsoECN: UInt8 = 0x80

    public var flags: UInt8
    public var gsoType: UInt8
    public var headerLength: UInt16
    public var gsoSize: UInt16
    public var checksumStart: UInt16
    public var checksumOffset: UInt16

    public init(flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, gsoSize: UInt16 = 0,
                checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0) {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    /// Reads the header from the first 10 bytes.
    @inlinable
    public init(parsing bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.size, let p = bytes.baseAddress else {
            throw .truncated(format: .virtioNet, needed: Self.size, available: bytes.count)
        }
        flags = p.load(fromByteOffset: 0, as: UInt8.self)
        gsoType = p.load(fromByteOffset: 1, as: UInt8.self)
        headerLength = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        gsoSize = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        checksumStart = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 6, as: UInt16.self))
        checksumOffset = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
    }

    /// Writes the header into the first 10 bytes of `bytes` (which must hold them).
    @inlinable
    public func emit(into bytes: UnsafeMutableRawBufferPointer) {
        precondition(bytes.count >= Self.size, "VirtioNetHeader.emit: buffer too small")
        let p = bytes.baseAddress!
        p.storeBytes(of: flags, toByteOffset: 0, as: UInt8.self)
        p.storeBytes(of: gsoType, toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: headerLength.littleEndian, toByteOffset: 2, as: UInt16.self)
        p.storeBytes(of: gsoSize.littleEndian, toByteOffset: 4, as: UInt16.self)
        p.storeBytes(of: checksumStart.littleEndian, toByteOffset: 6, as: UInt16.self)
        p.storeBytes(of: checksumOffset.littleEndian, toByteOffset: 8, as: UInt16.self)
    }

    /// The header that describes `metadata` (the direction: engine to device).
    @inlinable
    public init(_ metadata: OffloadMetadata) {
        switch metadata {
        case .none:
            self.init()
        case .partialChecksum(let start, let offset):
            self.init(flags: Self.flagNeedsChecksum, checksumStart: start, checksumOffset: offset)
        case .tcpSegmentation(let size, let headerLength, let start, let offset):
            self.init(flags: Self.flagNeedsChecksum, gsoType: Self.gsoTCPv4, headerLength: headerLength,
                      gsoSize: size, checksumStart: start, checksumOffset: offset)
        case .udpSegmentation(let size, let headerLength, let start, let offset):
            self.init(flags: Self.flagNeedsChecksum, gsoType: Self.gsoUDPL4, headerLength: headerLength,
                      gsoSize: size, checksumStart: start, checksumOffset: offset)
        }
    }

    /// The offload work this header describes (the direction: device to engine). A header
    /// that asks for something this stack does not do (IPv6 GSO, UFO, ECN) is an error.
    @inlinable
    public func metadata() throws(WireError) -> OffloadMetadata {
        let needsChecksum = flags & Self.flagNeedsChecksum != 0
        switch gsoType {
        case Self.gsoNone:
            return needsChecksum
                ? .partialChecksum(checksumStart: checksumStart, checksumOffset: checksumOffset) : .none
        case Self.gsoTCPv4, Self.gsoUDPL4:
            guard needsChecksum else {
                throw .badField(format: .virtioNet, field: "flags (GSO without NEEDS_CSUM)", value: Int(flags))
            }
            guard gsoSize > 0 else { throw .badField(format: .virtioNet, field: "gso_size", value: 0) }
            return gsoType == Self.gsoTCPv4
                ? .tcpSegmentation(segmentSize: gsoSize, headerLength: headerLength,
                                   checksumStart: checksumStart, checksumOffset: checksumOffset)
                : .udpSegmentation(segmentSize: gsoSize, headerLength: headerLength,
                                   checksumStart: checksumStart, checksumOffset: checksumOffset)
        default:
            throw .unsupported(format: .virtioNet, what: "gso_type \(gsoType)")
        }
    }
}
