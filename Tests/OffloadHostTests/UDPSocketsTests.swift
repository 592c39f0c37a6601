import Testing
import OffloadCore
import OffloadHost

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
