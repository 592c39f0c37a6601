import Testing
import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink
import OffloadSim
import OffloadWire

/// The gateway's software in simulation, between two hosts that know nothing in advance: a
/// client (10.1.0.2, default route via the gateway's 10.1.0.1 on port 0) and a server
/// (10.2.0.2 on port 1, the outside, where the gateway's 10.2.0.1 is also the NAT address).
/// Both are `IPv4Host`s: they resolve and answer ARP and ICMP echo like small kernels.
final class GatewayWorld {
    static let clientIP = IPv4Address(10, 1, 0, 2), serverIP = IPv4Address(10, 2, 0, 2)
    static let insideIP = IPv4Address(10, 1, 0, 1), outsideIP = IPv4Address(10, 2, 0, 1)
    static let insideMAC = MACAddress.local(0x90), outsideMAC = MACAddress.local(0x91)

    let sim: Simulation
    let engine: Engine<MemoryLink>
    let policy: GatewayPolicy
    let slowPath: SlowPath
    let client: IPv4Host
    let server: IPv4Host
    var clientWire: MemoryLink
    var serverWire: MemoryLink
    /// Every frame each host received.
    var atClient: [[UInt8]] = []
    var atServer: [[UInt8]] = []
    /// The server stays silent (a host that is gone) when set.
    var serverSilent = false

    /// `outsideMTU`: the server's link takes smaller packets than the client's (2034 bytes,
    /// or `insideFrameSize` less the Ethernet header).
    init(seed: UInt64 = 1, audit: Bool = false, orderGuard: Bool = true, processing: SlowPath.Processing = .partial,
         outsideMTU: Int = 2034, insideFrameSize: Int = 2048, insideCarriesOffloadMetadata: Bool = false,
         udpIdle: Duration? = nil) throws {
        sim = Simulation(seed: seed)
        var config = Engine<MemoryLink>.Configuration()
        config.bufferSize = max(config.bufferSize, insideFrameSize + Engine<MemoryLink>.headroom)
        if let udpIdle {
            config.idleTimeouts = IdleTimeouts(udp: udpIdle)
            // Small, so that one poll's expiry scan covers the table.
            config.tableCapacity = 64
            config.expiryBudget = 1024
        }
        config.audit = AuditSwitch(audit)
        config.orderGuard = orderGuard
        let (engine, wires) = Engine.onMemoryWires(configuration: config, portCount: 2, clock: sim.clock, seed: seed,
                                                   maxFrameSize: { $0 == 1 ? outsideMTU + 14 : insideFrameSize },
                                                   carriesOffloadMetadata: { $0 == 0 && insideCarriesOffloadMetadata })
        self.engine = engine
        clientWire = wires[0]
        serverWire = wires[1]
        policy = GatewayPolicy(
            ports: [.init(address: try IPv4CIDR(parsing: "10.1.0.1/24"), hardwareAddress: Self.insideMAC),
                    .init(address: try IPv4CIDR(parsing: "10.2.0.1/24"), hardwareAddress: Self.outsideMAC)],
            routes: RouteTable([.init(prefix: try IPv4CIDR(parsing: "10.1.0.0/24"), port: 0),
                                .init(prefix: try IPv4CIDR(parsing: "10.2.0.0/24"), port: 1)]),
            outsidePort: 1, clock: sim.clock)
        slowPath = SlowPath(exceptions: engine.exceptions, reinsertion: engine.reinsertion, processing: processing,
                            policy: policy)
        client = IPv4Host(.init(interface: try IPv4CIDR(parsing: "10.1.0.2/24"), hardwareAddress: .local(0xc1),
                                gateway: Self.insideIP))
        server = IPv4Host(.init(interface: try IPv4CIDR(parsing: "10.2.0.2/24"), hardwareAddress: .local(0x51)))
        let pool = BufferPool(count: 64, bufferSize: 2048, headroom: 0)
        sim.addProcess("engine") { engine.poll(now: self.sim.clock.now) }
        sim.addProcess("software", weight: 0.3) { self.slowPath.step() > 0 }
        sim.addProcess("client") {
            let now = self.sim.clock.now
            // A wire cannot send while it is receiving: answers go out after the burst.
            var out: [[UInt8]] = []
            let n = (try? self.clientWire.receive(into: pool, max: 8) { frame in
                self.atClient.append(Array(frame.bytes))
                self.client.receive(frame, now: now, transmit: IPv4Host.contiguous { out.append(Array($0)) })
            }) ?? 0
            self.client.poll(now: now, transmit: IPv4Host.contiguous { out.append(Array($0)) })
            for frame in out { frame.withUnsafeBytes { self.sendFromClient($0) } }
            return n > 0
        }
        sim.addProcess("server") {
            let now = self.sim.clock.now
            var out: [[UInt8]] = []
            let n = (try? self.serverWire.receive(into: pool, max: 8) { frame in
                self.atServer.append(Array(frame.bytes))
                if !self.serverSilent { self.server.receive(frame, now: now, transmit: IPv4Host.contiguous { out.append(Array($0)) }) }
            }) ?? 0
            self.server.poll(now: now, transmit: IPv4Host.contiguous { out.append(Array($0)) })
            for frame in out { frame.withUnsafeBytes { self.sendFromServer($0) } }
            return n > 0
        }
        // Timers (ARP retries) need time to pass while everyone is idle.
        for tick in 1...100 { sim.schedule(at: Instant(nanoseconds: Int64(tick) * 50_000_000)) {} }
    }

