/// SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012): a keyed
/// 64-bit hash that an attacker who does not know the 128-bit key cannot predict. It is
/// what RFC 6528 asks of an ISN generator's F, and what keeps SYN cookies from being forged.
///
/// Incremental and allocation-free: append bytes or little-endian integers, then `finalize`.
/// Appending the integer `x` of width n bytes is the same as appending its n bytes in
/// little-endian order, as the reference implementation reads its input.
public struct SipHash24: Sendable {
    var v0, v1, v2, v3: UInt64
    /// Bytes appended that do not yet fill a word, the first in the low byte.
    var pending: UInt64 = 0
    /// Bytes appended so far (only its low byte reaches the hash, as specified).
    var length = 0

    /// The key as two little-endian words: key bytes 0...7 in `key.0`, 8...15 in `key.1`.
    public init(key: (UInt64, UInt64)) {
        v0 = key.0 ^ 0x736f_6d65_7073_6575 // "somepseudorandomlygeneratedbytes"
        v1 = key.1 ^ 0x646f_7261_6e64_6f6d
        v2 = key.0 ^ 0x6c79_6765_6e65_7261
        v3 = key.1 ^ 0x7465_6462_7974_6573
    }

    public mutating func append(_ byte: UInt8) {
        pending |= UInt64(byte) << (8 * UInt64(length & 7))
        length += 1
        if length & 7 == 0 {
            compress(pending)
            pending = 0
        }
    }

    /// Appends the integer's bytes, least significant first.
    public mutating func append<T: FixedWidthInteger & UnsignedInteger>(_ value: T) {
        if T.bitWidth == 64 && length & 7 == 0 {
            compress(UInt64(truncatingIfNeeded: value))
            length += 8
            return
        }
        for i in stride(from: 0, to: T.bitWidth, by: 8) { append(UInt8(truncatingIfNeeded: value >> i)) }
    }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        for byte in bytes { append(byte) }
    }

    /// The hash of everything appended.
    public func finalize() -> UInt64 {
        var s = self
        s.compress(UInt64(truncatingIfNeeded: length) << 56 | pending)
        s.v2 ^= 0xff
        s.round(); s.round(); s.round(); s.round()
        return s.v0 ^ s.v1 ^ s.v2 ^ s.v3
    }

    /// The hash of `bytes` under `key`.
    public static func hash(_ bytes: UnsafeRawBufferPointer, key: (UInt64, UInt64)) -> UInt64 {
        var h = SipHash24(key: key)
        h.append(bytes)
        return h.finalize()
    }

    /// One message word, with two rounds (the "2" of 2-4).
    mutating func compress(_ m: UInt64) {
        v3 ^= m
        round(); round()
        v0 ^= m
    }

    mutating func round() {
        v0 &+= v1; v1 = v1.rotatedLeft(13); v1 ^= v0; v0 = v0.rotatedLeft(32)
        v2 &+= v3; v3 = v3.rotatedLeft(16); v3 ^= v2
        v0 &+= v3; v3 = v3.rotatedLeft(21); v3 ^= v0
        v2 &+= v1; v1 = v1.rotatedLeft(17); v1 ^= v2; v2 = v2.rotatedLeft(32)
    }
}

fileprivate extension UInt64 {
    @inline(__always)
    func rotatedLeft(_ n: UInt64) -> UInt64 { self << n | self >> (64 - n) }
}
