import OffloadCore

/// Source NAT with port allocation (NAT44, RFC 3022's NAPT): inside (address, port) pairs
/// share one outside address, each mapped to an outside port per protocol. The mapping is
/// kept both ways: outgoing flows are rewritten to it, and replies to the outside port are
/// rewritten back. Ports are released when the gateway expires the mapping.
public struct NAT44: Sendable {
    public struct Inside: Hashable, Sendable {
        public var `protocol`: UInt8
        public var address: IPv4Address
        public var port: UInt16

        public init(protocol: UInt8, address: IPv4Address, port: UInt16) {
            self.protocol = `protocol`
            self.address = address
            self.port = port
        }
    }

    /// Why a mapping could not be made.
    public enum Failure: Error, Equatable, Sendable {
        /// Every port of the range is in use for that protocol.
        case portsExhausted(protocol: UInt8)
    }

    public let outsideAddress: IPv4Address
    public let ports: ClosedRange<UInt16>
    private var outward: [Inside: UInt16] = [:]
    private var inward: [UInt32: Inside] = [:]
    /// Where the search for a free port resumes, per protocol.
    private var cursor: [UInt8: UInt16] = [:]
    public private(set) var exhaustions: UInt64 = 0

    public init(outsideAddress: IPv4Address, ports: ClosedRange<UInt16> = 1024...65535) {
        self.outsideAddress = outsideAddress
        self.ports = ports
    }

    public var count: Int { outward.count }

    /// The outside port of `inside`, made if needed: the inside port itself when it is free
    /// (ports survive NAT where they can), else the next free one.
    public mutating func map(_ inside: Inside) throws(Failure) -> UInt16 {
        if let port = outward[inside] { return port }
        // Protocols without ports (ICMP) have one mapping per protocol, at port 0: the
        // first inside host to use one gets replies to the outside address.
        let hasPorts = inside.protocol == 6 || inside.protocol == 17
        var candidate = ports.contains(inside.port) || !hasPorts ? inside.port : (cursor[inside.protocol] ?? ports.lowerBound)
        let size = Int(ports.upperBound) - Int(ports.lowerBound) + 1
        var tried = 0
        while inward[Self.slot(inside.protocol, candidate)] != nil {
            tried += 1
            if tried >= size {
                exhaustions &+= 1
                throw .portsExhausted(protocol: inside.protocol)
            }
            candidate = candidate == ports.upperBound ? ports.lowerBound : candidate + 1
        }
        outward[inside] = candidate
        inward[Self.slot(inside.protocol, candidate)] = inside
        cursor[inside.protocol] = candidate == ports.upperBound ? ports.lowerBound : candidate + 1
        return candidate
    }

    /// The inside end of a reply to `outsidePort`, if mapped.
    public func reverse(protocol proto: UInt8, outsidePort: UInt16) -> Inside? {
        inward[Self.slot(proto, outsidePort)]
    }

    /// Releases the mapping of `inside`.
    public mutating func release(_ inside: Inside) {
        guard let port = outward.removeValue(forKey: inside) else { return }
        inward[Self.slot(inside.protocol, port)] = nil
    }

    private static func slot(_ proto: UInt8, _ port: UInt16) -> UInt32 { UInt32(proto) << 16 | UInt32(port) }
}
