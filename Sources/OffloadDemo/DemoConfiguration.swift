import OffloadCore

/// What `offload demo` runs: two hosts and a gateway in one simulated world, the traffic
/// between them, and the engine's switches.
public struct DemoConfiguration: Sendable, Codable {
    /// Seeds the world: the interleaving of engines and software, the wires' losses, the data.
    public var seed: UInt64 = 1
    /// Fraction of frames each wire drops, both ways on both wires (0.05 is 5%).
    public var loss = 0.0
    /// TCP connections opened at once, and as many UDP flows (every other one RTP).
    public var flows = 16
    /// Bytes each TCP connection sends (at most `maximumBytesPerConnection`).
    public var bytesPerConnection = 4 << 20
    /// Bytes of one zero-copy message (one application buffer).
    public var messageSize = 65_536
    /// Datagrams each UDP flow sends, one every `flows` × 625 ns.
    public var datagramsPerFlow = 160
    public var datagramSize = 1000
    /// The gateway checks every packet its software re-inserts (B7).
    public var audit = false
    /// The gateway keeps each flow's order across the slow-to-fast handoff (B5).
    public var orderGuard = true
    /// Every frame the gateway receives and sends, written here (pcap).
    public var pcapPath: String?

    public init() {}

    /// A stream's header carries its length in 32 bits; past a GiB a connection's transfer
    /// takes minutes of wall time anyway.
    public static let maximumBytesPerConnection = 1 << 30

    /// Everything must fit the engines' tables and the hosts' port ranges.
    public func validate() throws(DemoError) {
        guard (0..<1).contains(loss) else { throw .invalid("--loss is a fraction from 0 up to (not including) 1, such as 0.05") }
        // Past 256 flows starting at once from one client, the gateway's protection against
        // floods of new flows (B10) starts to drop them, as it should.
        guard (1...256).contains(flows) else { throw .invalid("--flows is 1 to 256") }
        guard (0...Self.maximumBytesPerConnection).contains(bytesPerConnection) else {
            throw .invalid("--bytes is 0 to 1G per connection")
        }
        guard (1...(16 << 20)).contains(messageSize) else { throw .invalid("a message holds 1 byte to 16 MiB") }
        guard (1...100_000).contains(datagramsPerFlow) else { throw .invalid("a UDP flow sends 1 to 100000 datagrams") }
        guard (24...1472).contains(datagramSize) else { throw .invalid("a datagram holds 24 to 1472 bytes") }
    }
}

public enum DemoError: Error, CustomStringConvertible, Equatable {
    case invalid(String)
    /// The world could not be built (an engine's memory, the capture file).
    case setup(String)

    public var description: String {
        switch self {
        case .invalid(let message): message
        case .setup(let message): message
        }
    }
}
