import Testing
import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink
import OffloadSim
import OffloadWire

/// ICMP through the NAT (RFC 5508): echoes map by identifier, and errors are translated
/// with the packet they quote, both ways. Two inside hosts (10.1.0.5 and .6) behind port 0,
/// a server (10.2.0.2) on the outside port 1, the NAT's address 10.2.0.1.
@Suite struct GatewayICMPTests {
    typealias Frames = GatewayNATSimulationTests
    // Not 10.1.0.2: its address words sum as the NAT's do, which would hide a checksum left unchanged.
    static let hosts = [IPv4Address(10, 1, 0, 5), IPv4Address(10, 1, 0, 6)]
    static let serverIP = IPv4Address(10, 2, 0, 2), natIP = IPv4Address(10, 2, 0, 1)

    /// An Ethernet + IPv4 + ICMP frame: `rest` is the header's second word, `data` what follows.
    static func icmp(from src: IPv4Address, to dst: IPv4Address, toMAC: MACAddress, fromMAC: MACAddress,
                     type: UInt8, code: UInt8 = 0, rest: UInt32 = 0, data: [UInt8]) -> [UInt8] {
        var message: [UInt8] = [type, code, 0, 0, UInt8(rest >> 24), UInt8(rest >> 16 & 0xff), UInt8(rest >> 8 & 0xff),
                                UInt8(rest & 0xff)] + data
        let sum = message.withUnsafeBytes { InternetChecksum.checksum($0) }
        message[2] = UInt8(sum >> 8)
        message[3] = UInt8(sum & 0xff)
        var frame = [UInt8](repeating: 0, count: 34)
        frame.withUnsafeMutableBytes { raw in
            EthernetRepr(destination: toMAC, source: fromMAC, etherType: .ipv4).emit(into: raw)
            IPv4Repr(source: src, destination: dst, protocol: .icmp, payloadLength: message.count)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
        }
        return frame + message
    }

    /// What an ICMP message that arrived carries, checked: every checksum verifies.
    struct Arrived {
        var source: IPv4Address, destination: IPv4Address
        var type: UInt8, rest: UInt32
        /// The quoted packet of an error: its addresses, ports and whether its UDP checksum verifies.
        var quoted: (source: IPv4Address, destination: IPv4Address, sourcePort: UInt16, destinationPort: UInt16,
                     udpChecksumVerifies: Bool)?
    }

    static func read(_ frame: UnsafeRawBufferPointer) -> Arrived? {
        guard let ip = try? IPv4Packet(checking: try! EthernetFrame(checking: frame).payload), ip.protocol == .icmp else {
            return nil
        }
        #expect(ip.verifyChecksum)
        let icmp = try! ICMPv4Packet(checking: ip.payload)
        #expect(icmp.verifyChecksum, "the ICMP checksum verifies")
        var arrived = Arrived(source: ip.source, destination: ip.destination, type: icmp.type,
                              rest: UInt32(icmp.identifier) << 16 | UInt32(icmp.sequenceNumber))
        if icmp.isError, let quote = try? IPv4Packet(checking: icmp.data) {
            #expect(quote.verifyChecksum, "the quoted IP header's checksum verifies")
            let udp = try! UDPPacket(checking: quote.payload)
            arrived.quoted = (quote.source, quote.destination, udp.sourcePort, udp.destinationPort,
                              udp.verifyChecksum(source: quote.source, destination: quote.destination))
        }
        return arrived
    }

