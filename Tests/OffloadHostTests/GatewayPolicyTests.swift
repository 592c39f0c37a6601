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
        #expect(try nat.map(a, now: .zero) == 40000)
        let pb = try nat.map(b, now: .zero)
        #expect(pb != 40000, "the same port for another inside host must differ")
        #expect(try nat.map(c, now: .zero) == 40000, "protocols have separate port spaces")
        #expect(try nat.map(a, now: .zero) == 40000, "stable")
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
            _ = try nat.map(host, now: .zero)
        }
        let extra = NAT44.Inside(protocol: 17, address: IPv4Address(10, 1, 1, 1), port: 1234)
        #expect(throws: NAT44.Failure.portsExhausted(protocol: 17)) { try nat.map(extra, now: .zero) }
        #expect(nat.exhaustions == 1)
        nat.release(inside[2])
        #expect(try nat.map(extra, now: .zero) >= 5000)
        // Every mapped port is distinct and inside the range.
        let mapped = Set(try (inside.enumerated().filter { $0.offset != 2 }.map(\.element) + [extra]).map { try nat.map($0, now: .zero) })
        #expect(mapped.count == 4 && mapped.allSatisfy { (5000...5003).contains($0) })
    }

    /// A mapping lives while the engine has entries that translate to it, then `linger`
    /// longer; a use while it lingers starts the wait over.
    @Test func aMappingLingersAfterItsLastEntryThenItsPortIsFree() throws {
        var nat = NAT44(outsideAddress: outside, ports: 5000...5000, linger: .seconds(10))
        let a = NAT44.Inside(protocol: 6, address: IPv4Address(10, 1, 0, 2), port: 40000)
        let b = NAT44.Inside(protocol: 6, address: IPv4Address(10, 1, 0, 3), port: 40000)
        func at(_ s: Int64) -> Instant { Instant(nanoseconds: s * 1_000_000_000) }
        #expect(try nat.map(a, now: at(0)) == 5000)
        nat.entryBegan(a)
        nat.entryBegan(a)
        #expect(nat.entries(of: a) == 2)
        #expect(nat.releaseIdle(now: at(100)) == 0, "entries keep it")
        nat.entryEnded(a, now: at(100))
        #expect(nat.releaseIdle(now: at(200)) == 0, "one entry is left")
        nat.entryEnded(a, now: at(200))
        #expect(throws: NAT44.Failure.portsExhausted(protocol: 6)) { try nat.map(b, now: at(201)) }
        #expect(nat.releaseIdle(now: at(209)) == 0, "lingers")
        // The final ACK after a teardown is decided afresh: same port, and the wait starts over.
        #expect(try nat.map(a, now: at(205)) == 5000)
        #expect(nat.releaseIdle(now: at(212)) == 0)
        #expect(nat.releaseIdle(now: at(230)) == 1)
        #expect(nat.count == 0 && nat.released == 1)
        #expect(nat.reverse(protocol: 6, outsidePort: 5000) == nil)
        #expect(try nat.map(b, now: at(231)) == 5000, "the port serves another inside host now")
        // Notices about a mapping that is gone change nothing.
        nat.entryEnded(a, now: at(232))
        nat.entryBegan(a)
        #expect(nat.entries(of: a) == nil && nat.entries(of: b) == 0)
    }

    /// A protocol without ports (GRE) has one mapping, at port 0: replies name no inside host,
    /// so while one host holds it another is refused. It used to get port 1, which no reply
    /// names: its replies went to the first host.
    @Test func aProtocolWithoutPortsIsMappedForOneInsideHostAtATime() throws {
        var nat = NAT44(outsideAddress: outside)
        let a = NAT44.Inside(protocol: 47, address: IPv4Address(10, 1, 0, 2), port: 0)
        let b = NAT44.Inside(protocol: 47, address: IPv4Address(10, 1, 0, 3), port: 0)
        #expect(try nat.map(a, now: .zero) == 0)
        #expect(throws: NAT44.Failure.portsExhausted(protocol: 47)) { try nat.map(b, now: .zero) }
        #expect(nat.port(of: b) == nil && nat.reverse(protocol: 47, outsidePort: 0) == a)
        nat.release(a)
        #expect(try nat.map(b, now: .zero) == 0, "free again, for another host")
    }

    /// A mapping whose flow never got an entry (the table was full) lingers from its last use.
    @Test func aMappingWithoutEntriesGoesAfterLinger() throws {
        var nat = NAT44(outsideAddress: outside, linger: .seconds(1))
        for i in 0..<100 {
            _ = try nat.map(NAT44.Inside(protocol: 17, address: IPv4Address(10, 1, 0, 2), port: UInt16(2000 + i)),
                            now: Instant(nanoseconds: Int64(i) * 1_000_000))
        }
        #expect(nat.releaseIdle(now: Instant(nanoseconds: 1_050_000_000)) == 51)
        #expect(nat.releaseIdle(now: Instant(nanoseconds: 2_000_000_000)) == 49)
        #expect(nat.count == 0)
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

    /// The gateway these tests share: port 0 inside (10.1.0.1/24), port 1 outside with the
    /// NAT (10.2.0.1/24).
    static func policy(clock: any Clock, nat: GatewayPolicy.NATSettings = .init()) throws -> GatewayPolicy {
        GatewayPolicy(
            ports: [.init(address: try IPv4CIDR(parsing: "10.1.0.1/24"), hardwareAddress: inside),
                    .init(address: try IPv4CIDR(parsing: "10.2.0.1/24"), hardwareAddress: outside)],
            routes: RouteTable([.init(prefix: try IPv4CIDR(parsing: "10.1.0.0/24"), port: 0),
                                .init(prefix: try IPv4CIDR(parsing: "10.2.0.0/24"), port: 1)]),
            outsidePort: 1, clock: clock, nat: nat)
    }

    /// A UDP echo server on the outside wire: every datagram goes back to where it came from,
    /// as the server sees it, from the port it was sent to. `seen` hears of each (source,
    /// source port, payload); its UDP checksum must verify.
    static let serverIP = IPv4Address(10, 2, 0, 2), natIP = IPv4Address(10, 2, 0, 1)

    /// A NAT gateway on memory wires, its engine and software running in `sim`: UDP entries
    /// idle out after 1 s, mappings linger 2 s, and `hosts` inside and the server outside
    /// are known neighbours.
    struct NATWorld {
        let engine: Engine<MemoryLink>
        let client: MemoryLink, server: MemoryLink
        let policy: GatewayPolicy
        let slowPath: SlowPath
    }

    static func natWorld(_ sim: Simulation, announces: Bool = true, hosts: [IPv4Address],
                         natPorts: ClosedRange<UInt16>) throws -> NATWorld {
        var configuration = Engine<MemoryLink>.Configuration()
        configuration.announcesTranslations = announces
        configuration.tableCapacity = 64
        configuration.idleTimeouts = IdleTimeouts(udp: .seconds(1))
        let (engine, wires) = Engine.onMemoryWires(configuration: configuration, portCount: 2, clock: sim.clock)
        let policy = try policy(clock: sim.clock, nat: .init(ports: natPorts, linger: .seconds(2)))
        for host in hosts { policy.addNeighbor(port: 0, address: host, hardwareAddress: clientMAC) }
        policy.addNeighbor(port: 1, address: serverIP, hardwareAddress: serverMAC)
        let slowPath = SlowPath(exceptions: engine.exceptions, reinsertion: engine.reinsertion, processing: .partial,
                                policy: policy)
        sim.addProcess("engine") { engine.poll(now: sim.clock.now) }
        sim.addProcess("software", weight: 0.3) { slowPath.step() > 0 }
        return NATWorld(engine: engine, client: wires[0], server: wires[1], policy: policy, slowPath: slowPath)
    }

    static func addEchoServer(to sim: Simulation, on wire: MemoryLink, address: IPv4Address,
                              seen: @escaping (IPv4Address, UInt16, [UInt8]) -> Void) {
        var wire = wire
        let pool = BufferPool(count: 32, bufferSize: 2048, headroom: 0)
        sim.addProcess("server") {
            var replies: [[UInt8]] = []
            let n = (try? wire.receive(into: pool, max: 8) { b in
                let ip = try! IPv4Packet(checking: try! EthernetFrame(checking: b.bytes).payload)
                let udp = try! UDPPacket(checking: ip.payload)
                #expect(udp.verifyChecksum(source: ip.source, destination: ip.destination))
                seen(ip.source, udp.sourcePort, Array(udp.payload))
                replies.append(Self.udp(from: address, udp.destinationPort, to: ip.source, udp.sourcePort,
                                        toMAC: outside, fromMAC: serverMAC, payload: Array(udp.payload)))
            }) ?? 0
            for r in replies { try! r.withUnsafeBytes { try wire.transmit($0) } }
            return n > 0
        }
    }

    @Test(arguments: [SlowPath.Processing.partial, .complete])
    func udpThroughTheNATAndBack(processing: SlowPath.Processing) throws {
        let sim = Simulation(seed: 5)
        let (engine, wires) = Engine.onMemoryWires(configuration: .init(), portCount: 2, clock: sim.clock)
        var client = wires[0], server = wires[1]
        let clientIP = IPv4Address(10, 1, 0, 2), serverIP = IPv4Address(10, 2, 0, 2), natIP = IPv4Address(10, 2, 0, 1)
        let policy = try GatewayNATSimulationTests.policy(clock: sim.clock)
        policy.addNeighbor(port: 0, address: clientIP, hardwareAddress: Self.clientMAC)
        policy.addNeighbor(port: 1, address: serverIP, hardwareAddress: Self.serverMAC)
        let slowPath = SlowPath(exceptions: engine.exceptions, reinsertion: engine.reinsertion, processing: processing,
                                policy: policy)
        sim.addProcess("engine") { engine.poll(now: sim.clock.now) }
        sim.addProcess("software", weight: 0.3) { slowPath.step() > 0 }

        var atServer: [(IPv4Address, UInt16, [UInt8])] = []
        var atClient: [(IPv4Address, UInt16, IPv4Address, UInt16, [UInt8])] = []
        let pool = BufferPool(count: 32, bufferSize: 2048, headroom: 0)
        Self.addEchoServer(to: sim, on: server, address: serverIP) { atServer.append(($0, $1, $2)) }
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

    /// With two outside ports, two inside hosts take both; a third is refused. Once their
    /// entries idle out in the engine, the engine's notices let the mappings go after they
    /// linger, and the third host gets a port, and its replies. Without the notices nothing
    /// says the mappings are unused: they are kept, and the third host stays refused.
    @Test(arguments: [true, false])
    func mappingsAreFreedWhenTheEnginesEntriesGo(announces: Bool) throws {
        let sim = Simulation(seed: 9)
        let hosts = [IPv4Address(10, 1, 0, 2), IPv4Address(10, 1, 0, 3), IPv4Address(10, 1, 0, 4)]
        let world = try Self.natWorld(sim, announces: announces, hosts: hosts, natPorts: 5000...5001)
        let (engine, policy) = (world.engine, world.policy)
        var client = world.client
        let server = world.server, serverIP = Self.serverIP, natIP = Self.natIP

        var atServer: [(IPv4Address, UInt16)] = []
        var atClient: [(IPv4Address, UInt8)] = []
        let pool = BufferPool(count: 32, bufferSize: 2048, headroom: 0)
        Self.addEchoServer(to: sim, on: server, address: serverIP) { source, port, _ in atServer.append((source, port)) }
        sim.addProcess("client") {
            (try? client.receive(into: pool, max: 8) { b in
                let ip = try! IPv4Packet(checking: try! EthernetFrame(checking: b.bytes).payload)
                if ip.protocol == .udp { atClient.append((ip.destination, try! UDPPacket(checking: ip.payload).payload.first!)) }
            }) ?? 0 > 0
        }
        func send(from host: Int, at seconds: Double) {
            sim.schedule(at: Instant(nanoseconds: Int64(seconds * 1e9))) {
                let frame = Self.udp(from: hosts[host], 40000, to: serverIP, 7, toMAC: Self.inside,
                                     fromMAC: Self.clientMAC, payload: [UInt8(host)])
                try! frame.withUnsafeBytes { try client.transmit($0) }
            }
        }
        send(from: 0, at: 0)
        send(from: 1, at: 0.001)
        send(from: 2, at: 0.002)
        // Time passes in steps of 100 ms (the engine's expiry and the NAT's timers run as it does).
        for tick in 1...80 { sim.schedule(at: Instant(nanoseconds: Int64(tick) * 100_000_000)) {} }
        send(from: 2, at: 8.5)
        sim.run(maxSteps: 2_000_000)

        guard announces else {
            #expect(atServer.map(\.1) == [5000, 5001] && policy.counters.natExhausted == 2)
            #expect(policy.nat?.released == 0 && policy.nat?.count == 2)
            return
        }
        #expect(atServer.map(\.0) == [natIP, natIP, natIP])
        #expect(atServer.map(\.1) == [5000, 5001, 5000], "the third host gets the first port once it is free")
        #expect(atClient.map(\.0) == [hosts[0], hosts[1], hosts[2]] && atClient.map(\.1) == [0, 1, 2])
        #expect(policy.counters.natExhausted == 1, "the third host's first try found both ports taken")
        #expect(policy.nat?.released == 2)
        let third = NAT44.Inside(protocol: 17, address: hosts[2], port: 40000)
        #expect(policy.nat?.count == 1 && policy.nat?.entries(of: third) == 2, "its flow's entry and its replies'")
        #expect(engine.table.counters.noticesLost == 0 && engine.table.counters.rejectedNoticeRoom == 0)
        #expect(engine.buffered == 0)
    }

    /// One outside port: a second inside host is refused while the first holds it, and keeps
    /// trying every half second, within the UDP entries' idle timeout. The refusal passes:
    /// once the first host's mapping is released, the second's next datagram is decided again
    /// and gets through. (A drop entry for the refused flow, kept alive by its own retries,
    /// used to refuse it for good.)
    @Test func aFlowRefusedForWantOfPortsGetsThroughOnceOneIsFree() throws {
        let sim = Simulation(seed: 13)
        let hosts = [IPv4Address(10, 1, 0, 2), IPv4Address(10, 1, 0, 3)]
        let world = try Self.natWorld(sim, hosts: hosts, natPorts: 5000...5000)
        let (engine, policy, slowPath) = (world.engine, world.policy, world.slowPath)
        var client = world.client
        let serverIP = Self.serverIP, natIP = Self.natIP

        var atServer: [(source: IPv4Address, port: UInt16, payload: UInt8)] = []
        var atSecondHost: [UInt8] = []
        let pool = BufferPool(count: 32, bufferSize: 2048, headroom: 0)
        Self.addEchoServer(to: sim, on: world.server, address: serverIP) { atServer.append(($0, $1, $2[0])) }
        sim.addProcess("client") {
            (try? client.receive(into: pool, max: 8) { b in
                let ip = try! IPv4Packet(checking: try! EthernetFrame(checking: b.bytes).payload)
                if ip.protocol == .udp, ip.destination == hosts[1] {
                    atSecondHost.append(try! UDPPacket(checking: ip.payload).payload.first!)
                }
            }) ?? 0 > 0
        }
        func send(from host: Int, at seconds: Double, payload: UInt8) {
            sim.schedule(at: Instant(nanoseconds: Int64(seconds * 1e9))) {
                let frame = Self.udp(from: hosts[host], 40000, to: serverIP, 7, toMAC: Self.inside,
                                     fromMAC: Self.clientMAC, payload: [payload])
                try! frame.withUnsafeBytes { try client.transmit($0) }
            }
        }
        send(from: 0, at: 0, payload: 0)
        for n in 1...16 { send(from: 1, at: 0.5 * Double(n), payload: UInt8(n)) }
        for tick in 1...90 { sim.schedule(at: Instant(nanoseconds: Int64(tick) * 100_000_000)) {} }
        sim.run(maxSteps: 2_000_000)

        #expect(atServer.first.map { $0.payload == 0 && $0.port == 5000 } == true)
        let refused = policy.counters.natExhausted
        #expect(refused >= 1 && slowPath.dropped["nat-ports-exhausted"] == refused)
        #expect(policy.nat?.released == 1, "the first host's mapping")
        // Every try after the refused ones went through, on the port the first host had.
        let through = atServer.dropFirst()
        #expect(through.map(\.payload) == (1...16).filter { $0 > refused }.map(UInt8.init))
        #expect(through.allSatisfy { $0.source == natIP && $0.port == 5000 })
        #expect(atSecondHost == through.map(\.payload), "and its answers came back")
        #expect(engine.buffered == 0)
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

/// The gateway's policy called directly, on a virtual clock: the gateway of
/// `GatewayNATSimulationTests.policy`, a client at 10.1.0.2 and a server at 10.2.0.2.
@Suite struct GatewayPolicyCallTests {
    static let client = IPv4Address(10, 1, 0, 2), server = IPv4Address(10, 2, 0, 2)
    static let inside = IPv4Address(10, 1, 0, 1), natIP = IPv4Address(10, 2, 0, 1)
    /// Sends nothing (the neighbours are known).
    static var none: Originate { { _, _ in } }

    /// The ICMP errors' token bucket refills from the time since its last refill: that time
    /// times the rate overflowed after about 106 days without an error (at 1000/s), and the
    /// gateway trapped. A long quiet refills the burst, no more.
    @Test func icmpErrorsAfterMonthsOfQuietHaveTheirBurst() throws {
        let clock = VirtualClock()
        let policy = try GatewayNATSimulationTests.policy(clock: clock)
        #expect(policy.icmpErrorSource(port: 0) != nil)
        clock.advance(by: .seconds(200 * 24 * 3600))
        let allowed = (0..<100).filter { _ in policy.icmpErrorSource(port: 0) != nil }.count
        #expect(allowed == 50, "the burst of 1000/s")
        #expect(policy.counters.icmpErrorsRateLimited == 50)
    }

    /// A static neighbour is the operator's: ARP that names its address with another MAC (a
    /// reply, a request for us, a gratuitous one) leaves it as it is, and it never expires. A
    /// learned neighbour follows ARP.
    @Test func aStaticNeighborIsNotChangedByARP() throws {
        let clock = VirtualClock()
        let policy = try GatewayNATSimulationTests.policy(clock: clock)
        let learned = IPv4Address(10, 1, 0, 3)
        policy.addNeighbor(port: 0, address: Self.client, hardwareAddress: .local(0xc1))
        func arp(_ operation: ARPOperation, from sender: IPv4Address, _ mac: MACAddress, to target: IPv4Address) {
            var frame = [UInt8](repeating: 0, count: 60)
            frame.withUnsafeMutableBytes { raw in
                EthernetRepr(destination: .broadcast, source: mac, etherType: .arp).emit(into: raw)
                ARPRepr(operation: operation, senderHardwareAddress: mac, senderProtocolAddress: sender,
                        targetHardwareAddress: .zero, targetProtocolAddress: target)
                    .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]))
                _ = policy.answer(raw, ingressPort: 0, send: Self.none)
            }
        }
        arp(.request, from: learned, .local(0xa1), to: Self.inside)
        for operation in [ARPOperation.reply, .request] {
            arp(operation, from: Self.client, .local(0xee), to: Self.inside)
            arp(operation, from: Self.client, .local(0xee), to: Self.client)
            arp(operation, from: learned, .local(0xee), to: Self.inside)
        }
        #expect(policy.neighbors[0].lookup(Self.client, now: clock.now) == .local(0xc1))
        #expect(policy.neighbors[0].lookup(learned, now: clock.now) == .local(0xee))
        clock.advance(by: .seconds(3600))
        policy.poll(send: Self.none, room: 0)
        #expect(policy.neighbors[0].lookup(Self.client, now: clock.now) == .local(0xc1))
        #expect(policy.neighbors[0].lookup(learned, now: clock.now) == nil)
    }

    /// GRE through the NAT: the first inside host holds the protocol's one mapping, and what
    /// comes back goes to it; a second inside host is refused rather than given a mapping that
    /// no reply names.
    @Test func aSecondInsideHostOfAProtocolWithoutPortsIsRefused() throws {
        let policy = try GatewayNATSimulationTests.policy(clock: VirtualClock())
        let other = IPv4Address(10, 1, 0, 3)
        for host in [Self.client, other] { policy.addNeighbor(port: 0, address: host, hardwareAddress: .local(0xc1)) }
        policy.addNeighbor(port: 1, address: Self.server, hardwareAddress: .local(0x51))
        func gre(from host: IPv4Address) -> FlowKey {
            FlowKey(ingressPort: 0, protocol: 47, source: host, destination: Self.server, sourcePort: 0, destinationPort: 0)
        }
        guard case .install(.forward(let out)) = policy.decide(gre(from: Self.client), send: Self.none) else {
            Issue.record("the first host's GRE is forwarded")
            return
        }
        #expect(out.translatedSource == Self.natIP)
        #expect(policy.decide(gre(from: other), send: Self.none) == .unreachable(code: 1, reason: "nat-ports-exhausted", transient: true))
        let back = FlowKey(ingressPort: 1, protocol: 47, source: Self.server, destination: Self.natIP, sourcePort: 0,
                           destinationPort: 0)
        guard case .install(.forward(let reply)) = policy.decide(back, send: Self.none) else {
            Issue.record("GRE back to the NAT's address is forwarded")
            return
        }
        #expect(reply.translatedDestination == Self.client)
    }

    /// Hairpinning (RFC 4787 REQ-9, RFC 5382 REQ-8): an inside host that sends to another's
    /// mapping (the NAT's outside address and port) reaches that host, from its own mapping,
    /// as an outside host would; the other's answers take the same way back. The hairpinned
    /// flows' entries hold both mappings. Before, such a flow was refused as for the gateway
    /// itself (port unreachable).
    @Test(arguments: [UInt8(17), 6])
    func insideHostsReachEachOtherThroughTheirMappings(protocol proto: UInt8) throws {
        let policy = try GatewayNATSimulationTests.policy(clock: VirtualClock())
        policy.translationsWillBeAnnounced()
        let other = IPv4Address(10, 1, 0, 3)
        policy.addNeighbor(port: 0, address: Self.client, hardwareAddress: .local(0xc1))
        policy.addNeighbor(port: 0, address: other, hardwareAddress: .local(0xc3))
        policy.addNeighbor(port: 1, address: Self.server, hardwareAddress: .local(0x51))
        // Each inside host has a mapping, from a flow to the server.
        var mapped: [UInt16] = []
        for (host, port) in [(Self.client, UInt16(40000)), (other, UInt16(5000))] {
            let out = FlowKey(ingressPort: 0, protocol: proto, source: host, destination: Self.server, sourcePort: port,
                              destinationPort: 80)
            guard case .install(.forward(let f)) = policy.decide(out, send: Self.none), let p = f.translatedSourcePort else {
                Issue.record("the flow to the server is forwarded"); return
            }
            mapped.append(p)
        }
        let toOther = FlowKey(ingressPort: 0, protocol: proto, source: Self.client, destination: Self.natIP,
                              sourcePort: 40000, destinationPort: mapped[1])
        guard case .install(.forward(let hairpin)) = policy.decide(toOther, send: Self.none) else {
            Issue.record("the hairpinned flow is forwarded: \(policy.decide(toOther, send: Self.none))"); return
        }
        #expect(hairpin.outputPort == 0 && hairpin.destinationMAC == .local(0xc3))
        #expect(hairpin.translatedDestination == other && hairpin.translatedDestinationPort == 5000)
        #expect(hairpin.translatedSource == Self.natIP && hairpin.translatedSourcePort == mapped[0],
                "from the client's own mapping")
        // The answers: from the other host to the client's mapping, back to the client.
        guard let (replyKey, replyAction) = policy.replyFlow(of: toOther, forward: hairpin, send: Self.none),
              case .forward(let back) = replyAction else {
            Issue.record("the hairpinned flow's replies have their entry"); return
        }
        #expect(replyKey == FlowKey(ingressPort: 0, protocol: proto, source: other, destination: Self.natIP,
                                    sourcePort: 5000, destinationPort: mapped[0]))
        #expect(back.destinationMAC == .local(0xc1) && back.translatedDestination == Self.client
                && back.translatedDestinationPort == 40000)
        #expect(back.translatedSource == Self.natIP && back.translatedSourcePort == mapped[1])
        // Each hairpinned entry holds both mappings.
        let nat = try #require(policy.nat)
        let client = NAT44.Inside(protocol: proto, address: Self.client, port: 40000)
        let otherInside = NAT44.Inside(protocol: proto, address: other, port: 5000)
        let before = (nat.entries(of: client) ?? 0, nat.entries(of: otherInside) ?? 0)
        policy.noteTranslation(TranslationNotice(key: toOther, began: true))
        policy.noteTranslation(TranslationNotice(key: replyKey, began: true))
        #expect(policy.nat?.entries(of: client) == before.0 + 2 && policy.nat?.entries(of: otherInside) == before.1 + 2)
        policy.noteTranslation(TranslationNotice(key: toOther, began: false))
        policy.noteTranslation(TranslationNotice(key: replyKey, began: false))
        #expect(policy.nat?.entries(of: client) == before.0 && policy.nat?.entries(of: otherInside) == before.1)
    }
}

