import OffloadCore
import OffloadEngine

/// The gateway's decision for a new flow (the slow path's policy): route by destination,
/// source-NAT flows that leave by the outside port, and translate replies to the outside
/// address back to the inside host that owns the port. Next hops' MAC addresses come from
/// `neighbor` (the gateway's ARP cache); a flow with no route, no mapping or no known next
/// hop gets no action, and the slow path drops it with a named reason.
public final class GatewayPolicy {
    public struct Port: Sendable {
        public var address: IPv4CIDR
        public var hardwareAddress: MACAddress

        public init(address: IPv4CIDR, hardwareAddress: MACAddress) {
            self.address = address
            self.hardwareAddress = hardwareAddress
        }
    }

    public let ports: [Port]
    public private(set) var routes: RouteTable
    /// The port that faces the outside, and the NAT behind it; nil routes without NAT.
    public let outsidePort: UInt16?
    public private(set) var nat: NAT44?
    private let neighbor: (UInt16, IPv4Address) -> MACAddress?
    public private(set) var noRoute: UInt64 = 0
    public private(set) var noMapping: UInt64 = 0
    public private(set) var unresolved: UInt64 = 0

    public init(ports: [Port], routes: RouteTable, outsidePort: UInt16?, neighbor: @escaping (UInt16, IPv4Address) -> MACAddress?) {
        self.ports = ports
        self.routes = routes
        self.outsidePort = outsidePort
        self.neighbor = neighbor
        if let outside = outsidePort { nat = NAT44(outsideAddress: ports[Int(outside)].address.address) }
    }

    /// The action for the flow `key`, or nil to drop it.
    public func action(for key: FlowKey) -> FlowAction? {
        var destination = key.destination
        var translatedDestination: (IPv4Address, UInt16)?
        if key.ingressPort == outsidePort, let nat, key.destination == nat.outsideAddress {
            // A reply to a mapping: back to the inside host that owns the port.
            guard let inside = nat.reverse(protocol: key.protocol, outsidePort: key.destinationPort) else {
                noMapping &+= 1
                return nil
            }
            destination = inside.address
            translatedDestination = (inside.address, inside.port)
        }
        guard let (egress, hop) = routes.nextHop(for: destination), Int(egress) < ports.count,
              egress != key.ingressPort || translatedDestination != nil else {
            noRoute &+= 1
            return nil
        }
        guard let mac = neighbor(egress, hop) else {
            unresolved &+= 1
            return nil
        }
        var forward = FlowAction.Forward(outputPort: egress, destinationMAC: mac,
                                         sourceMAC: ports[Int(egress)].hardwareAddress)
        if let (address, port) = translatedDestination {
            forward.translatedDestination = address
            if key.protocol == 6 || key.protocol == 17 { forward.translatedDestinationPort = port }
        } else if egress == outsidePort, var nat {
            let inside = NAT44.Inside(protocol: key.protocol, address: key.source, port: key.sourcePort)
            do {
                let port = try nat.map(inside)
                self.nat = nat
                forward.translatedSource = nat.outsideAddress
                if key.protocol == 6 || key.protocol == 17 { forward.translatedSourcePort = port }
            } catch {
                self.nat = nat
                noMapping &+= 1
                return nil
            }
        }
        return .forward(forward)
    }
}