    @Test func echoesMapByIdentifierAndErrorsComeBackTranslated() throws {
        let sim = Simulation(seed: 11)
        var configuration = Engine<MemoryLink>.Configuration()
        configuration.announcesTranslations = true
        let (engine, wires) = Engine.onMemoryWires(configuration: configuration, portCount: 2, clock: sim.clock)
        var client = wires[0], server = wires[1]
        let policy = try GatewayNATSimulationTests.policy(clock: sim.clock)
        for host in Self.hosts { policy.addNeighbor(port: 0, address: host, hardwareAddress: Frames.clientMAC) }
        policy.addNeighbor(port: 1, address: Self.serverIP, hardwareAddress: Frames.serverMAC)
        let slowPath = SlowPath(exceptions: engine.exceptions, reinsertion: engine.reinsertion, processing: .partial,
                                policy: policy)
        sim.addProcess("engine") { engine.poll(now: sim.clock.now) }
        sim.addProcess("software", weight: 0.3) { slowPath.step() > 0 }

        var atServer: [Arrived] = [], atClient: [Arrived] = []
        var mappedPort: UInt16?
        let pool = BufferPool(count: 32, bufferSize: 2048, headroom: 0)
        // The server answers echoes, says port unreachable to UDP for port 9, and answers
        // UDP for port 7 with a datagram of its own to the port it came from.
        sim.addProcess("server") {
            var out: [[UInt8]] = []
            let n = (try? server.receive(into: pool, max: 8) { b in
                let ip = try! IPv4Packet(checking: try! EthernetFrame(checking: b.bytes).payload)
                if let arrived = Self.read(b.bytes) {
                    atServer.append(arrived)
                    if arrived.type == ICMPv4Packet.MessageType.echoRequest {
                        out.append(Self.icmp(from: Self.serverIP, to: ip.source, toMAC: Frames.outside,
                                             fromMAC: Frames.serverMAC, type: 0, rest: arrived.rest, data: [1, 2, 3, 4]))
                    }
                    return
                }
                let udp = try! UDPPacket(checking: ip.payload)
                if udp.destinationPort == 9 {
                    out.append(Self.icmp(from: Self.serverIP, to: ip.source, toMAC: Frames.outside, fromMAC: Frames.serverMAC,
                                         type: 3, code: 3, data: Array(b.bytes[14...])))
                } else {
                    mappedPort = udp.sourcePort
                    out.append(Frames.udp(from: Self.serverIP, 7, to: ip.source, udp.sourcePort, toMAC: Frames.outside,
                                          fromMAC: Frames.serverMAC, payload: [0xcc]))
                }
            }) ?? 0
            for frame in out { try! frame.withUnsafeBytes { try server.transmit($0) } }
            return n > 0
        }
        // The inside hosts: their socket for the server's datagram is closed, so they say port
        // unreachable about it.
        sim.addProcess("client") {
            var out: [[UInt8]] = []
            let n = (try? client.receive(into: pool, max: 8) { b in
                if let arrived = Self.read(b.bytes) { return atClient.append(arrived) }
                let ip = try! IPv4Packet(checking: try! EthernetFrame(checking: b.bytes).payload)
                out.append(Self.icmp(from: ip.destination, to: ip.source, toMAC: Frames.inside, fromMAC: Frames.clientMAC,
                                     type: 3, code: 3, data: Array(b.bytes[14...])))
            }) ?? 0
            for frame in out { try! frame.withUnsafeBytes { try client.transmit($0) } }
            return n > 0
        }
        func send(_ frame: [UInt8], at microseconds: Int64) {
            sim.schedule(at: Instant(nanoseconds: microseconds * 1000)) { try! frame.withUnsafeBytes { try client.transmit($0) } }
        }
        // Both hosts ping the server with the same identifier, twice.
        for (i, host) in Self.hosts.enumerated() {
            for seq in 0..<2 {
                send(Self.icmp(from: host, to: Self.serverIP, toMAC: Frames.inside, fromMAC: Frames.clientMAC, type: 8,
                               rest: 7 << 16 | UInt32(seq), data: [UInt8(i)]), at: Int64(100 * seq + i))
            }
        }
        // The first host's datagrams: to a closed port, and to one that answers.
        send(Frames.udp(from: Self.hosts[0], 40000, to: Self.serverIP, 9, toMAC: Frames.inside, fromMAC: Frames.clientMAC,
                        payload: [1, 2, 3]), at: 500)
        send(Frames.udp(from: Self.hosts[0], 40001, to: Self.serverIP, 7, toMAC: Frames.inside, fromMAC: Frames.clientMAC,
                        payload: [4, 5, 6]), at: 600)
        sim.run(maxSteps: 500_000)

        // Echoes: the server saw the NAT's address with two different identifiers, and each
        // host got both of its replies, with its own identifier back.
        let requests = atServer.filter { $0.type == ICMPv4Packet.MessageType.echoRequest }
        #expect(requests.count == 4 && requests.allSatisfy { $0.source == Self.natIP })
        #expect(Set(requests.map { $0.rest >> 16 }).count == 2, "one identifier per inside host")
        let replies = atClient.filter { $0.type == ICMPv4Packet.MessageType.echoReply }
        #expect(replies.count == 4)
        for host in Self.hosts {
            #expect(replies.filter { $0.destination == host }.map(\.rest).sorted() == [7 << 16, 7 << 16 | 1])
        }
        // The server's port unreachable reached the first host, quoting what that host sent.
        let inward = atClient.filter { $0.type == 3 }
        #expect(inward.count == 1)
        let quotedIn = try #require(inward.first?.quoted)
        #expect(inward[0].source == Self.serverIP && inward[0].destination == Self.hosts[0])
        #expect(quotedIn.source == Self.hosts[0] && quotedIn.sourcePort == 40000 && quotedIn.destination == Self.serverIP)
        #expect(quotedIn.destinationPort == 9 && quotedIn.udpChecksumVerifies)
        // The host's port unreachable reached the server, quoting what the server sent.
        let outward = atServer.filter { $0.type == 3 }
        #expect(outward.count == 1)
        let quotedOut = try #require(outward.first?.quoted)
        #expect(outward[0].source == Self.natIP && outward[0].destination == Self.serverIP)
        #expect(quotedOut.source == Self.serverIP && quotedOut.destination == Self.natIP && quotedOut.sourcePort == 7)
        #expect(quotedOut.destinationPort == mappedPort && quotedOut.udpChecksumVerifies)
        #expect(engine.buffered == 0 && engine.counters.totalDrops == 0)
    }
}

