import OffloadCore
import OffloadWire

/// The headers in front of a TCP segment on Ethernet: the addresses, which never change over
/// a connection (constant state), and TTL and TOS, which the host owns (cached state, T2).
/// The host's IP layer and the engine build their segments with it: headers in their own
/// memory, the payload left where it is (a gather list).
public struct TCPFrameHeaders: Sendable, Equatable {
    public var sourceMAC: MACAddress
    public var destinationMAC: MACAddress
    public var source: IPv4Address
    public var destination: IPv4Address
    public var timeToLive: UInt8
    public var typeOfService: UInt8

    /// Ethernet, IPv4 without options, TCP with the most options.
    public static let maximumLength = EthernetFrame.headerLength + IPv4Packet.minimumHeaderLength
        + TCPPacket.maximumHeaderLength

    public init(sourceMAC: MACAddress, destinationMAC: MACAddress, source: IPv4Address, destination: IPv4Address,
                timeToLive: UInt8 = 64, typeOfService: UInt8 = 0) {
        self.sourceMAC = sourceMAC
        self.destinationMAC = destinationMAC
        self.source = source
        self.destination = destination
        self.timeToLive = timeToLive
        self.typeOfService = typeOfService
    }

    /// Writes the Ethernet, IPv4 and TCP headers of `segment` (whose payload is `payload`)
    /// at the start of `buffer` (`maximumLength` bytes at least) and returns their length
    /// and the metadata to send with them. The TCP checksum is summed over the headers and
    /// the payload slices, or, with `partialChecksum`, left to the device (the field holds
    /// the pseudo-header sum, and the metadata says where it is). A payload longer than
    /// `segmentSize` is a TSO super-segment for the device to cut into pieces of that size
    /// (the checksum is then partial whatever `partialChecksum` says).
    @inlinable
    public func write(_ segment: TCPRepr, payload: UnsafeBufferPointer<UnsafeRawBufferPointer>, identification: UInt16,
                      partialChecksum: Bool, segmentSize: Int = .max, into buffer: UnsafeMutableRawBufferPointer)
        -> (length: Int, metadata: OffloadMetadata) {
        let ipStart = EthernetFrame.headerLength
        let tcpStart = ipStart + IPv4Packet.minimumHeaderLength
        let end = tcpStart + segment.headerLength
        precondition(buffer.count >= end, "TCPFrameHeaders.write: buffer too small")
        EthernetRepr(destination: destinationMAC, source: sourceMAC, etherType: .ipv4).emit(into: buffer)
        IPv4Repr(source: source, destination: destination, protocol: .tcp, payloadLength: segment.bufferLength,
                 timeToLive: timeToLive, typeOfService: typeOfService, identification: identification)
            .emit(into: UnsafeMutableRawBufferPointer(rebasing: buffer[ipStart..<tcpStart]), checksums: .verify)
        let tcp = UnsafeMutableRawBufferPointer(rebasing: buffer[tcpStart..<end])
        segment.emitHeader(into: tcp)
        var sum = ipv4PseudoHeaderChecksum(source: source, destination: destination, protocol: IPProtocol.tcp.rawValue,
                                           length: segment.bufferLength)
        let field = tcpStart + TCPPacket.Field.checksum
        let offset = UInt16(TCPPacket.Field.checksum)
        if segment.payloadLength > segmentSize {
            buffer.storeBytes(of: sum.partial.bigEndian, toByteOffset: field, as: UInt16.self)
            return (end, .tcpSegmentation(segmentSize: UInt16(segmentSize), headerLength: UInt16(end),
                                          checksumStart: UInt16(tcpStart), checksumOffset: offset))
        }
        if partialChecksum {
            buffer.storeBytes(of: sum.partial.bigEndian, toByteOffset: field, as: UInt16.self)
            return (end, .partialChecksum(checksumStart: UInt16(tcpStart), checksumOffset: offset))
        }
        sum.add(UnsafeRawBufferPointer(tcp))
        for slice in payload { sum.add(slice) }
        buffer.storeBytes(of: sum.value.bigEndian, toByteOffset: field, as: UInt16.self)
        return (end, .none)
    }
}