/// Port forwarding (destination NAT): a server behind the gateway reached at the NAT's
/// outside address. The gateway had source NAT only: what came to its outside address was
/// a reply to a mapping or refused as for the gateway itself (port unreachable).
@Suite struct PortForwardTests {
    static let server = IPv4Address(10, 1, 0, 2), outsider = IPv4Address(10, 2, 0, 2)
    static let natIP = IPv4Address(10, 2, 0, 1)

    @Test func aForwardIsAMappingMadeInAdvanceAndNeverReleased() throws {
        var nat = NAT44(outsideAddress: Self.natIP, linger: .seconds(1))
        let web = NAT44.Inside(protocol: 6, address: Self.server, port: 80)
        try nat.forward(outsidePort: 8080, to: web)
        #expect(nat.reverse(protocol: 6, outsidePort: 8080) == web)
        #expect(try nat.map(web, now: .zero) == 8080, "what the server sends from its port leaves from the forwarded one")
        let other = NAT44.Inside(protocol: 6, address: IPv4Address(10, 1, 0, 3), port: 8080)
        #expect(try nat.map(other, now: .zero) != 8080, "no other inside host gets the forwarded port")
        #expect(nat.reverse(protocol: 17, outsidePort: 8080) == nil, "per protocol")
        nat.entryBegan(web)
        nat.entryEnded(web, now: .zero)
        nat.releaseIdle(now: .zero + .seconds(1000))
        nat.release(web)
        #expect(nat.reverse(protocol: 6, outsidePort: 8080) == web, "never released")
        #expect(throws: NAT44.Failure.alreadyForwarded(protocol: 6, port: 8080)) {
            try nat.forward(outsidePort: 8080, to: NAT44.Inside(protocol: 6, address: Self.server, port: 81))
        }
    }

    @Test(arguments: [UInt8(6), 17])
    func aNewFlowToAForwardedPortReachesTheServerAndItsRepliesLeaveFromThatPort(protocol proto: UInt8) throws {
        let policy = try GatewayNATSimulationTests.policy(clock: VirtualClock())
        policy.addNeighbor(port: 0, address: Self.server, hardwareAddress: .local(0xc1))
        policy.addNeighbor(port: 1, address: Self.outsider, hardwareAddress: .local(0x51))
        try policy.forwardPort(protocol: proto, outsidePort: 8080, to: Self.server, port: 80)
        let inbound = FlowKey(ingressPort: 1, protocol: proto, source: Self.outsider, destination: Self.natIP,
                              sourcePort: 50000, destinationPort: 8080)
        guard case .install(.forward(let f)) = policy.decide(inbound, send: GatewayPolicyCallTests.none) else {
            Issue.record("the inbound flow is forwarded: \(policy.decide(inbound, send: GatewayPolicyCallTests.none))")
            return
        }
        #expect(f.outputPort == 0 && f.destinationMAC == .local(0xc1))
        #expect(f.translatedDestination == Self.server && f.translatedDestinationPort == 80)
        #expect(f.translatedSource == nil, "the server sees who connected")
        guard let (replyKey, replyAction) = policy.replyFlow(of: inbound, forward: f, send: GatewayPolicyCallTests.none),
              case .forward(let back) = replyAction else {
            Issue.record("the replies have their entry"); return
        }
        #expect(replyKey.source == Self.server && replyKey.sourcePort == 80)
        #expect(back.translatedSource == Self.natIP && back.translatedSourcePort == 8080)
        // Nothing else is forwarded, and a second forward of the port is refused.
        let elsewhere = FlowKey(ingressPort: 1, protocol: proto, source: Self.outsider, destination: Self.natIP,
                                sourcePort: 50000, destinationPort: 8081)
        #expect(policy.decide(elsewhere, send: GatewayPolicyCallTests.none)
                    == .unreachable(code: ICMPv4Packet.UnreachableCode.port, reason: "no-listener"))
        #expect(throws: GatewayPolicy.PortForwardError.alreadyForwarded(protocol: proto, port: 8080)) {
            try policy.forwardPort(protocol: proto, outsidePort: 8080, to: IPv4Address(10, 1, 0, 3), port: 80)
        }
    }

    /// A forward leads to a host inside: not to the gateway's own addresses (its flows would
    /// wait for an ARP answer from itself) and not out of the outside port again (where the
    /// replies, not translated back, were refused).
    @Test func aForwardToNoHostInsideIsRefused() throws {
        let policy = try GatewayNATSimulationTests.policy(clock: VirtualClock())
        for address in [IPv4Address(10, 1, 0, 1), Self.natIP, Self.outsider] {
            #expect(throws: GatewayPolicy.PortForwardError.notInside(address), "\(address)") {
                try policy.forwardPort(protocol: 6, outsidePort: 8080, to: address, port: 80)
            }
        }
    }
}
