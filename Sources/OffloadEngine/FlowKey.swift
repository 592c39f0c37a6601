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

    public var description: String {
        "port \(ingressPort) proto \(`protocol`) \(source):\(sourcePort) > \(destination):\(destinationPort)"
    }
}
