import COffloadShim

/// The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
///
/// The ones' complement sum does not depend on byte order except for a final swap
/// (RFC 1071 section 2(B)), so bytes are summed as native 32-bit words into 64-bit
/// accumulators, and the swap happens once when the sum is folded. Values go in and come
/// out in host order: the number to be stored big-endian in the header.
public struct InternetChecksum: Sendable {
    /// Ones' complement sum so far, of native-order words, not yet folded.
    @usableFromInline var sum: UInt64 = 0
    /// Whether an odd number of bytes has been added: the next bytes start mid-word.
    @usableFromInline var odd = false

    @inlinable public init() {}

    /// Adds bytes that follow whatever was added before (a gather list may be summed piece by piece).
    @inlinable
    public mutating func add(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        let piece = InternetChecksum.nativeSum(bytes)
        // A piece starting at an odd offset has its bytes in the other half of every word.
        sum &+= odd ? UInt64(InternetChecksum.fold(piece).byteSwapped) : piece
        if bytes.count & 1 == 1 { odd.toggle() }
    }

    /// Adds a 16-bit field given in host order (a pseudo-header length, a protocol number).
    @inlinable
    public mutating func add(_ value: UInt16) {
        sum &+= UInt64(value.bigEndian)
    }

    /// Adds a 32-bit field given in host order (an IPv4 address).
    @inlinable
    public mutating func add(_ value: UInt32) {
        sum &+= UInt64(UInt16(truncatingIfNeeded: value >> 16).bigEndian)
        sum &+= UInt64(UInt16(truncatingIfNeeded: value).bigEndian)
    }

    /// The folded sum in host order, not complemented (what a partial checksum field holds).
    @inlinable
    public var partial: UInt16 { InternetChecksum.fold(sum).bigEndian }

    /// The checksum in host order: store it big-endian. A buffer whose checksum field is
    /// already filled in verifies when this is 0.
    @inlinable
    public var value: UInt16 { ~partial }

    /// The checksum of one contiguous run of bytes.
    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        ~fold(nativeSum(bytes)).bigEndian
    }

    /// Folds a 64-bit ones' complement sum to 16 bits.
    @inlinable
    public static func fold(_ s: UInt64) -> UInt16 {
        var s = (s & 0xffff_ffff) &+ (s >> 32)
        s = (s & 0xffff_ffff) &+ (s >> 32)
        s = (s & 0xffff) &+ (s >> 16)
        s = (s & 0xffff) &+ (s >> 16)
        return UInt16(truncatingIfNeeded: s)
    }

    /// Sum of the bytes as native words (odd tail zero-padded), unfolded: only its value
    /// modulo 0xFFFF, what `fold` keeps, is defined.
    ///
    /// Four independent accumulators over 64-bit loads let the CPU add in parallel; each
    /// takes at most 2^32 additions of 32-bit values before it could carry out, far beyond
    /// any packet.
    ///
    /// From 256 bytes on, a C loop with vectors (AVX-512 or AVX2, chosen at load time) takes
    /// the bulk: Swift has no per-function target features, and the vectors double the rate
    /// on full-size frames.
    @inlinable
    public static func nativeSum(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        guard var p = bytes.baseAddress else { return 0 }
        var n = bytes.count
        var a: UInt64 = 0, b: UInt64 = 0, c: UInt64 = 0, d: UInt64 = 0
        if n >= 256 {
            var consumed = 0
            a = offload_checksum_wide_sum(p, n, &consumed)
            p += consumed
            n &-= consumed
        }
        while n >= 32 {
            let w0 = p.loadUnaligned(as: UInt64.self)
            let w1 = p.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
            let w2 = p.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
            let w3 = p.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
            a &+= (w0 & 0xffff_ffff) &+ (w0 >> 32)
            b &+= (w1 & 0xffff_ffff) &+ (w1 >> 32)
            c &+= (w2 & 0xffff_ffff) &+ (w2 >> 32)
            d &+= (w3 & 0xffff_ffff) &+ (w3 >> 32)
            p += 32
            n &-= 32
        }
        while n >= 4 {
            a &+= UInt64(p.loadUnaligned(as: UInt32.self))
            p += 4
            n &-= 4
        }
        if n >= 2 {
            b &+= UInt64(p.loadUnaligned(as: UInt16.self))
            p += 2
            n &-= 2
        }
        if n == 1 {
            // The odd byte is the first byte of a zero-padded word.
            c &+= UInt64(UInt16(littleEndian: UInt16(p.load(as: UInt8.self))))
        }
        return a &+ b &+ c &+ d
    }

    /// RFC 1624 equation 3: the checksum after a 16-bit field changed from `old` to `new`.
    @inlinable
    public static func update(_ checksum: UInt16, old: UInt16, new: UInt16) -> UInt16 {
        var s = UInt32(~checksum) &+ UInt32(~old) &+ UInt32(new)
        s = (s & 0xffff) &+ (s >> 16)
        s = (s & 0xffff) &+ (s >> 16)
        return ~UInt16(truncatingIfNeeded: s)
    }

    /// RFC 1624 for a 32-bit field (an IPv4 address): two 16-bit updates.
    @inlinable
    public static func update(_ checksum: UInt16, old: UInt32, new: UInt32) -> UInt16 {
        let hi = update(checksum, old: UInt16(truncatingIfNeeded: old >> 16), new: UInt16(truncatingIfNeeded: new >> 16))
        return update(hi, old: UInt16(truncatingIfNeeded: old), new: UInt16(truncatingIfNeeded: new))
    }
}
