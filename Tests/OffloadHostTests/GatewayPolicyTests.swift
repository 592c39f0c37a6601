import Testing
import OffloadCore
import OffloadHost

@Suite struct RouteTableTests {
    @Test func longestPrefixWins() throws {
        let table = RouteTable([
            .init(prefix: try IPv4CIDR(parsing: "0.0.0.0/0"), port: 1, nextHop: IPv4Address(10, 9, 0, 1)),
            .init(prefix: try IPv4CIDR(parsing: "10.1.0.0/16"), port: 2),
            .init(prefix: try IPv4CIDR(parsing: "10.1.2.0/24"), port: 3),
        ])
        #expect(table.lookup(IPv4Address(10, 1, 2, 9))?.port == 3)
        #expect(table.lookup(IPv4Address(10, 1, 3, 9))?.port == 2)
        #expect(table.nextHop(for: IPv4Address(8, 8, 4, 4))! == (1, IPv4Address(10, 9, 0, 1)))
        #expect(table.nextHop(for: IPv4Address(10, 1, 2, 9))! == (3, IPv4Address(10, 1, 2, 9)))
        #expect(RouteTable().lookup(IPv4Address(1, 2, 3, 4)) == nil)
    }

    @Test func samePrefixReplaces() throws {
        var table = RouteTable([.init(prefix: try IPv4CIDR(parsing: "10.0.0.0/8"), port: 1)])
        table.add(.init(prefix: try IPv4CIDR(parsing: "10.2.3.4/8"), port: 5))
        #expect(table.routes.count == 1 && table.lookup(IPv4Address(10, 0, 0, 1))?.port == 5)
    }
}

@Suite struct NAT44Tests {
    let outside = IPv4Address(10, 77, 0, 1)

    @Test func portsArePreservedWhenFreeAndReversible() throws {
        var nat = NAT44(outsideAddress: outside)
        let a = NAT44.Inside(protocol: 6, address: IPv4Address(10, 1, 0, 2), port: 40000)
        let b = NAT44.Inside(protocol: 6, address: IPv4Address(10, 1, 0, 3), port: 40000)
        let c = NAT44.Inside(protocol: 17, address: IPv4Address(10, 1, 0, 3), port: 40000)
        #expect(try nat.map(a) == 40000)
        let pb = try nat.map(b)
        #expect(pb != 40000, "the same port for another inside host must differ")
        #expect(try nat.map(c) == 40000, "protocols have separate port spaces")
        #expect(try nat.map(a) == 40000, "stable")
        #expect(nat.reverse(protocol: 6, outsidePort: pb) == b)
        #expect(nat.reverse(protocol: 6, outsidePort: 40000) == a)
        nat.release(a)
        #expect(nat.reverse(protocol: 6, outsidePort: 40000) == nil)
        #expect(nat.count == 2)
    }

    @Test func exhaustionIsATypedErrorAndPortsComeBack() throws {
        var nat = NAT44(outsideAddress: outside, ports: 5000...5003)
        var inside: [NAT44.Inside] = []
        for i in 0..<4 {
            let host = NAT44.Inside(protocol: 17, address: IPv4Address(10, 1, 0, UInt8(i)), port: 1234)
            inside.append(host)
            _ = try nat.map(host)
        }
        let extra = NAT44.Inside(protocol: 17, address: IPv4Address(10, 1, 1, 1), port: 1234)
        #expect(throws: NAT44.Failure.portsExhausted(protocol: 17)) { try nat.map(extra) }
        #expect(nat.exhaustions == 1)
        nat.release(inside[2])
        #expect(try nat.map(extra) >= 5000)
        // Every mapped port is distinct and inside the range.
        let mapped = Set(try (inside.enumerated().filter { $0.offset != 2 }.map(\.element) + [extra]).map { try nat.map($0) })
        #expect(mapped.count == 4 && mapped.allSatisfy { (5000...5003).contains($0) })
    }
}
