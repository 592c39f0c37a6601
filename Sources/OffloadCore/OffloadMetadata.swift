/// What a device still has to do to a frame: the offload work that travels with it.
///
/// These are the offloads of the virtio-net header (and of Linux's `skb`): a partial L4
/// checksum, where the checksum field holds only the pseudo-header sum and the ones'
/// complement of the bytes from `checksumStart` on still has to be folded in; and TCP and
/// UDP segmentation, where one super-frame of up to 64 KiB stands for several frames.
public enum OffloadMetadata: Equatable, Hashable, Sendable {
    /// The frame is complete: every checksum is final.
    case none
    /// The checksum at `checksumStart + checksumOffset` covers only the pseudo-header.
    case partialChecksum(checksumStart: UInt16, checksumOffset: UInt16)
    /// A TCP super-segment: cut the payload after `headerLength` bytes into `segmentSize`
    /// pieces; each resulting frame's checksum is partial as in `partialChecksum`.
    case tcpSegmentation(
        segmentSize: UInt16, headerLength: UInt16, checksumStart: UInt16, checksumOffset: UInt16)
    /// A UDP super-datagram (Linux's UDP GSO, `UDP_SEGMENT`, as QUIC stacks send): cut the
    /// payload after the UDP header into `segmentSize` pieces, each its own datagram with
    /// the same headers; each checksum is partial as in `partialChecksum`.
    case udpSegmentation(
        segmentSize: UInt16, headerLength: UInt16, checksumStart: UInt16, checksumOffset: UInt16)

    /// Whether the frame's L4 checksum is partial (as it is in a TCP super-segment too). A
    /// pattern match, where `!= .none` would call the synthesized `==` on every frame.
    @inlinable
    public var hasPartialChecksum: Bool {
        if case .none = self { return false }
        return true
    }

    /// Where the partial checksum starts and where its field lies, if the checksum is partial.
    @inlinable
    public var partialChecksumLocation: (start: Int, offset: Int)? {
        switch self {
        case .none: return nil
        case .partialChecksum(let start, let offset): return (Int(start), Int(offset))
        case .tcpSegmentation(_, _, let start, let offset), .udpSegmentation(_, _, let start, let offset):
            return (Int(start), Int(offset))
        }
    }

    /// Whether the frame stands for several (a TCP or UDP super-frame).
    @inlinable
    public var isSuperFrame: Bool {
        switch self {
        case .none, .partialChecksum: return false
        case .tcpSegmentation, .udpSegmentation: return true
        }
    }
}

extension OffloadMetadata {
    /// The value a finished checksum field takes. A computed 0 stays 0 (what a full
    /// computation gives; tshark calls 0xffff in its place an error), except in UDP, where 0
    /// means "no checksum" and 0xffff, the same number in ones' complement, is sent instead
    /// (RFC 768). UDP's field is the one 6 bytes into its header, TCP's 16.
    @inlinable
    public static func finished(_ value: UInt16, offset: Int) -> UInt16 {
        value == 0 && offset == 6 ? 0xffff : value
    }

    /// Finishes a partial checksum in `frame`: folds in the bytes from `start` on and stores
    /// the final value at `start + offset`. This is what a device does on transmit, and what
    /// a capture does so that a file shows frames as they are on the wire. Returns false
    /// (and changes nothing) when the location lies outside the frame.
    @discardableResult
    public static func finishChecksum(in frame: UnsafeMutableRawBufferPointer, start: Int, offset: Int) -> Bool {
        guard start >= 0, offset >= 0, start + offset + 2 <= frame.count, let base = frame.baseAddress else {
            return false
        }
        // The field holds the pseudo-header sum; summing over it includes it.
        let value = InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: frame[start...]))
        base.storeBytes(of: finished(value, offset: offset).bigEndian, toByteOffset: start + offset, as: UInt16.self)
        return true
    }
}

extension OffloadMetadata {
    /// Whether an Ethernet + IPv4 `frame` with this metadata leaves a port of `mtu` as
    /// frames of at most `mtu` bytes of IP packet: it is that small, or it is a super-frame
    /// whose segments (its headers, TCP options included, and `segmentSize` bytes) are.
    @inlinable
    public func fits(_ frame: UnsafeRawBufferPointer, mtu: Int) -> Bool {
        if frame.count &- 14 <= mtu { return true }
        guard frame.count > 14 else { return false }
        let ipHeader = Int(frame[14] & 0x0f) &<< 2
        switch self {
        case .tcpSegmentation(let segmentSize, _, _, _):
            guard 14 + ipHeader + 12 < frame.count else { return false }
            let tcpHeader = Int(frame[14 + ipHeader + 12] >> 4) &<< 2
            return ipHeader + tcpHeader + Int(segmentSize) <= mtu
        case .udpSegmentation(let segmentSize, _, _, _):
            return ipHeader + 8 + Int(segmentSize) <= mtu
        case .none, .partialChecksum:
            return false
        }
    }
}
