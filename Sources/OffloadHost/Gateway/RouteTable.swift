import OffloadCore

/// IPv4 routes of the gateway: longest prefix wins. A handful of routes, looked up once per
/// new flow in the software, so a list kept sorted by prefix length is the right size.
public struct RouteTable: Sendable {
    public struct Route: Sendable, Equatable, CustomStringConvertible {
        public var prefix: IPv4CIDR
        /// The port the route leaves by.
        public var port: UInt16
        /// The next hop, or nil when the destination is on the port's own link.
        public var nextHop: IPv4Address?

        public init(prefix: IPv4CIDR, port: UInt16, nextHop: IPv4Address? = nil) {
            self.prefix = prefix
            self.port = port
            self.nextHop = nextHop
        }

        public var description: String {
            "\(prefix.network)/\(prefix.prefixLength) port \(port)" + (nextHop.map { " via \($0)" } ?? "")
        }
    }

    public private(set) var routes: [Route] = []

    public init(_ routes: [Route] = []) {
        for r in routes { add(r) }
    }

    /// Adds a route; one for the same prefix replaces the old one.
    public mutating func add(_ route: Route) {
        routes.removeAll { $0.prefix.network == route.prefix.network && $0.prefix.prefixLength == route.prefix.prefixLength }
        let at = routes.firstIndex { $0.prefix.prefixLength < route.prefix.prefixLength } ?? routes.count
        routes.insert(route, at: at)
    }

    /// The most specific route to `destination`, if any.
    public func lookup(_ destination: IPv4Address) -> Route? {
        routes.first { $0.prefix.contains(destination) }
    }

    /// Where a packet to `destination` goes next on its link: the route's next hop, or the
    /// destination itself.
    public func nextHop(for destination: IPv4Address) -> (port: UInt16, address: IPv4Address)? {
        lookup(destination).map { ($0.port, $0.nextHop ?? destination) }
    }
}
