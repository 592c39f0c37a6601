/// A 48-bit Ethernet address.
public struct MACAddress: Hashable, Sendable, Comparable, CustomStringConvertible, LosslessStringConvertible {
    /// The six bytes as a big-endian number in the low 48 bits.
    public let rawValue: UInt64

    @inlinable
    public init(rawValue: UInt64) { self.rawValue = rawValue & 0xffff_ffff_ffff }

    public init(_ b0: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8, _ b4: UInt8, _ b5: UInt8) {
        var v: UInt64 = 0
        for b in [b0, b1, b2, b3, b4, b5] { v = v << 8 | UInt64(b) }
        rawValue = v
    }

    public static let broadcast = MACAddress(rawValue: 0xffff_ffff_ffff)
    public static let zero = MACAddress(rawValue: 0)

    /// Reads six bytes at `offset`.
    @inlinable
    public init(loadingFrom p: UnsafeRawPointer, offset: Int = 0) {
        let hi = UInt64(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
        let lo = UInt64(UInt32(bigEndian: p.loadUnaligned(fromByteOffset: offset + 2, as: UInt32.self)))
        rawValue = hi << 32 | lo
    }

    /// Writes the six bytes at `offset`.
    @inlinable
    public func store(to p: UnsafeMutableRawPointer, offset: Int = 0) {
        p.storeBytes(of: UInt16(truncatingIfNeeded: rawValue >> 32).bigEndian, toByteOffset: offset, as: UInt16.self)
        p.storeBytes(of: UInt32(truncatingIfNeeded: rawValue).bigEndian, toByteOffset: offset + 2, as: UInt32.self)
    }

    public var bytes: [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: rawValue >> (40 - 8 * $0)) } }
    public var isBroadcast: Bool { self == .broadcast }
    /// Group bit of the first byte: broadcast and multicast.
    public var isMulticast: Bool { (rawValue >> 40) & 1 == 1 }
    /// A locally administered unicast address from a seed, for hosts that need a made-up MAC.
    public static func local(_ seed: UInt64) -> MACAddress {
        MACAddress(rawValue: (0x02 << 40) | (seed & 0xff_ffff_ffff))
    }

    /// Parses `aa:bb:cc:dd:ee:ff` (or with `-` between the bytes).
    public init(parsing text: String) throws(AddressError) {
        let parts = text.split(separator: text.contains("-") ? "-" : ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { throw .invalidMAC(text, reason: "expected six bytes separated by ':'") }
        var v: UInt64 = 0
        for part in parts {
            guard part.count == 2, let b = UInt8(part, radix: 16) else {
                throw .invalidMAC(text, reason: "'\(part)' is not two hex digits")
            }
            v = v << 8 | UInt64(b)
        }
        rawValue = v
    }

    public init?(_ description: String) { try? self.init(parsing: description) }

    public var description: String {
        bytes.map { b in
            let s = String(b, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined(separator: ":")
    }

    public static func < (a: MACAddress, b: MACAddress) -> Bool { a.rawValue < b.rawValue }
}
