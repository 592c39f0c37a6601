import OffloadCore

/// A router's fragmentation of an IPv4 packet larger than the next hop's MTU that may be
/// fragmented (DF clear): RFC 791's procedure, as RFC 1812 §4.2.2.7 asks of a router. Each
/// fragment carries the Ethernet header and the IP header (the first all of its options,
/// the others only those whose copied flag is set), and a piece of the payload that is a
/// multiple of 8 bytes but for the last; MF is set on all but the last, which keeps the
/// packet's own (it may be a fragment already). The payload is copied, not changed: a
/// transport checksum must be whole before (a fragment's device cannot finish it).
struct IPv4Fragmentation {
    /// Each fragment: where its payload starts in the packet's payload, and how long it is.
    private(set) var pieces: [(start: Int, count: Int)] = []
    private let frame: UnsafeRawBufferPointer
    private let headerLength: Int
    /// The options a fragment after the first carries, padded to 4 bytes.
    private let copiedOptions: [UInt8]

    /// Nil when `frame` is not an Ethernet + IPv4 frame whose packet is whole in it, or the
    /// MTU leaves less than 8 bytes of payload a fragment (RFC 791: every link takes 68).
    init?(frame: UnsafeRawBufferPointer, mtu: Int) {
        guard frame.count >= 34, frame[12] == 0x08, frame[13] == 0x00, frame[14] >> 4 == 4 else { return nil }
        let headerLength = Int(frame[14] & 0x0f) * 4
        let totalLength = Int(frame[16]) << 8 | Int(frame[17])
        guard headerLength >= 20, totalLength >= headerLength, 14 + totalLength <= frame.count else { return nil }
        self.frame = frame
        self.headerLength = headerLength
        copiedOptions = Self.copiedOptions(UnsafeRawBufferPointer(rebasing: frame[34..<(14 + headerLength)]))
        let firstRoom = (mtu - headerLength) & ~7, laterRoom = (mtu - 20 - copiedOptions.count) & ~7
        guard firstRoom >= 8, laterRoom >= 8 else { return nil }
        let payloadLength = totalLength - headerLength
        // The last piece's offset must fit the 13-bit field (a malformed fragment's may not).
        let offset = (Int(frame[20]) << 8 | Int(frame[21])) & 0x1fff
        guard offset + max(0, payloadLength - 1) / 8 <= 0x1fff else { return nil }
        var start = 0
        while start < payloadLength {
            let count = min(start == 0 ? firstRoom : laterRoom, payloadLength - start)
            pieces.append((start, count))
            start += count
        }
    }

    /// Bytes fragment `i`'s frame takes.
    func frameLength(_ i: Int) -> Int { 14 + ipHeaderLength(i) + pieces[i].count }

    /// Writes fragment `i` (Ethernet header, IP header, payload piece) at the start of
    /// `buffer`, which holds `frameLength(i)` bytes at least; returns its length (0 if it
    /// does not fit). Fragment 0 may be written over the packet itself, once the others are.
    func write(_ i: Int, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let header = ipHeaderLength(i), length = frameLength(i)
        guard buffer.count >= length, let out = buffer.baseAddress, let source = frame.baseAddress else { return 0 }
        // Ethernet and the fixed IP header; then the options; then the piece.
        out.copyMemory(from: source, byteCount: 34)
        if i == 0 {
            (out + 34).copyMemory(from: source + 34, byteCount: headerLength - 20)
        } else {
            copiedOptions.withUnsafeBytes { (out + 34).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
        let piece = pieces[i]
        (out + 14 + header).copyMemory(from: source + 14 + headerLength + piece.start, byteCount: piece.count)
        let ip = UnsafeMutableRawBufferPointer(start: out + 14, count: header)
        ip[0] = 0x40 | UInt8(header / 4)
        ip.storeBytes(of: UInt16(header + piece.count).bigEndian, toByteOffset: 2, as: UInt16.self)
        // Flags and offset: the packet's own offset (8-byte units) plus the piece's; MF on
        // all but the last, which keeps the packet's.
        let original = UInt16(frame[20]) << 8 | UInt16(frame[21])
        let moreFragments = i < pieces.count - 1 || original & 0x2000 != 0
        let offset = (original & 0x1fff) + UInt16(piece.start / 8)
        ip.storeBytes(of: ((moreFragments ? 0x2000 : 0) | offset).bigEndian, toByteOffset: 6, as: UInt16.self)
        ip.storeBytes(of: 0, toByteOffset: 10, as: UInt16.self)
        ip.storeBytes(of: InternetChecksum.checksum(UnsafeRawBufferPointer(ip)).bigEndian, toByteOffset: 10, as: UInt16.self)
        return length
    }

    private func ipHeaderLength(_ i: Int) -> Int { i == 0 ? headerLength : 20 + copiedOptions.count }

    /// RFC 791: the options whose type has the copied flag (the top bit) set, in order,
    /// padded with end-of-options to a multiple of 4 bytes. A malformed option list ends
    /// the copy where it goes wrong.
    private static func copiedOptions(_ options: UnsafeRawBufferPointer) -> [UInt8] {
        var copied: [UInt8] = [], at = 0
        while at < options.count {
            let type = options[at]
            if type == 0 { break }  // end of options
            if type == 1 { at += 1; continue }  // no-operation: one byte, not copied
            guard at + 1 < options.count, options[at + 1] >= 2, at + Int(options[at + 1]) <= options.count else { break }
            let length = Int(options[at + 1])
            if type & 0x80 != 0 { copied += options[at..<(at + length)] }
            at += length
        }
        while copied.count % 4 != 0 { copied.append(0) }
        return copied
    }
}
