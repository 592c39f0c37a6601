import OffloadCore

/// What the connection table matches on: the ingress port and the IPv4 5-tuple. Traffic
/// other than TCP and UDP matches by protocol with both ports 0.
public struct FlowKey: Hashable, Sendable, CustomStringConvertible {
    /// The key as the table stores and compares it (`packed`): the source and destination
    /// addresses in the first word; the ports, the ingress port and the protocol in the
    /// second. Kept packed, a key costs nothing to hash or compare, and a frame's key is
    /// two wide loads.
    @usableFromInline var high: UInt64
    @usableFromInline var low: UInt64

    @inlinable
    public init(ingressPort: UInt16, protocol: UInt8, source: IPv4Address, destination: IPv4Address,
                sourcePort: UInt16, destinationPort: UInt16) {
        high = UInt64(source.rawValue) << 32 | UInt64(destination.rawValue)
        low = UInt64(sourcePort) << 48 | UInt64(destinationPort) << 32 | UInt64(ingressPort) << 16 | UInt64(`protocol`)
    }

    @inlinable public var ingressPort: UInt16 {
        get { UInt16(truncatingIfNeeded: low >> 16) }
        set { low = low & ~0xffff_0000 | UInt64(newValue) << 16 }
    }
    @inlinable public var `protocol`: UInt8 {
        get { UInt8(truncatingIfNeeded: low) }
        set { low = low & ~0xff | UInt64(newValue) }
    }
    @inlinable public var source: IPv4Address {
        get { IPv4Address(rawValue: UInt32(truncatingIfNeeded: high >> 32)) }
        set { high = high & 0xffff_ffff | UInt64(newValue.rawValue) << 32 }
    }
    @inlinable public var destination: IPv4Address {
        get { IPv4Address(rawValue: UInt32(truncatingIfNeeded: high)) }
        set { high = high & ~0xffff_ffff | UInt64(newValue.rawValue) }
    }
    @inlinable public var sourcePort: UInt16 {
        get { UInt16(truncatingIfNeeded: low >> 48) }
        set { low = low & 0x0000_ffff_ffff_ffff | UInt64(newValue) << 48 }
    }
    @inlinable public var destinationPort: UInt16 {
        get { UInt16(truncatingIfNeeded: low >> 32) }
        set { low = low & ~0xffff_0000_0000 | UInt64(newValue) << 32 }
    }

    /// The key packed into two words, for hashing and for comparing in one go.
    @inlinable
    public var packed: (UInt64, UInt64) { (high, low) }

    /// The key whose `packed` form is `(a, b)`; bits 8 to 15 of `b`, which no key uses (the
    /// table marks its slots there), are ignored.
    @inlinable
    public init(packed a: UInt64, _ b: UInt64) {
        high = a
        low = b & ~0xff00
    }

    /// A fast keyed 64-bit hash of the packed words, for the connection table's slot index.
    ///
    /// Two multiplications by odd constants and xor-shifts (the murmur3 / splitmix finalizer
    /// shape): every input bit reaches the low bits that pick the slot, at a fraction of the
    /// cost of SipHash (`Hasher`). `seed` is the table's secret, so a sender who does
    /// not know it cannot aim a flood of new flows at one probe chain; this is not a
    /// cryptographic guarantee, only a cheap defence, with the load factor at most 0.5
    /// bounding the damage of what gets through.
    @inlinable
    public static func tableHash(_ a: UInt64, _ b: UInt64, seed: UInt64) -> UInt64 {
        var h = (a ^ seed) &* 0x9E37_79B9_7F4A_7C15
        h ^= (b ^ (seed >> 7 | seed << 57)) &* 0xC2B2_AE3D_27D4_EB4F
        h ^= h >> 32
        h &*= 0xD6E8_FEB8_6659_FD93
        h ^= h >> 29
        return h
    }

    /// Hashes the two packed words (the slow path's dictionaries): fewer hasher calls than
    /// one per field.
    @inlinable
    public func hash(into hasher: inout Hasher) {
        let (a, b) = packed
        hasher.combine(a)
        hasher.combine(b)
    }

    public var description: String {
        "port \(ingressPort) proto \(`protocol`) \(source):\(sourcePort) > \(destination):\(destinationPort)"
    }
}
