import ArgumentParser
import OffloadCore
import OffloadLink

/// Which link a command runs on: `tap:NAME` (a TAP device the command creates) or
/// `afpacket:IFNAME` (an existing interface, for example one end of a veth pair).
enum LinkSpec: ExpressibleByArgument, CustomStringConvertible {
    case tap(String)
    case packetSocket(String)

    init?(argument: String) {
        let parts = argument.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, !parts[1].isEmpty, parts[1].utf8.count <= 15 else { return nil }
        switch parts[0] {
        case "tap": self = .tap(parts[1])
        case "afpacket": self = .packetSocket(parts[1])
        default: return nil
        }
    }

    var description: String {
        switch self {
        case .tap(let n): return "tap:\(n)"
        case .packetSocket(let n): return "afpacket:\(n)"
        }
    }

    static var defaultValueDescription: String { "tap:NAME | afpacket:IFNAME" }

    /// The kernel's name of the device.
    var deviceName: String {
        switch self {
        case .tap(let n), .packetSocket(let n): return n
        }
    }

    /// Creates the TAP device, or opens a packet socket on the interface. A TAP takes the
    /// virtio-net header when `superFrames`: frames it is given may be TCP super-frames (a
    /// gateway's packet socket receives them), which only the kernel behind the header cuts.
    /// `tapMTU` sets a TAP's MTU where it is made (a packet socket uses its interface's).
    func open(superFrames: Bool = false, tapMTU: Int? = nil) throws(LinkError) -> SystemLink {
        switch self {
        case .tap(let name):
            return .tap(try TapLink(name: name, mode: superFrames ? .virtioNetHeader : .plain, mtu: tapMTU))
        case .packetSocket(let name): return .packetSocket(try PacketSocketLink(interface: name))
        }
    }
}

extension IPv4CIDR: ExpressibleByArgument {
    public init?(argument: String) { try? self.init(parsing: argument) }
}

extension MACAddress: ExpressibleByArgument {
    public init?(argument: String) { try? self.init(parsing: argument) }
}

extension IPv4Address: ExpressibleByArgument {
    public init?(argument: String) { try? self.init(parsing: argument) }
}
