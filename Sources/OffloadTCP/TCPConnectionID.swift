import OffloadCore

/// A connection's 4-tuple, from our side.
public struct TCPConnectionID: Hashable, Sendable, CustomStringConvertible {
    public var local: IPv4Address
    public var localPort: UInt16
    public var remote: IPv4Address
    public var remotePort: UInt16

    public init(local: IPv4Address, localPort: UInt16, remote: IPv4Address, remotePort: UInt16) {
        self.local = local
        self.localPort = localPort
        self.remote = remote
        self.remotePort = remotePort
    }

    public var description: String { "\(local):\(localPort)-\(remote):\(remotePort)" }
}