    func sendFromClient(_ frame: UnsafeRawBufferPointer) { try! clientWire.transmit(frame) }
    func sendFromServer(_ frame: UnsafeRawBufferPointer) { try! serverWire.transmit(frame) }
    var transmitFromClient: IPv4Host.Transmit { IPv4Host.contiguous { [unowned self] in self.sendFromClient($0) } }

    /// Runs for `seconds` of virtual time.
    func run(seconds: Double) {
        sim.run(until: sim.clock.now + .nanoseconds(Int64(seconds * 1e9)), maxSteps: 2_000_000)
    }

    /// ICMP messages among `frames`, as (type, code, source, quoted destination).
    static func icmp(in frames: [[UInt8]]) -> [(type: UInt8, code: UInt8, source: IPv4Address, quotedDestination: IPv4Address?)] {
        frames.compactMap { bytes in
            bytes.withUnsafeBytes { raw in
                guard let e = try? EthernetFrame(checking: raw), e.etherType == .ipv4,
                      let ip = try? IPv4Packet(checking: e.payload), ip.protocol == .icmp, ip.verifyChecksum,
                      let m = try? ICMPv4Packet(checking: ip.payload), m.verifyChecksum else { return nil }
                return (m.type, m.code, ip.source, m.isError ? (try? m.quotedHeader())?.destination : nil)
            }
        }
    }

    /// A UDP datagram from the client (from its address unless `source` is given) to
    /// `destination` with the given TTL, sent now: `length` bytes of payload, the first
    /// `payload`, the rest counting up from 1.
    func sendUDP(to destination: IPv4Address, from source: IPv4Address = clientIP, ttl: UInt8 = 64,
                 sourcePort: UInt16 = 40000, payload: UInt8 = 0, length: Int = 16, dontFragment: Bool = true) {
        var frame = [UInt8](repeating: 0, count: 14 + 20 + 8 + length)
        frame.withUnsafeMutableBytes { raw in
            EthernetRepr(destination: Self.insideMAC, source: client.hardwareAddress, etherType: .ipv4).emit(into: raw)
            IPv4Repr(source: source, destination: destination, protocol: .udp, payloadLength: 8 + length, timeToLive: ttl,
                     identification: 0x4242, dontFragment: dontFragment)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
            for i in 1..<length { raw[42 + i] = UInt8(truncatingIfNeeded: i) }
            raw[42] = payload
            UDPRepr(sourcePort: sourcePort, destinationPort: 9, payloadLength: length)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[34...]), source: source,
                      destination: destination, checksums: .verify)
        }
        frame.withUnsafeBytes { sendFromClient($0) }
        sim.wake()
    }

    /// received = fast + re-inserted + consumed + dropped, and nothing left in the engine.
    func expectAtRest(_ comment: Comment? = nil) {
        let c = engine.counters
        #expect(c.received == c.fastPath + c.reinsertedOut + c.consumedBySoftware + c.totalDrops, comment)
        #expect(engine.buffered == 0, comment)
        #expect(slowPath.heldCount == 0, comment)
        var inSoftware = 0
        engine.table.forEach { _, stats in inSoftware += Int(stats.inSoftwareCount) }
        #expect(inSoftware == 0, comment)
    }
}

