import Testing
import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink
import OffloadSim
import OffloadWire

/// Fragmented datagrams through the NAT, both ways: every fragment is translated, and the
/// reassembled datagram's UDP checksum verifies with the translated addresses and ports.
@Suite struct GatewayFragmentTests {
    typealias Frames = GatewayNATSimulationTests
    static let clientIP = IPv4Address(10, 1, 0, 5), serverIP = IPv4Address(10, 2, 0, 2), natIP = IPv4Address(10, 2, 0, 1)

    /// A UDP datagram cut into IPv4 fragments of `size` bytes (a multiple of 8), first to last.
    static func fragments(from src: IPv4Address, _ sport: UInt16, to dst: IPv4Address, _ dport: UInt16,
                          payload: [UInt8], id: UInt16, size: Int, toMAC: MACAddress, fromMAC: MACAddress) -> [[UInt8]] {
        var datagram = [UInt8](repeating: 0, count: 8) + payload
        datagram.withUnsafeMutableBytes { raw in
            UDPRepr(sourcePort: sport, destinationPort: dport, payloadLength: payload.count)
                .emit(into: raw, source: src, destination: dst, checksums: .verify)
        }
        return fragments(of: datagram, protocol: .udp, from: src, to: dst, id: id, size: size, toMAC: toMAC, fromMAC: fromMAC)
    }

    /// An ICMP echo (request or reply) cut into fragments.
    static func echoFragments(request: Bool, from src: IPv4Address, to dst: IPv4Address, identifier: UInt16,
                              data: [UInt8], id: UInt16, size: Int, toMAC: MACAddress, fromMAC: MACAddress) -> [[UInt8]] {
        var message: [UInt8] = [request ? 8 : 0, 0, 0, 0, UInt8(identifier >> 8), UInt8(identifier & 0xff), 0, 1] + data
        let sum = message.withUnsafeBytes { InternetChecksum.checksum($0) }
        message[2] = UInt8(sum >> 8)
        message[3] = UInt8(sum & 0xff)
        return fragments(of: message, protocol: .icmp, from: src, to: dst, id: id, size: size, toMAC: toMAC, fromMAC: fromMAC)
    }

    static func fragments(of datagram: [UInt8], protocol proto: IPProtocol, from src: IPv4Address, to dst: IPv4Address,
                          id: UInt16, size: Int, toMAC: MACAddress, fromMAC: MACAddress) -> [[UInt8]] {
        stride(from: 0, to: datagram.count, by: size).map { offset in
            let chunk = Array(datagram[offset..<min(offset + size, datagram.count)])
            var frame = [UInt8](repeating: 0, count: 34) + chunk
            frame.withUnsafeMutableBytes { raw in
                EthernetRepr(destination: toMAC, source: fromMAC, etherType: .ipv4).emit(into: raw)
                let header = UnsafeMutableRawBufferPointer(rebasing: raw[14..<34])
                IPv4Repr(source: src, destination: dst, protocol: proto, payloadLength: chunk.count, identification: id,
                         dontFragment: false).emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
                let flags = (offset + size < datagram.count ? 0x2000 : 0) | offset / 8
                header.storeBytes(of: UInt16(flags).bigEndian, toByteOffset: 6, as: UInt16.self)
                header.storeBytes(of: 0, toByteOffset: 10, as: UInt16.self)
                header.storeBytes(of: InternetChecksum.checksum(UnsafeRawBufferPointer(header)).bigEndian, toByteOffset: 10,
                                  as: UInt16.self)
            }
            return frame
        }
    }

    /// Fragments as they arrive, by datagram: checked headers, reassembled when complete.
    struct Reassembly {
        var pieces: [UInt16: [(offset: Int, last: Bool, bytes: [UInt8])]] = [:]
        var addresses: [UInt16: (IPv4Address, IPv4Address)] = [:]

        mutating func add(_ frame: UnsafeRawBufferPointer) {
            let ip = try! IPv4Packet(checking: try! EthernetFrame(checking: frame).payload)
            #expect(ip.verifyChecksum && ip.isFragment)
            pieces[ip.identification, default: []].append((ip.fragmentOffset, !ip.moreFragments, Array(ip.payload)))
            addresses[ip.identification] = (ip.source, ip.destination)
        }

        /// The whole UDP datagram of `id`, if every fragment came.
        func datagram(_ id: UInt16) -> [UInt8]? {
            guard let all = pieces[id]?.sorted(by: { $0.offset < $1.offset }), all.last?.last == true else { return nil }
            var bytes: [UInt8] = []
            for piece in all {
                guard piece.offset == bytes.count else { return nil }
                bytes += piece.bytes
            }
            return bytes
        }
    }

