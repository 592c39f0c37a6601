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
        // In offset order (the first leaves last, from the packet's own buffer).
        let offset = { (f: [UInt8]) in (Int(f[20]) << 8 | Int(f[21])) & 0x1fff }
        let fragments = packets[1...2].sorted { offset($0) < offset($1) }
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

    /// A UDP GSO super-datagram with DF clear (Linux clears it on one longer than the MTU
    /// unless the socket asks for path MTU discovery) whose datagrams do not fit the next
    /// hop: cut into its datagrams, as Linux's own forwarding does, each sent on in
    /// fragments ahead of the flow's next packet. It was dropped as too-big-super-frame.
    @Test(arguments: [SlowPath.Processing.partial, .complete])
    func aUDPSuperDatagramWithoutDFLeavesAsItsDatagramsInFragments(processing: SlowPath.Processing) throws {
        let world = try GatewayWorld(processing: processing, outsideMTU: Self.mtu, insideFrameSize: 8192,
                                     insideCarriesOffloadMetadata: true)
        world.sim.schedule(at: .zero) { world.sendUDP(to: GatewayWorld.serverIP, payload: 1) }
        world.run(seconds: 0.2)
        // Datagrams of 1472, 1472 and 100 bytes, each byte its datagram's number.
        let sizes = [1472, 1472, 100]
        let payload = sizes.enumerated().flatMap { i, n in [UInt8](repeating: UInt8(i + 1), count: n) }
        var frame = [UInt8](repeating: 0, count: 42 + payload.count)
        frame.withUnsafeMutableBytes { raw in
            EthernetRepr(destination: GatewayWorld.insideMAC, source: world.client.hardwareAddress, etherType: .ipv4)
                .emit(into: raw)
            IPv4Repr(source: GatewayWorld.clientIP, destination: GatewayWorld.serverIP, protocol: .udp,
                     payloadLength: 8 + payload.count, identification: 0x5000, dontFragment: false)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
            UnsafeMutableRawBufferPointer(rebasing: raw[42...]).copyBytes(from: payload)
            UDPRepr(sourcePort: 40000, destinationPort: 9, payloadLength: payload.count)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[34...]), source: GatewayWorld.clientIP,
                      destination: GatewayWorld.serverIP, checksums: .partial)
        }
        let superDatagram = OffloadMetadata.udpSegmentation(segmentSize: 1472, headerLength: 42, checksumStart: 34,
                                                            checksumOffset: 6)
        try frame.withUnsafeBytes { try world.clientWire.transmit(header: $0, payloads: .none, metadata: superDatagram) }
        world.sendUDP(to: GatewayWorld.serverIP, payload: 3)
        world.run(seconds: 0.2)

        let packets = Self.udpPackets(world.atServer)
        // The first datagram, two fragments for each of the two full ones, the short one
        // whole, the last datagram.
        try #require(packets.count == 7, "\(packets.count) packets")
        #expect(packets[0][42] == 1 && packets[6][42] == 3)
        var pieces: [UInt16: [(offset: Int, more: Bool, payload: [UInt8])]] = [:]
        for f in packets[1...5] {
            try f.withUnsafeBytes { raw in
                let ip = try IPv4Packet(checking: UnsafeRawBufferPointer(rebasing: raw[14...]))
                #expect(ip.totalLength <= Self.mtu && ip.verifyChecksum && !ip.dontFragment)
                #expect(ip.source == GatewayWorld.outsideIP && ip.timeToLive == 63, "NAT and TTL as for any packet")
                pieces[ip.identification, default: []].append((ip.fragmentOffset, ip.moreFragments, Array(ip.payload)))
            }
        }
        // One identification per datagram, one more each, as Linux's GSO numbers them.
        #expect(pieces.keys.sorted() == [0x5000, 0x5001, 0x5002])
        for (i, id) in pieces.keys.sorted().enumerated() {
            var datagram: [UInt8] = []
            for piece in pieces[id]!.sorted(by: { $0.offset < $1.offset }) {
                #expect(piece.offset == datagram.count, "each piece follows the one before")
                datagram += piece.payload
            }
            #expect(pieces[id]!.filter { !$0.more }.count == 1, "MF clear on the last piece alone")
            #expect(datagram.count == 8 + sizes[i] && datagram[8...].allSatisfy { $0 == UInt8(i + 1) })
            let checksumHolds = datagram.withUnsafeBytes { raw in
                (try? UDPPacket(checking: raw))?.verifyChecksum(source: GatewayWorld.outsideIP,
                                                                destination: GatewayWorld.serverIP)
            }
            #expect(checksumHolds == true, "datagram \(i)")
        }
        #expect(world.slowPath.fragmented == 1 && world.slowPath.dropped["too-big-super-frame"] == nil)
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

    /// A TCP segment that leaves in fragments ends its flow's entry like any other when it
    /// carries a FIN: the engine sees its first fragment's TCP header. It went back as
    /// consumed, the entry stayed open, and it idled out after the established timeout.
    @Test func aFINInAFragmentedSegmentMarksTheEntryClosing() throws {
        let world = try GatewayWorld(outsideMTU: Self.mtu)
        func sendTCP(flags: TCPFlags, length: Int) {
            let src = GatewayWorld.clientIP, dst = GatewayWorld.serverIP
            var frame = [UInt8](repeating: 0, count: 14 + 20 + 20 + length)
            frame.withUnsafeMutableBytes { raw in
                EthernetRepr(destination: GatewayWorld.insideMAC, source: world.client.hardwareAddress, etherType: .ipv4)
                    .emit(into: raw)
                IPv4Repr(source: src, destination: dst, protocol: .tcp, payloadLength: 20 + length, dontFragment: false)
                    .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
                TCPRepr(sourcePort: 40001, destinationPort: 80, sequenceNumber: 1, acknowledgmentNumber: 1, flags: flags,
                        windowSize: 1000, payloadLength: length)
                    .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[34...]), source: src, destination: dst,
                          checksums: .verify)
            }
            frame.withUnsafeBytes { world.sendFromClient($0) }
            world.sim.wake()
        }
        world.sim.schedule(at: .zero) { sendTCP(flags: .ack, length: 10) }
        world.run(seconds: 0.2)
        let before = world.engine.counters.tornDown
        sendTCP(flags: [.fin, .ack], length: 1800)
        world.run(seconds: 0.2)
        #expect(world.slowPath.fragmented == 1)
        #expect(world.engine.counters.tornDown == before + 1, "the FIN marked the entry closing")
        world.expectAtRest()
    }
}

