import OffloadCore

/// A UDP GSO super-datagram cut into the datagrams it stands for, as Linux's GSO cuts it for
/// a device without UDP segmentation offload: each datagram has the packet's IP header (its
/// identification one more per datagram, its own total length and header checksum), a UDP
/// header with its own length and a whole checksum, and its `segmentSize` bytes of the
/// payload (the last may be shorter).
///
/// The gateway cuts one when the datagrams do not fit the next hop and DF is clear (Linux
/// clears it on a super-datagram longer than the MTU unless the socket asks for path MTU
/// discovery): each is then sent on in fragments (RFC 1812 §5.2.6).
struct UDPSegmentation {
    private let frame: UnsafeRawBufferPointer
    private let headerLength: Int
    private let payloadLength: Int
    let segmentSize: Int

    /// Nil unless `frame` is Ethernet + an unfragmented IPv4 packet of UDP whole in it, and
    /// the segment size is above 0.
    init?(frame: UnsafeRawBufferPointer, segmentSize: Int) {
        guard segmentSize > 0, frame.count >= 42, frame[12] == 0x08, frame[13] == 0x00, frame[14] >> 4 == 4,
              frame[23] == 17 else { return nil }
        let headerLength = Int(frame[14] & 0x0f) * 4
        let totalLength = Int(frame[16]) << 8 | Int(frame[17])
        let fragment = (Int(frame[20]) << 8 | Int(frame[21])) & 0x3fff
        guard headerLength >= 20, fragment == 0, totalLength >= headerLength + 8,
              14 + totalLength <= frame.count else { return nil }
        self.frame = frame
        self.headerLength = headerLength
        self.payloadLength = totalLength - headerLength - 8
        self.segmentSize = segmentSize
    }

    /// How many datagrams (an empty payload is one datagram).
    var count: Int { max(1, (payloadLength + segmentSize - 1) / segmentSize) }

    /// Bytes datagram `i`'s frame takes.
    func frameLength(_ i: Int) -> Int { 14 + headerLength + 8 + pieceLength(i) }

    private func pieceLength(_ i: Int) -> Int { min(segmentSize, payloadLength - i * segmentSize) }

    /// Writes datagram `i` at the start of `buffer`; returns its length (0 if it does not fit).
    func write(_ i: Int, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let length = frameLength(i), piece = pieceLength(i)
        guard buffer.count >= length, let out = buffer.baseAddress, let source = frame.baseAddress else { return 0 }
        let udpStart = 14 + headerLength
        out.copyMemory(from: source, byteCount: udpStart + 8)
        (out + udpStart + 8).copyMemory(from: source + udpStart + 8 + i * segmentSize, byteCount: piece)
        let ip = UnsafeMutableRawBufferPointer(start: out + 14, count: headerLength)
        ip.storeBytes(of: UInt16(headerLength + 8 + piece).bigEndian, toByteOffset: 2, as: UInt16.self)
        let identification = UInt16(frame[18]) << 8 | UInt16(frame[19])
        ip.storeBytes(of: (identification &+ UInt16(truncatingIfNeeded: i)).bigEndian, toByteOffset: 4, as: UInt16.self)
        ip.storeBytes(of: 0, toByteOffset: 10, as: UInt16.self)
        ip.storeBytes(of: InternetChecksum.checksum(UnsafeRawBufferPointer(ip)).bigEndian, toByteOffset: 10, as: UInt16.self)
        // The UDP checksum over the pseudo-header and the whole datagram (RFC 768); 0 is sent as 0xFFFF.
        let udp = UnsafeMutableRawBufferPointer(start: out + udpStart, count: 8 + piece)
        udp.storeBytes(of: UInt16(8 + piece).bigEndian, toByteOffset: 4, as: UInt16.self)
        udp.storeBytes(of: 0, toByteOffset: 6, as: UInt16.self)
        var sum = InternetChecksum()
        sum.add(UnsafeRawBufferPointer(rebasing: ip[12..<20]))
        sum.add(UInt16(17))
        sum.add(UInt16(8 + piece))
        sum.add(UnsafeRawBufferPointer(udp))
        let checksum = sum.value
        udp.storeBytes(of: (checksum == 0 ? 0xffff : checksum).bigEndian, toByteOffset: 6, as: UInt16.self)
        return length
    }
}
