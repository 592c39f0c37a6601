import Testing
import OffloadCore
import OffloadHost
import OffloadWire

@Suite struct UDPSocketsTests {
    @Test func datagramsBothWaysAndCountedDrops() throws {
        let w = try TwoHosts(seed: 4)
        try w.a.udp.bind(port: 5000)
        try w.b.udp.bind(port: 6000, capacity: 3)
        // Resolve the neighbour first: while ARP runs the host holds only a few packets.
        w.a.ping(IPv4Address(10, 5, 0, 2), identifier: 1, sequence: 1, now: w.sim.clock.now, transmit: w.send(true))
        w.sim.run(until: Instant(nanoseconds: 10_000_000))
        for i in 0..<5 {
            try w.a.udp.send(from: 5000, UDPDatagram(peer: IPv4Address(10, 5, 0, 2), peerPort: 6000,
                                                    payload: [UInt8](repeating: UInt8(i), count: 100 + i)))
        }
        try w.a.udp.send(from: 5000, UDPDatagram(peer: IPv4Address(10, 5, 0, 2), peerPort: 6001, payload: [1]))
        w.sim.wake()
        w.sim.run(until: Instant(nanoseconds: 20_000_000))
        var got: [UDPDatagram] = []
        while let d = w.b.udp.receive(port: 6000) { got.append(d) }
        #expect(got.map(\.payload.count) == [100, 101, 102], "the first three, in order; the queue held three")
        #expect(got.allSatisfy { $0.peer == IPv4Address(10, 5, 0, 1) && $0.peerPort == 5000 })
        #expect(w.b.udp.counters.droppedQueueFull == 2)
        #expect(w.b.udp.counters.droppedNoPort == 1)

        try w.b.udp.send(from: 6000, UDPDatagram(peer: IPv4Address(10, 5, 0, 1), peerPort: 5000, payload: [9, 9]))
        w.sim.wake()
        w.sim.run(until: Instant(nanoseconds: 40_000_000))
        #expect(w.a.udp.receive(port: 5000)?.payload == [9, 9])
        #expect(w.a.udp.counters.datagramsSent == 6 && w.b.udp.counters.datagramsReceived == 3)
    }

    /// A UDP GSO super-datagram (a packet socket with the virtio-net header hands over what
    /// a sender's `UDP_SEGMENT` made) is the datagrams of its segment size, each delivered on
    /// its own, as Linux cuts them. The packet socket refused it as a bad virtio-net header.
    @Test func aUDPSuperDatagramIsDeliveredAsItsDatagrams() throws {
        let local = IPv4Address(10, 5, 0, 2), peer = IPv4Address(10, 5, 0, 1)
        let host = IPv4Host(.init(interface: try IPv4CIDR(parsing: "10.5.0.2/24"), hardwareAddress: .local(2)))
        try host.udp.bind(port: 6000)
        let payload = (0..<2500).map { UInt8(truncatingIfNeeded: $0 / 1000 + 1) }
        var frame = [UInt8](repeating: 0, count: 14 + 20 + 8 + payload.count)
        frame.withUnsafeMutableBytes { raw in
            EthernetRepr(destination: .local(2), source: .local(1), etherType: .ipv4).emit(into: raw)
            IPv4Repr(source: peer, destination: local, protocol: .udp, payloadLength: 8 + payload.count)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
            UnsafeMutableRawBufferPointer(rebasing: raw[42...]).copyBytes(from: payload)
            UDPRepr(sourcePort: 5000, destinationPort: 6000, payloadLength: payload.count)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[34...]), source: peer, destination: local,
                      checksums: .partial)
        }
        let superFrame = OffloadMetadata.udpSegmentation(segmentSize: 1000, headerLength: 42, checksumStart: 34,
                                                         checksumOffset: 6)
        frame.withUnsafeBytes {
            host.receive(frame: $0, offload: superFrame, now: .zero, transmit: IPv4Host.contiguous { _ in })
        }
        var got: [UDPDatagram] = []
        while let d = host.udp.receive(port: 6000) { got.append(d) }
        #expect(got.map(\.payload.count) == [1000, 1000, 500])
        #expect(got.enumerated().allSatisfy { i, d in d.payload.allSatisfy { $0 == UInt8(i + 1) } && d.peerPort == 5000 })
    }

    /// A UDP super-frame fits a port when each of its datagrams does.
    @Test func aUDPSuperFrameFitsByItsSegments() {
        let frame = [UInt8](repeating: 0x45, count: 14 + 20 + 8 + 3000)
        let metadata = { (size: UInt16) in
            OffloadMetadata.udpSegmentation(segmentSize: size, headerLength: 42, checksumStart: 34, checksumOffset: 6)
        }
        frame.withUnsafeBytes { raw in
            #expect(metadata(1472).fits(raw, mtu: 1500))
            #expect(!metadata(1473).fits(raw, mtu: 1500))
            #expect(!OffloadMetadata.none.fits(raw, mtu: 1500))
        }
    }

    @Test func misuseIsATypedError() throws {
        var udp = UDPSockets()
        try udp.bind(port: 1)
        #expect(throws: UDPError.portInUse(1)) { try udp.bind(port: 1) }
        #expect(throws: UDPError.notBound(2)) {
            try udp.send(from: 2, UDPDatagram(peer: .any, peerPort: 1, payload: [1]))
        }
        #expect(throws: UDPError.tooLarge(bytes: 1473, limit: 1472)) {
            try udp.send(from: 1, UDPDatagram(peer: .any, peerPort: 1, payload: [UInt8](repeating: 0, count: 1473)))
        }
    }
}
