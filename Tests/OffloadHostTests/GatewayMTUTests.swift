import Testing
import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadWire

/// A packet larger than the next hop's MTU (RFC 1812 §4.2.2.7, §5.2.6): the server's link
/// takes packets of 1400 bytes, the client's 2034. With DF set the gateway answers
/// "fragmentation needed" with the next hop's MTU (RFC 1191), which is how path MTU
/// discovery works; without, it sends the packet on in fragments. Both on the slow path (a
/// new flow's first packet) and from the fast path (the engine sends the packet to the
/// software), in both processing modes.
@Suite struct GatewayMTUTests {
    static let mtu = 1400

    /// IPv4 frames of UDP (or its fragments) the server received, in order.
    static func udpPackets(_ frames: [[UInt8]]) -> [[UInt8]] {
        frames.filter { $0.count > 34 && $0[12] == 0x08 && $0[13] == 0 && $0[23] == 17 }
    }

    @Test(arguments: [SlowPath.Processing.partial, .complete])
    func aTooBigPacketWithDFIsAnsweredWithTheNextHopsMTU(processing: SlowPath.Processing) throws {
        let world = try GatewayWorld(processing: processing, outsideMTU: Self.mtu)
        // 1500 bytes of IP packet: the first on the slow path, the second from the fast
        // path, once a small datagram has made the flow's entry.
        world.sim.schedule(at: .zero) { world.sendUDP(to: GatewayWorld.serverIP, length: 1472) }
        world.run(seconds: 0.2)
        world.sendUDP(to: GatewayWorld.serverIP, payload: 7)
        world.run(seconds: 0.2)
        world.sendUDP(to: GatewayWorld.serverIP, length: 1472)
        world.run(seconds: 0.2)

        let errors = GatewayWorld.icmp(in: world.atClient).filter { $0.type == 3 }
        #expect(errors.count == 2)
        #expect(errors.allSatisfy { $0.code == 4 && $0.source == GatewayWorld.insideIP && $0.quotedDestination == GatewayWorld.serverIP })
        // RFC 1191: the next hop's MTU in the low 16 bits of the second word.
        let mtus = world.atClient.filter { $0.count > 41 && $0[23] == 1 && $0[34] == 3 }.map { Int($0[40]) << 8 | Int($0[41]) }
        #expect(mtus == [Self.mtu, Self.mtu])
        #expect(world.engine.counters[toSoftware: .tooBig] == 1, "the second came from the fast path")
        #expect(world.slowPath.dropped["fragmentation-needed"] == 2)
        let delivered = Self.udpPackets(world.atServer)
        #expect(delivered.count == 1 && delivered.first?[42] == 7, "only the small datagram reached the server")
        world.expectAtRest()
    }

    @Test(arguments: [SlowPath.Processing.partial, .complete])
    func aTooBigPacketWithoutDFLeavesInFragmentsAheadOfTheFlowsNextPacket(processing: SlowPath.Processing) throws {
        let world = try GatewayWorld(processing: processing, outsideMTU: Self.mtu)
        world.sim.schedule(at: .zero) { world.sendUDP(to: GatewayWorld.serverIP, payload: 1) }
        world.run(seconds: 0.2)
        // The flow has its entry: the big datagram goes to the software, and the small one
        // right behind it must not overtake its fragments.
        world.sendUDP(to: GatewayWorld.serverIP, payload: 2, length: 1800, dontFragment: false)
        world.sendUDP(to: GatewayWorld.serverIP, payload: 3)
        world.run(seconds: 0.2)

        let packets = Self.udpPackets(world.atServer)
        try #require(packets.count == 4, "the first datagram, two fragments, the last datagram")
        #expect(packets[0][42] == 1 && packets[3][42] == 3)
        let fragments = Array(packets[1...2])
        var datagram: [UInt8] = []
        for (i, f) in fragments.enumerated() {
            try f.withUnsafeBytes { raw in
                let ip = try IPv4Packet(checking: UnsafeRawBufferPointer(rebasing: raw[14...]))
                #expect(ip.totalLength <= Self.mtu && ip.verifyChecksum)
                #expect(ip.identification == 0x4242 && !ip.dontFragment)
                #expect(ip.moreFragments == (i < 1), "MF on all but the last")
                #expect(ip.fragmentOffset == datagram.count, "each piece follows the one before")
                #expect(ip.source == GatewayWorld.outsideIP && ip.timeToLive == 63, "NAT and TTL as for any packet")
                datagram += ip.payload
            }
        }
        // The pieces make the datagram again, its checksum right over the NAT's addresses.
        #expect(datagram.count == 8 + 1800)
        #expect(datagram[8] == 2 && Array(datagram[9..<(8 + 1800)]) == (1..<1800).map { UInt8(truncatingIfNeeded: $0) })
        let checksumHolds = datagram.withUnsafeBytes { raw in
            (try? UDPPacket(checking: raw))?.verifyChecksum(source: GatewayWorld.outsideIP, destination: GatewayWorld.serverIP)
        }
        #expect(checksumHolds == true)
        #expect(world.engine.counters[toSoftware: .tooBig] == 1)
        #expect(world.slowPath.fragmented == 1)
        world.expectAtRest()
    }

    /// In audit mode the compatibility test refuses fragments (B7), so the software does not
    /// make them: the packet is dropped once, by name, not counted as sent on and then lost.
    @Test func underAuditATooBigPacketWithoutDFIsDroppedByName() throws {
        let world = try GatewayWorld(audit: true, outsideMTU: Self.mtu)
        world.sim.schedule(at: .zero) { world.sendUDP(to: GatewayWorld.serverIP, payload: 1) }
        world.run(seconds: 0.2)
        world.sendUDP(to: GatewayWorld.serverIP, payload: 2, length: 1800, dontFragment: false)
        world.run(seconds: 0.2)
        #expect(world.slowPath.dropped["fragmenting-under-audit"] == 1)
        #expect(world.slowPath.fragmented == 0)
        #expect(world.engine.reinsertion.failures[.fragment] == 0, "no fragment was made to fail the test")
        #expect(Self.udpPackets(world.atServer).count == 1)
        world.expectAtRest()
    }

    /// A flow whose packets are all too big is in use: each is a hit on its entry, which
    /// does not idle out under them (it did, every UDP idle timeout, and the flow's next
    /// packet was a miss).
    @Test func aFlowOfTooBigPacketsKeepsItsEntry() throws {
        let world = try GatewayWorld(outsideMTU: Self.mtu, udpIdle: .seconds(1))
        world.sim.schedule(at: .zero) { world.sendUDP(to: GatewayWorld.serverIP, payload: 1) }
        world.run(seconds: 0.2)
        for _ in 0..<8 {
            world.sendUDP(to: GatewayWorld.serverIP, length: 1472)
            world.run(seconds: 0.4)
        }
        #expect(world.engine.counters.expired == 0)
        #expect(world.engine.counters[toSoftware: .tooBig] == 8, "each from the fast path")
        #expect(world.slowPath.dropped["fragmentation-needed"] == 8)
        world.expectAtRest()
    }
}