/// What the gateway refuses to translate, answered by the policy directly: each is a drop
/// with its reason, never a frame with wrong contents.
@Suite struct GatewayTranslationRefusalTests {
    typealias Frames = GatewayNATSimulationTests
    static let clientIP = IPv4Address(10, 1, 0, 5), serverIP = IPv4Address(10, 2, 0, 2)

    static func policy() throws -> GatewayPolicy {
        let policy = try GatewayNATSimulationTests.policy(clock: VirtualClock())
        policy.addNeighbor(port: 0, address: clientIP, hardwareAddress: Frames.clientMAC)
        policy.addNeighbor(port: 1, address: serverIP, hardwareAddress: Frames.serverMAC)
        return policy
    }

    static func answer(_ policy: GatewayPolicy, _ frame: [UInt8], port: UInt16) -> LocalAnswer {
        var frame = frame
        return frame.withUnsafeMutableBytes { policy.answer($0, ingressPort: port, send: { _, _ in }) }
    }

    @Test func aCorruptedEchoIsDroppedNotRepaired() throws {
        let policy = try Self.policy()
        var echo = GatewayICMPTests.icmp(from: Self.clientIP, to: Self.serverIP, toMAC: Frames.inside,
                                         fromMAC: Frames.clientMAC, type: 8, rest: 5 << 16, data: [1, 2, 3, 4])
        #expect(Self.answer(policy, echo, port: 0) == .send(port: 1), "intact, it goes out")
        echo[echo.count - 1] ^= 0x40
        #expect(Self.answer(policy, echo, port: 0) == .drop("bad-icmp-checksum"))
    }

    /// An error whose quote is a later fragment names no ports: it must not be taken for a
    /// mapping's (its data could look like one).
    @Test func anErrorQuotingALaterFragmentIsDropped() throws {
        let policy = try Self.policy()
        // A mapping at 40000 exists.
        let out = Frames.udp(from: Self.clientIP, 40000, to: Self.serverIP, 7, toMAC: Frames.inside,
                             fromMAC: Frames.clientMAC, payload: [0])
        #expect(out.withUnsafeBytes { FlowKey(frame: $0, port: 0) }.map { policy.decide($0, send: { _, _ in }) } != nil)
        var quote = Array(Frames.udp(from: IPv4Address(10, 2, 0, 1), 40000, to: Self.serverIP, 7, toMAC: Frames.outside,
                                     fromMAC: Frames.outside, payload: [0])[14...])
        let fine = GatewayICMPTests.icmp(from: Self.serverIP, to: IPv4Address(10, 2, 0, 1), toMAC: Frames.outside,
                                         fromMAC: Frames.serverMAC, type: 3, code: 3, data: quote)
        #expect(Self.answer(policy, fine, port: 1) == .send(port: 0), "the whole quote is translated and sent on")
        // The same bytes, marked as a fragment at offset 8: the "ports" are data now.
        quote[6] = 0x00
        quote[7] = 0x01
        quote[10] = 0
        quote[11] = 0
        let sum = quote[0..<20].withUnsafeBytes { InternetChecksum.checksum($0) }
        quote[10] = UInt8(sum >> 8)
        quote[11] = UInt8(sum & 0xff)
        let later = GatewayICMPTests.icmp(from: Self.serverIP, to: IPv4Address(10, 2, 0, 1), toMAC: Frames.outside,
                                          fromMAC: Frames.serverMAC, type: 3, code: 3, data: quote)
        #expect(Self.answer(policy, later, port: 1) == .drop("icmp-without-mapping"))
    }