    @Test func fragmentedDatagramsCrossTheNATBothWays() throws {
        let sim = Simulation(seed: 12)
        let (engine, wires) = Engine.onMemoryWires(configuration: .init(), portCount: 2, clock: sim.clock)
        var client = wires[0], server = wires[1]
        let policy = try GatewayNATSimulationTests.policy(clock: sim.clock)
        policy.addNeighbor(port: 0, address: Self.clientIP, hardwareAddress: Frames.clientMAC)
        policy.addNeighbor(port: 1, address: Self.serverIP, hardwareAddress: Frames.serverMAC)
        let slowPath = SlowPath(exceptions: engine.exceptions, reinsertion: engine.reinsertion, processing: .partial,
                                policy: policy)
        sim.addProcess("engine") { engine.poll(now: sim.clock.now) }
        sim.addProcess("software", weight: 0.3) { slowPath.step() > 0 }

        let payload = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        var atServer = Reassembly(), atClient = Reassembly()
        var answered = false, answeredEcho = false
        let pool = BufferPool(count: 32, bufferSize: 2048, headroom: 0)
        // The server answers datagram 1, once it has it whole, with its own fragments.
        sim.addProcess("server") {
            var out: [[UInt8]] = []
            let n = (try? server.receive(into: pool, max: 8) { b in atServer.add(b.bytes) }) ?? 0
            if !answeredEcho, let echo = atServer.datagram(3) {
                answeredEcho = true
                let identifier = UInt16(echo[4]) << 8 | UInt16(echo[5])
                out += Self.echoFragments(request: false, from: Self.serverIP, to: Self.natIP, identifier: identifier,
                                          data: Array(echo[8...]), id: 600, size: 512, toMAC: Frames.outside,
                                          fromMAC: Frames.serverMAC)
            }
            if !answered, let datagram = atServer.datagram(1) {
                answered = true
                let port = UInt16(datagram[0]) << 8 | UInt16(datagram[1])
                out += Self.fragments(from: Self.serverIP, 7, to: Self.natIP, port, payload: payload.reversed(), id: 500,
                                     size: 512, toMAC: Frames.outside, fromMAC: Frames.serverMAC)
            }
            for frame in out { try! frame.withUnsafeBytes { try server.transmit($0) } }
            return n > 0 || !out.isEmpty
        }
        sim.addProcess("client") {
            (try? client.receive(into: pool, max: 8) { b in atClient.add(b.bytes) }) ?? 0 > 0
        }
        func send(_ frames: [[UInt8]], at microseconds: Int64) {
            sim.schedule(at: Instant(nanoseconds: microseconds * 1000)) {
                for frame in frames { try! frame.withUnsafeBytes { try client.transmit($0) } }
            }
        }
        let first = Self.fragments(from: Self.clientIP, 40000, to: Self.serverIP, 7, payload: payload, id: 1, size: 400,
                                   toMAC: Frames.inside, fromMAC: Frames.clientMAC)
        send(first, at: 0)
        // Datagram 2's middle fragment comes before its first: nothing to translate it by.
        let second = Self.fragments(from: Self.clientIP, 40000, to: Self.serverIP, 7, payload: payload, id: 2, size: 400,
                                    toMAC: Frames.inside, fromMAC: Frames.clientMAC)
        send([second[1], second[0], second[2]], at: 1000)
        // A large ping.
        send(Self.echoFragments(request: true, from: Self.clientIP, to: Self.serverIP, identifier: 33, data: payload, id: 3,
                                size: 512, toMAC: Frames.inside, fromMAC: Frames.clientMAC), at: 2000)
        sim.run(maxSteps: 500_000)

        #expect(first.count == 3)
        let outbound = try #require(atServer.datagram(1), "every fragment of datagram 1 reached the server")
        #expect(atServer.addresses[1]! == (Self.natIP, Self.serverIP))
        let (sourcePort, destinationPort, verifies) = outbound.withUnsafeBytes { raw in
            let udp = try! UDPPacket(checking: raw)
            return (udp.sourcePort, udp.destinationPort, udp.verifyChecksum(source: Self.natIP, destination: Self.serverIP))
        }
        #expect(sourcePort == 40000 && destinationPort == 7 && verifies)
        #expect(Array(outbound[8...]) == payload)

        let inbound = try #require(atClient.datagram(500), "every fragment of the answer reached the client")
        #expect(atClient.addresses[500]! == (Self.serverIP, Self.clientIP))
        #expect(inbound.withUnsafeBytes { try! UDPPacket(checking: $0).verifyChecksum(source: Self.serverIP, destination: Self.clientIP) })
        #expect(inbound.withUnsafeBytes { try! UDPPacket(checking: $0).destinationPort } == 40000)
        #expect(Array(inbound[8...]) == payload.reversed())

        #expect(atServer.pieces[2]?.count == 2 && atServer.datagram(2) == nil)
        #expect(slowPath.dropped["fragment-without-first"] == 1)
        // The ping went out as the NAT's, and its reply came back to the client with its identifier.
        let request = try #require(atServer.datagram(3))
        #expect(atServer.addresses[3]! == (Self.natIP, Self.serverIP))
        #expect(request.withUnsafeBytes { InternetChecksum.checksum($0) } == 0, "the request's ICMP checksum verifies")
        let reply = try #require(atClient.datagram(600))
        #expect(atClient.addresses[600]! == (Self.serverIP, Self.clientIP))
        #expect(reply.withUnsafeBytes { InternetChecksum.checksum($0) } == 0, "the reply's ICMP checksum verifies")
        #expect(reply[0] == 0 && UInt16(reply[4]) << 8 | UInt16(reply[5]) == 33 && Array(reply[8...]) == payload)
        #expect(policy.counters.fragmentsForwarded == 3 + 2 + 2 + 2 + 2)
        #expect(engine.buffered == 0)
    }
}