@Suite struct GatewaySoftwareTests {
    @Test(arguments: [false, true])
    func pingThroughTheGatewayResolvesEveryoneWithARP(audit: Bool) throws {
        let world = try GatewayWorld(audit: audit)
        for n in 0..<5 {
            world.sim.schedule(at: Instant(nanoseconds: Int64(n) * 10_000_000)) {
                world.client.ping(GatewayWorld.serverIP, identifier: 7, sequence: UInt16(n), now: world.sim.clock.now,
                                  transmit: world.transmitFromClient)
                world.sim.wake()
            }
        }
        world.run(seconds: 1)
        // The client resolved the gateway, the gateway the server, the server the NAT address.
        #expect(world.client.echoReplies.map(\.sequence) == [0, 1, 2, 3, 4])
        #expect(world.server.counters.echoRequestsAnswered == 5)
        // The server learned the gateway from the gateway's own request (RFC 826).
        #expect(world.policy.counters.arpAnswered >= 1, "the client's request")
        #expect(world.policy.counters.arpRequestsSent >= 1 && world.policy.counters.waitedForNeighbor >= 1)
        #expect(world.engine.counters.originated == world.policy.counters.arpRequestsSent)
        #expect(world.engine.counters.consumedBySoftware >= 1, "the server's ARP reply")
        // The server saw the NAT's address, never the client's.
        let sources = world.atServer.compactMap { bytes in
            bytes.withUnsafeBytes { raw -> IPv4Address? in
                guard let e = try? EthernetFrame(checking: raw), e.etherType == .ipv4 else { return nil }
                return (try? IPv4Packet(checking: e.payload))?.source
            }
        }
        #expect(!sources.isEmpty && sources.allSatisfy { $0 == GatewayWorld.outsideIP })
        if audit {
            #expect(world.engine.reinsertion.failures.total == 0 && world.engine.counters.auditFailures.total == 0)
            #expect(world.engine.reinsertion.tested > 0, "ARP answers and requests went through the audit stage")
        }
        world.expectAtRest()
    }