    /// RFC 1858: a TCP first fragment too short for the checksum, and a fragment at offset 8
    /// that would overlap the first one's header, are dropped.
    @Test func tinyTCPFragmentsAreDropped() throws {
        let policy = try Self.policy()
        let segment = [UInt8](repeating: 0x11, count: 40)
        let fragments = GatewayFragmentTests.fragments(of: segment, protocol: .tcp, from: Self.clientIP, to: Self.serverIP,
                                                       id: 9, size: 8, toMAC: Frames.inside, fromMAC: Frames.clientMAC)
        #expect(Self.answer(policy, fragments[0], port: 0) == .drop("tiny-fragment"))
        #expect(Self.answer(policy, fragments[1], port: 0) == .drop("tiny-fragment"))
        let udp = GatewayFragmentTests.fragments(of: segment, protocol: .udp, from: Self.clientIP, to: Self.serverIP,
                                                 id: 10, size: 8, toMAC: Frames.inside, fromMAC: Frames.clientMAC)
        #expect(Self.answer(policy, udp[0], port: 0) == .send(port: 1), "8 bytes hold UDP's whole header")
        #expect(Self.answer(policy, udp[1], port: 0) == .send(port: 1))
    }
}

/// Random damage to the frames the translations read (ICMP errors with quotes, echoes,
/// fragments): every answer is a drop with a reason or a frame whose IPv4 header checksum
/// verifies (and, whole ICMP messages, whose ICMP checksum does). Never a trap.
@Suite struct GatewayTranslationFuzzTests {
    typealias Frames = GatewayNATSimulationTests
    typealias Refusals = GatewayTranslationRefusalTests

    static func seeds() -> [([UInt8], UInt16)] {
        let client = Refusals.clientIP, server = Refusals.serverIP, nat = IPv4Address(10, 2, 0, 1)
        let udp = Frames.udp(from: nat, 40000, to: server, 7, toMAC: Frames.outside, fromMAC: Frames.outside,
                             payload: [1, 2, 3])
        let error = GatewayICMPTests.icmp(from: server, to: nat, toMAC: Frames.outside, fromMAC: Frames.serverMAC,
                                          type: 3, code: 3, data: Array(udp[14...]))
        let echo = GatewayICMPTests.icmp(from: client, to: server, toMAC: Frames.inside, fromMAC: Frames.clientMAC,
                                         type: 8, rest: 7 << 16, data: [9, 9, 9, 9])
        let fragments = GatewayFragmentTests.fragments(from: client, 40000, to: server, 7, payload: Array(repeating: 5, count: 40),
                                                       id: 3, size: 24, toMAC: Frames.inside, fromMAC: Frames.clientMAC)
        return [(error, 1), (echo, 0)] + fragments.map { ($0, 0) }
    }

    @Test func damagedFramesAreDroppedOrLeaveWithValidChecksums() throws {
        let policy = try Refusals.policy()
        // A mapping for the quoted packet's port, so that errors get as far as translation.
        let out = Frames.udp(from: Refusals.clientIP, 40000, to: Refusals.serverIP, 7, toMAC: Frames.inside,
                             fromMAC: Frames.clientMAC, payload: [0])
        _ = out.withUnsafeBytes { FlowKey(frame: $0, port: 0) }.map { policy.decide($0, send: { _, _ in }) }
        var random = SeededRandom(seed: 0xf022)
        var sent = 0, dropped = 0
        for round in 0..<20_000 {
            let seeds = Self.seeds()
            var (frame, port) = seeds[round % seeds.count]
            // A few damaged bytes past the Ethernet header, sometimes a shorter frame.
            for _ in 0..<(1 + Int(random.next() % 3)) {
                frame[14 + Int(random.next() % UInt64(frame.count - 14))] = UInt8(truncatingIfNeeded: random.next())
            }
            if random.chance(0.2) { frame.removeLast(Int(random.next() % UInt64(frame.count - 14))) }
            let answer = frame.withUnsafeMutableBytes { policy.answer($0, ingressPort: port, send: { _, _ in }) }
            guard case .send = answer else {
                dropped += 1
                continue
            }
            sent += 1
            // What leaves, as rewritten in place.
            let (header, message) = frame.withUnsafeBytes { raw -> (Bool, Bool) in
                guard let ip = try? IPv4Packet(checking: try EthernetFrame(checking: raw).payload) else { return (false, false) }
                let whole = ip.protocol != .icmp || ip.isFragment || InternetChecksum.checksum(ip.payload) == 0
                return (ip.verifyChecksum, whole)
            }
            #expect(header, "round \(round): the IPv4 header checksum verifies")
            #expect(message, "round \(round): a whole ICMP message's checksum verifies")
        }
        // Damage mostly breaks a checksum, so most are dropped; some damage lands where no
        // checksum looks (a fragment's later bytes) and the frame goes on.
        #expect(sent > 0 && dropped > sent)
    }
}