/// An interface's MTU can change while the gateway runs (`ip link set … mtu`). The engine
/// asks its ports again each second, and the fast path and the software both size packets
/// for the new MTU. It was read once, when the port opened.
@Suite struct GatewayMTUChangeTests {
    static func fragmentSizes(_ frames: [[UInt8]]) -> [Int] {
        GatewayMTUTests.udpPackets(frames).filter { $0[20] & 0x3f != 0 || $0[21] != 0 }
            .map { Int($0[16]) << 8 | Int($0[17]) }
    }

    @Test func aSmallerMTUIsAnsweredOnBothPaths() throws {
        let world = try GatewayWorld()
        // A 1500-byte packet fits the outside link's 2034 bytes, and makes the flow's entry.
        world.sim.schedule(at: .zero) { world.sendUDP(to: GatewayWorld.serverIP, length: 1472) }
        world.run(seconds: 0.2)
        #expect(GatewayMTUTests.udpPackets(world.atServer).count == 1)
        world.serverWire.setMTU(1400)
        world.run(seconds: 1.1)
        #expect(world.engine.counters.mtuChanges == 1)
        #expect(world.engine.portMTUs[1] == 1400)
        // The same flow (fast path), then a new one (slow path).
        world.sendUDP(to: GatewayWorld.serverIP, length: 1472)
        world.run(seconds: 0.2)
        world.sendUDP(to: GatewayWorld.serverIP, sourcePort: 40001, length: 1472)
        world.run(seconds: 0.2)
        let mtus = world.atClient.filter { $0.count > 41 && $0[23] == 1 && $0[34] == 3 && $0[35] == 4 }
            .map { Int($0[40]) << 8 | Int($0[41]) }
        #expect(mtus == [1400, 1400], "fragmentation needed, with the new MTU, for both")
        #expect(world.engine.counters[toSoftware: .tooBig] == 1, "the first from the fast path")
        #expect(GatewayMTUTests.udpPackets(world.atServer).count == 1, "neither reached the server")
        world.expectAtRest()
    }

    /// The software's fragment buffers are sized for the ports' largest MTU: after a larger
    /// one they are made again, and the fragments use the new MTU. (Both ports start at
    /// 1000 here, so that the outside's new 1400 is the largest; the client's link takes
    /// datagrams that make fragments of the new size in those buffers.)
    @Test func fragmentsFollowALargerMTU() throws {
        let world = try GatewayWorld(insideFrameSize: 4096)
        world.clientWire.setMTU(1000)
        world.serverWire.setMTU(1000)
        world.run(seconds: 0.1)
        #expect(world.engine.portMTUs[0] == 1000 && world.engine.portMTUs[1] == 1000, "asked at the first poll")
        world.sendUDP(to: GatewayWorld.serverIP, payload: 1, length: 3000, dontFragment: false)
        world.run(seconds: 0.2)
        let before = Self.fragmentSizes(world.atServer)
        #expect(before.count == 4 && before.allSatisfy { $0 <= 1000 }, "\(before)")
        world.serverWire.setMTU(1400)
        world.run(seconds: 1.1)
        world.atServer.removeAll()
        world.sendUDP(to: GatewayWorld.serverIP, payload: 2, length: 3000, dontFragment: false)
        world.run(seconds: 0.2)
        let after = Self.fragmentSizes(world.atServer)
        #expect(after.count == 3 && after.filter { $0 > 1000 }.count == 2 && after.allSatisfy { $0 <= 1400 }, "\(after)")
        #expect(world.slowPath.fragmented == 2)
        world.expectAtRest()
    }
}