    /// The first packet of a NATed flow also installs the entry of its replies: the server's
    /// answers take the fast path from the first one, and only the flow's first packet missed.
    @Test func aNATedFlowsRepliesHaveTheirEntryFromTheStart() throws {
        let world = try GatewayWorld()
        try world.server.udp.bind(port: 9)
        try world.client.udp.bind(port: 40000)
        // The neighbours are known before the flow starts (the gateway's own ARP for the server).
        world.sim.schedule(at: .zero) {
            world.client.ping(GatewayWorld.insideIP, identifier: 1, sequence: 1, now: world.sim.clock.now,
                              transmit: world.transmitFromClient)
        }
        world.sim.schedule(at: Instant(nanoseconds: 100_000_000)) { world.sendUDP(to: GatewayWorld.serverIP) }
        for n in 0..<5 {
            world.sim.schedule(at: Instant(nanoseconds: 200_000_000 + Int64(n) * 10_000_000)) {
                // The server answers what it got so far; the client sends again.
                while let d = world.server.udp.receive(port: 9) {
                    try! world.server.udp.send(from: 9, UDPDatagram(peer: d.peer, peerPort: d.peerPort, payload: d.payload))
                }
                world.sendUDP(to: GatewayWorld.serverIP, payload: UInt8(n + 1))
            }
        }
        world.run(seconds: 1)
        var answers: [UInt8] = []
        while let d = world.client.udp.receive(port: 40000) {
            #expect(d.peer == GatewayWorld.serverIP && d.peerPort == 9)
            answers.append(d.payload[0])
        }
        #expect(answers == [0, 1, 2, 3, 4])
        let missesAfterSetUp = 2  // the ping to the gateway, the flow's first datagram
        #expect(world.engine.counters[toSoftware: .miss] == UInt64(missesAfterSetUp),
                "the answers met the entry installed with their flow's: \(world.engine.counters.table)")
        #expect(world.engine.counters.fastPath >= 10, "5 datagrams after the first and 5 answers")
        world.expectAtRest()
    }

    @Test func heldPacketsKeepTheirOrderWhileTheNextHopResolves() throws {
        let world = try GatewayWorld()
        // The client knows the gateway already; the first datagrams wait for the server's ARP.
        world.sim.schedule(at: .zero) {
            for n in 0..<10 { world.sendUDP(to: GatewayWorld.serverIP, payload: UInt8(n)) }
        }
        world.run(seconds: 0.5)
        let payloads = world.atServer.compactMap { bytes -> UInt8? in
            bytes.withUnsafeBytes { raw in
                guard let e = try? EthernetFrame(checking: raw), e.etherType == .ipv4,
                      let ip = try? IPv4Packet(checking: e.payload), ip.protocol == .udp,
                      let udp = try? UDPPacket(checking: ip.payload) else { return nil }
                #expect(udp.verifyChecksum(source: ip.source, destination: ip.destination))
                return udp.payload[0]
            }
        }
        #expect(payloads == (0..<10).map(UInt8.init))
        world.expectAtRest()
    }

    /// Step by step, with no simulation: a datagram waits for the server's ARP reply, and
    /// leaves in the step that takes the reply in. With the software's thread asleep, the
    /// engine's thread runs just that one step (`SoftwareThread.stepIfAsleep`), and the next
    /// may be 10 ms away; the held packets used to wait for it.
    @Test func aHeldPacketLeavesInTheStepThatTakesInItsHopsReply() throws {
        let world = try GatewayWorld()
        let now = world.sim.clock.now
        world.sendUDP(to: GatewayWorld.serverIP)
        world.engine.poll(now: now)
        #expect(world.slowPath.step() == 1)
        #expect(world.slowPath.heldCount == 1, "waits for the server's address")
        world.engine.poll(now: now)  // the ARP request leaves
        let pool = BufferPool(count: 8, bufferSize: 2048, headroom: 0)
        var answers: [[UInt8]] = []
        _ = try world.serverWire.receive(into: pool, max: 8) { frame in
            world.server.receive(frame, now: now, transmit: IPv4Host.contiguous { answers.append(Array($0)) })
        }
        #expect(answers.count == 1, "the server answers the gateway's ARP request")
        for answer in answers { answer.withUnsafeBytes { world.sendFromServer($0) } }
        world.engine.poll(now: now)  // the reply goes to the software
        #expect(world.slowPath.step() == 2, "the reply, then the datagram it resolved")
        #expect(world.slowPath.heldCount == 0)
        world.engine.poll(now: now)
        var datagrams = 0
        _ = try world.serverWire.receive(into: pool, max: 8) { frame in
            if let e = try? EthernetFrame(checking: frame.bytes), e.etherType == .ipv4 { datagrams += 1 }
        }
        #expect(datagrams == 1)
        world.expectAtRest()
    }

    @Test func anUnansweredNextHopFailsWithHostUnreachable() throws {
        let world = try GatewayWorld()
        world.serverSilent = true
        world.sim.schedule(at: .zero) {
            for n in 0..<3 { world.sendUDP(to: GatewayWorld.serverIP, payload: UInt8(n)) }
        }
        world.run(seconds: 4)
        // Three requests, one a second, then the three held datagrams are answered.
        #expect(world.policy.counters.arpRequestsSent == 3)
        #expect(world.policy.counters.resolutionsFailed == 1)
        let errors = GatewayWorld.icmp(in: world.atClient).filter { $0.type == 3 }
        #expect(errors.count == 3)
        #expect(errors.allSatisfy { $0.code == 1 && $0.source == GatewayWorld.insideIP && $0.quotedDestination == GatewayWorld.serverIP })
        #expect(world.slowPath.dropped["unresolved"] == 3)
        world.expectAtRest()
    }

    @Test(arguments: [SlowPath.Processing.partial, .complete])
    func ttlExpiryAnswersTimeExceededOnBothPaths(processing: SlowPath.Processing) throws {
        let world = try GatewayWorld(processing: processing)
        world.sim.schedule(at: .zero) { world.sendUDP(to: GatewayWorld.serverIP, ttl: 1) }
        world.run(seconds: 0.2)
        // The flow now has an entry; a later datagram with TTL 1 meets it on the fast path.
        world.sendUDP(to: GatewayWorld.serverIP, ttl: 64)
        world.run(seconds: 0.2)
        world.sendUDP(to: GatewayWorld.serverIP, ttl: 1)
        world.run(seconds: 0.2)
        let exceeded = GatewayWorld.icmp(in: world.atClient).filter { $0.type == 11 }
        #expect(exceeded.count == 2)
        #expect(exceeded.allSatisfy { $0.code == 0 && $0.source == GatewayWorld.insideIP && $0.quotedDestination == GatewayWorld.serverIP })
        #expect(world.engine.counters[toSoftware: .timeToLiveExceeded] == 1, "the second came from the fast path")
        #expect(world.slowPath.icmpErrorsSent == 2)
        world.expectAtRest()
    }

    @Test func noRouteIsNetworkUnreachableAndTheGatewayAnswersEcho() throws {
        let world = try GatewayWorld()
        world.sim.schedule(at: .zero) {
            world.sendUDP(to: IPv4Address(192, 168, 50, 1))
            world.client.ping(GatewayWorld.insideIP, identifier: 1, sequence: 1, now: world.sim.clock.now,
                              transmit: world.transmitFromClient)
            world.client.ping(GatewayWorld.outsideIP, identifier: 1, sequence: 2, now: world.sim.clock.now,
                              transmit: world.transmitFromClient)
        }
        world.run(seconds: 0.5)
        let unreachable = GatewayWorld.icmp(in: world.atClient).filter { $0.type == 3 }
        #expect(unreachable.count == 1 && unreachable[0].code == 0)
        #expect(world.client.echoReplies.map(\.sequence).sorted() == [1, 2])
        #expect(world.policy.counters.echoAnswered == 2)
        world.expectAtRest()
    }

    /// RFC 1812 4.3.2.7: no ICMP error about a packet to a broadcast address, or from an
    /// address that names no host. A datagram to the network or broadcast address of one of
    /// the gateway's subnets is dropped, unanswered, without an ARP request for it (the
    /// broadcast used to be resolved, and the failure answered with host unreachable); one
    /// from class E (240/4) with no route is dropped unanswered too.
    @Test func noICMPErrorAboutABroadcastOrFromClassE() throws {
        let world = try GatewayWorld()
        world.sim.schedule(at: .zero) {
            world.sendUDP(to: IPv4Address(10, 2, 0, 255))
            world.sendUDP(to: IPv4Address(10, 2, 0, 0))
            world.sendUDP(to: IPv4Address(10, 1, 0, 255))
            world.sendUDP(to: IPv4Address(192, 168, 50, 1), from: IPv4Address(240, 0, 0, 1))
        }
        world.run(seconds: 4)
        #expect(GatewayWorld.icmp(in: world.atClient).isEmpty)
        #expect(world.slowPath.icmpErrorsSent == 0)
        #expect(world.slowPath.dropped["directed-broadcast"] == 3)
        #expect(world.slowPath.dropped["no-route"] == 1)
        #expect(world.atServer.isEmpty && world.policy.counters.arpRequestsSent == 0)
        world.expectAtRest()
    }

    /// The server's address moves to another MAC (a failover's gratuitous ARP) while a flow
    /// to it runs on the fast path, whose entry holds the old MAC: the flow's next datagrams
    /// reach the new MAC, in order, and the rebuilt entry takes the fast path again. They
    /// went on to the old MAC for as long as the flow carried traffic.
    @Test(arguments: [SlowPath.Processing.partial, .complete])
    func aNeighbourThatMovesGetsTheFlowsNextDatagrams(processing: SlowPath.Processing) throws {
        let world = try GatewayWorld(processing: processing)
        try world.server.udp.bind(port: 9)
        let oldMAC = world.server.hardwareAddress, newMAC = MACAddress.local(0x52)
        func at(_ ms: Int64, _ payloads: ClosedRange<UInt8>) {
            world.sim.schedule(at: Instant(nanoseconds: ms * 1_000_000)) {
                for n in payloads { world.sendUDP(to: GatewayWorld.serverIP, payload: n) }
            }
        }
        at(0, 0...0)  // resolves the server
        at(100, 1...4)  // the fast path
        world.sim.schedule(at: Instant(nanoseconds: 200_000_000)) {
            var frame = [UInt8](repeating: 0, count: 60)
            frame.withUnsafeMutableBytes { raw in
                EthernetRepr(destination: .broadcast, source: newMAC, etherType: .arp).emit(into: raw)
                ARPRepr(operation: .request, senderHardwareAddress: newMAC, senderProtocolAddress: GatewayWorld.serverIP,
                        targetHardwareAddress: .zero, targetProtocolAddress: GatewayWorld.serverIP)
                    .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]))
            }
            frame.withUnsafeBytes { world.sendFromServer($0) }
            world.sim.wake()
        }
        at(300, 5...14)  // together: the first meets the stale entry, the others queue behind it
        at(400, 15...19)  // the rebuilt entry
        world.run(seconds: 0.5)
        let datagrams = world.atServer.compactMap { bytes -> (payload: UInt8, to: MACAddress)? in
            bytes.withUnsafeBytes { raw in
                guard let e = try? EthernetFrame(checking: raw), e.etherType == .ipv4,
                      let ip = try? IPv4Packet(checking: e.payload), ip.protocol == .udp,
                      let udp = try? UDPPacket(checking: ip.payload) else { return nil }
                return (udp.payload[0], e.destination)
            }
        }
        #expect(datagrams.map(\.payload) == Array(0...19))
        #expect(datagrams.filter { $0.payload < 5 }.allSatisfy { $0.to == oldMAC })
        #expect(datagrams.filter { $0.payload >= 5 }.allSatisfy { $0.to == newMAC },
                "\(datagrams.map { "\($0.payload) to \($0.to)" })")
        #expect(world.engine.counters.fastPath >= 9, "1-4 and 15-19")
        #expect(world.policy.counters.neighborsMoved == 1 && world.engine.counters.invalidations == 1)
        world.expectAtRest()
    }

    @Test func icmpErrorsAreRateLimited() throws {
        let world = try GatewayWorld()
        world.sim.schedule(at: .zero) {
            // Each datagram is a new flow with no route: one error each, up to the burst.
            for n in 0..<200 { world.sendUDP(to: IPv4Address(192, 168, 50, 1), sourcePort: UInt16(1000 + n)) }
        }
        world.run(seconds: 0.01)
        let errors = GatewayWorld.icmp(in: world.atClient).filter { $0.type == 3 }.count
        #expect(errors == 50, "the burst of 1000/s")
        #expect(world.policy.counters.icmpErrorsRateLimited == 150)
        world.expectAtRest()
    }
}
