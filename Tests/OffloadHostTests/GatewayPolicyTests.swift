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

import OffloadEngine
import OffloadLink
import OffloadSim
import OffloadWire

/// A client behind port 0 (10.1.0.0/24) and a server behind port 1 (the outside,
/// 10.2.0.0/24): UDP from the client leaves NATed to the gateway's outside address, and the
/// server's replies to that address come back to the client's own address and port.
@Suite struct GatewayNATSimulationTests {
    static let clientMAC = MACAddress.local(0xc1), serverMAC = MACAddress.local(0x51)
    static let inside = MACAddress.local(0x90), outside = MACAddress.local(0x91)

    static func udp(from src: IPv4Address, _ sport: UInt16, to dst: IPv4Address, _ dport: UInt16,
                    toMAC: MACAddress, fromMAC: MACAddress, payload: [UInt8]) -> [UInt8] {
        var frame = [UInt8](repeating: 0, count: 42 + payload.count)
        frame.withUnsafeMutableBytes { raw in
            EthernetRepr(destination: toMAC, source: fromMAC, etherType: .ipv4).emit(into: raw)
            IPv4Repr(source: src, destination: dst, protocol: .udp, payloadLength: 8 + payload.count)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
            for (i, b) in payload.enumerated() { raw[42 + i] = b }
            UDPRepr(sourcePort: sport, destinationPort: dport, payloadLength: payload.count)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[34...]), source: src, destination: dst, checksums: .verify)
        }
        return frame
    }

    @Test(arguments: [SlowPath.Processing.partial, .complete])
    func udpThroughTheNATAndBack(processing: SlowPath.Processing) throws {
        let sim = Simulation(seed: 5)
        let (engine, wires) = Engine.onMemoryWires(configuration: .init(), portCount: 2, clock: sim.clock)
        var client = wires[0], server = wires[1]
        let clientIP = IPv4Address(10, 1, 0, 2), serverIP = IPv4Address(10, 2, 0, 2), natIP = IPv4Address(10, 2, 0, 1)
        let policy = GatewayPolicy(
            ports: [.init(address: try IPv4CIDR(parsing: "10.1.0.1/24"), hardwareAddress: Self.inside),
                    .init(address: try IPv4CIDR(parsing: "10.2.0.1/24"), hardwareAddress: Self.outside)],
            routes: RouteTable([.init(prefix: try IPv4CIDR(parsing: "10.1.0.0/24"), port: 0),
                                .init(prefix: try IPv4CIDR(parsing: "10.2.0.0/24"), port: 1)]),
            outsidePort: 1, clock: sim.clock)
        policy.addNeighbor(port: 0, address: clientIP, hardwareAddress: Self.clientMAC)
        policy.addNeighbor(port: 1, address: serverIP, hardwareAddress: Self.serverMAC)
        let slowPath = SlowPath(exceptions: engine.exceptions, reinsertion: engine.reinsertion, processing: processing,
                                policy: policy)
        sim.addProcess("engine") { engine.poll(now: sim.clock.now) }
        sim.addProcess("software", weight: 0.3) { slowPath.step() > 0 }

        var atServer: [(IPv4Address, UInt16, [UInt8])] = []
        var atClient: [(IPv4Address, UInt16, IPv4Address, UInt16, [UInt8])] = []
        let pool = BufferPool(count: 32, bufferSize: 2048, headroom: 0)
        sim.addProcess("server") {
            // Echo every datagram back to where it came from, as seen by the server.
            var replies: [[UInt8]] = []
            let n = (try? server.receive(into: pool, max: 8) { b in
                let ip = try! IPv4Packet(checking: try! EthernetFrame(checking: b.bytes).payload)
                let udp = try! UDPPacket(checking: ip.payload)
                #expect(udp.verifyChecksum(source: ip.source, destination: ip.destination))
                atServer.append((ip.source, udp.sourcePort, Array(udp.payload)))
                replies.append(Self.udp(from: serverIP, udp.destinationPort, to: ip.source, udp.sourcePort,
                                        toMAC: Self.outside, fromMAC: Self.serverMAC, payload: Array(udp.payload)))
            }) ?? 0
            for r in replies { try! r.withUnsafeBytes { try server.transmit($0) } }
            return n > 0
        }
        sim.addProcess("client") {
            (try? client.receive(into: pool, max: 8) { b in
                let ip = try! IPv4Packet(checking: try! EthernetFrame(checking: b.bytes).payload)
                let udp = try! UDPPacket(checking: ip.payload)
                #expect(udp.verifyChecksum(source: ip.source, destination: ip.destination))
                atClient.append((ip.source, udp.sourcePort, ip.destination, udp.destinationPort, Array(udp.payload)))
            }) ?? 0 > 0
        }
        for n in 0..<20 {
            sim.schedule(at: Instant(nanoseconds: Int64(n) * 10_000)) {
                let frame = Self.udp(from: clientIP, 40000, to: serverIP, 7, toMAC: Self.inside, fromMAC: Self.clientMAC,
                                     payload: [UInt8(n)])
                try! frame.withUnsafeBytes { try client.transmit($0) }
            }
        }
        sim.run(maxSteps: 200_000)
        // The server saw the NAT's address and the client's port (free, so kept).
        #expect(atServer.count == 20)
        #expect(atServer.allSatisfy { $0.0 == natIP && $0.1 == 40000 })
        // The client got every reply, addressed to itself, from the server, in order.
        #expect(atClient.map { $0.4[0] } == (0..<20).map(UInt8.init))
        #expect(atClient.allSatisfy { $0.0 == serverIP && $0.1 == 7 && $0.2 == clientIP && $0.3 == 40000 })
        #expect(engine.counters.fastPath > 0, "later packets of both directions take the fast path")
        #expect(engine.buffered == 0 && engine.counters.totalDrops == 0)
        #expect(policy.nat?.count == 1)
    }

    @Test func noRouteAndUnknownReplyAreNotForwarded() throws {
        let policy = GatewayPolicy(
            ports: [.init(address: try IPv4CIDR(parsing: "10.1.0.1/24"), hardwareAddress: Self.inside),
                    .init(address: try IPv4CIDR(parsing: "10.2.0.1/24"), hardwareAddress: Self.outside)],
            routes: RouteTable([.init(prefix: try IPv4CIDR(parsing: "10.2.0.0/24"), port: 1)]),
            outsidePort: 1, clock: VirtualClock())
        let toNowhere = FlowKey(ingressPort: 0, protocol: 17, source: IPv4Address(10, 1, 0, 2),
                                destination: IPv4Address(192, 168, 9, 9), sourcePort: 1, destinationPort: 2)
        #expect(policy.decide(toNowhere, send: { _, _ in }) == .unreachable(code: 0, reason: "no-route"))
        #expect(policy.counters.noRoute == 1)
        let stray = FlowKey(ingressPort: 1, protocol: 17, source: IPv4Address(10, 2, 0, 2),
                            destination: IPv4Address(10, 2, 0, 1), sourcePort: 7, destinationPort: 5555)
        #expect(policy.decide(stray, send: { _, _ in }) == .unreachable(code: 3, reason: "no-listener"))
        #expect(policy.counters.notListening == 1)
    }
}
