import OffloadCore

/// What the connection table matches on: the ingress port and the IPv4 5-tuple. Traffic
/// other than TCP and UDP matches by protocol with both ports 0.
public struct FlowKey: Hashable, Sendable, CustomStringConvertible {
    public var ingressPort: UInt16
    public var `protocol`: UInt8
    public var source: IPv4Address
    public var destination: IPv4Address
    public var sourcePort: UInt16
    public var destinationPort: UInt16

    @inlinable
    public init(ingressPort: UInt16, protocol: UInt8, source: IPv4Address, destination: IPv4Address,
                sourcePort: UInt16, destinationPort: UInt16) {
        self.ingressPort = ingressPort
        self.protocol = `protocol`
        self.source = source
        self.destination = destination
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
    }

    /// The key packed into two words, for hashing and for comparing in one go.
    @inlinable
    public var packed: (UInt64, UInt64) {
        (UInt64(source.rawValue) << 32 | UInt64(destination.rawValue),
         UInt64(sourcePort) << 48 | UInt64(destinationPort) << 32 | UInt64(ingressPort) << 16 | UInt64(`protocol`))
    }

    /// Rebuilds a key from its `packed` form (the bits 8 to 15 of the second word are ignored:
    /// the connection table keeps its occupancy mark there).
    @inlinable
    public init(packed a: UInt64, _ b: UInt64) {
        self.init(ingressPort: UInt16(truncatingIfNeeded: b >> 16), protocol: UInt8(truncatingIfNeeded: b),
                  source: IPv4Address(rawValue: UInt32(truncatingIfNeeded: a >> 32)),
                  destination: IPv4Address(rawValue: UInt32(truncatingIfNeeded: a)),
                  sourcePort: UInt16(truncatingIfNeeded: b >> 48),
                  destinationPort: UInt16(truncatingIfNeeded: b >> 32))
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
