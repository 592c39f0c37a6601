import Testing
import OffloadCore
@testable import OffloadEngine
import OffloadHost
import OffloadLink
import OffloadSim
import OffloadTCP
import OffloadWire

/// Mutated frames through the whole gateway: engine, slow path (partial and complete
/// processing), NAT, ICMP and fragment translation, ARP, the audit stage, and the two hosts
/// behind it. Most mutations have their
/// checksums put right afterwards, so that they pass the checks at the door and reach the
/// parsers and state behind them. Whatever arrives, nothing traps, every packet is accounted
/// for by a named path or drop reason, no buffer or count is left behind, the table keeps its
/// invariants, and the gateway still forwards an ordinary ping afterwards.
///
/// `HOSTILE_ROUNDS` (1,500 by default) and `HOSTILE_SEEDS` (4) run longer.
@Suite struct HostileFrameTests {
    @Test(arguments: [(audit: false, orderGuard: true, processing: SlowPath.Processing.partial),
                      (audit: true, orderGuard: true, processing: .partial),
                      (audit: false, orderGuard: false, processing: .partial),
                      (audit: false, orderGuard: true, processing: .complete)])
    func mutatedFramesFromBothSidesChangeNothingElse(audit: Bool, orderGuard: Bool,
                                                     processing: SlowPath.Processing) throws {
        let world = try GatewayWorld(seed: 11, audit: audit, orderGuard: orderGuard, processing: processing)
        try world.server.udp.bind(port: 9)
        try world.client.udp.bind(port: 40000)
        // Ordinary traffic first, so that the neighbours are known and the NAT has mappings
        // for the server's side to aim at.
        for n in 0..<3 {
            world.sim.schedule(at: Instant(nanoseconds: Int64(n) * 20_000_000)) {
                world.client.ping(GatewayWorld.serverIP, identifier: 5, sequence: UInt16(n), now: world.sim.clock.now,
                                  transmit: world.transmitFromClient)
                world.sendUDP(to: GatewayWorld.serverIP)
                world.sim.wake()
            }
        }
        world.run(seconds: 0.5)
        #expect(world.client.echoReplies.count == 3)
        let natted = world.atServer.filter { $0.count >= 34 && $0[12] == 0x08 && $0[13] == 0x00 }
        #expect(!natted.isEmpty)

        let fromClient = HostileFrames.fromInside(), fromServer = HostileFrames.fromOutside(answering: natted)
        var rng = SeededRandom(seed: 0x686f_7374)
        for round in 0..<(environmentSetting("HOSTILE_ROUNDS") ?? 1500) {
            for (frames, fromClientSide) in [(fromClient, true), (fromServer, false)] {
                var frame = frames[rng.below(frames.count)]
                HostileFrames.mutate(&frame, &rng)
                frame.withUnsafeBytes { bytes in
                    if fromClientSide { world.sendFromClient(bytes) } else { world.sendFromServer(bytes) }
                }
            }
            world.sim.wake()
            if round % 20 == 19 { world.run(seconds: 0.01) }
        }
        // Long enough for held packets to resolve or give up (three ARP requests a second
        // apart), and for the software to drain; the software's timers need time to pass.
        let end = world.sim.clock.now + .seconds(5)
        for tick in 1...100 { world.sim.schedule(at: end - .milliseconds(50 * tick)) {} }
        world.run(seconds: 4)

        let c = world.engine.counters
        // The mutations reach far: refused for many named reasons, deep ones among them, and
        // some still cross.
        let reasons = world.slowPath.dropped
        #expect(reasons.count >= 8, "\(reasons)")
        for deep in ["fragment-without-first", "icmp-without-mapping", "no-route", "malformed-arp"] {
            #expect(reasons[deep, default: 0] > 0, "\(deep): \(reasons)")
        }
        #expect(c.fastPath + c.reinsertedOut > 1000, "\(c)")
        #expect(world.engine.table.invariantViolation() == nil)
        world.expectAtRest("audit \(audit), order guard \(orderGuard), \(processing) processing")

        // The gateway still does its job, once both hosts have said again who they are: a
        // mutated ARP packet can teach it a wrong address for either, as it could any host
        // that follows RFC 826 (a gratuitous ARP puts it right).
        for (frame, fromClientSide) in [(HostileFrames.gratuitousARP(from: .local(0xc1), GatewayWorld.clientIP), true),
                                        (HostileFrames.gratuitousARP(from: .local(0x51), GatewayWorld.serverIP), false)] {
            frame.withUnsafeBytes { if fromClientSide { world.sendFromClient($0) } else { world.sendFromServer($0) } }
        }
        world.sim.wake()
        world.run(seconds: 0.1)
        let replies = world.client.echoReplies.count
        world.client.ping(GatewayWorld.serverIP, identifier: 6, sequence: 1, now: world.sim.clock.now,
                          transmit: world.transmitFromClient)
        world.sim.wake()
        world.run(seconds: 0.5)
        #expect(world.client.echoReplies.count == replies + 1)
        #expect(world.client.echoReplies.last.map { $0.identifier == 6 && $0.sequence == 1 } == true)
        world.expectAtRest("after the last ping")
    }

    /// Mutated copies of two connections' own segments, their checksums mostly put right,
    /// reach the engines' receive paths (offloaded, also as TSO super-segments with their
    /// offload metadata, and on a wire that loses, duplicates and reorders) or the hosts' TCP
    /// (not offloaded) in the middle of an echo. The transfer may break (a copy with other bytes at the right place is data TCP
    /// cannot tell from the real thing), and a changed copy of the handshake can end it before
    /// it is offloaded; but nothing traps, and once both applications abort, every message
    /// comes back to its sender exactly once, in order, and every connection, buffer and table
    /// entry is gone.
    @Test(arguments: [(offload: true, tso: false, impaired: false), (offload: false, tso: false, impaired: false),
                      (offload: true, tso: true, impaired: false), (offload: true, tso: false, impaired: true)])
    func mutatedSegmentsOnConnections(offload: Bool, tso: Bool, impaired: Bool) throws {
        var carried = 0, refused: UInt64 = 0, offloadedSeeds = 0
        let seeds = UInt64(environmentSetting("HOSTILE_SEEDS") ?? 4)
        for seed in 1...seeds {
            var tcp = TCPStack.Configuration()
            tcp.seed = seed
            tcp.tcp.maximumSegmentLifetime = .seconds(5)
            var engine = Engine<MemoryLink>.Configuration()
            engine.idleTimeouts = IdleTimeouts(tcp: .seconds(30))
            engine.tableCapacity = 64
            engine.expiryBudget = 1024
            let impairments = impaired ? Impairments(loss: 0.02, duplication: 0.01, reordering: 0.02) : .none
            let w = try TwoEndpoints(seed: seed, impairments: impairments, offload: offload, tso: tso, tcp: tcp,
                                     engine: engine, hostileCopies: 0.2)
            let (ta, tb) = (w.a.tcp, w.b.tcp)
            try tb.listen(port: 7)
            let client = try ta.connect(to: w.b.host.address, port: 7, now: w.sim.clock.now)
            var server: TCPSocket?
            var queued: [MessageID] = [], completed: [MessageID] = []
            var echoQueued: [MessageID] = [], echoCompleted: [MessageID] = []
            let message = [UInt8](repeating: 0x5a, count: 3000)
            var chunk = [UInt8](repeating: 0, count: 16_384)
            w.sim.addProcess("applications") {
                var worked = false
                if server == nil, let s = tb.accept(port: 7) { server = s; worked = true }
                if queued.count < 600, let c = ta.connection(client), c.canSend,
                   case .queued(let id) = ta.send(TxBuffer(copying: message), on: client) {
                    queued.append(id)
                    worked = true
                }
                ta.takeCompletions(of: client) { completed.append($0.id) }
                let n = chunk.withUnsafeMutableBytes { ta.read(client, into: $0) }
                if n > 0 { carried += n; worked = true }
                if let s = server {
                    let m = chunk.withUnsafeMutableBytes { tb.read(s, into: $0) }
                    if m > 0, case .queued(let id) = tb.send(TxBuffer(copying: chunk[0..<m]), on: s) {
                        echoQueued.append(id)
                        worked = true
                    }
                    tb.takeCompletions(of: s) { echoCompleted.append($0.id) }
                }
                return worked
            }
            // Bounded in steps too: two ends answering each other at one instant (an ACK loop)
            // would otherwise never let time pass.
            let echo = w.sim.run(until: w.sim.clock.now + .seconds(30), maxSteps: 200_000)
            #expect(echo == .deadline, "seed \(seed): the echo ran \(echo) at \(w.sim.clock.now)")
            // Both applications give up on the connection, and wait until all is back.
            ta.abort(client)
            if let server { tb.abort(server) }
            w.sim.run(until: w.sim.clock.now + .seconds(120)) { !(ta.isQuiescent && tb.isQuiescent) }
            // Then the engines' entries idle out (B9); stray copies may still make new ones for
            // a while, so the engines are woken every 10 s.
            for t in 1...20 { _ = w.sim.schedule(after: .seconds(Int64(t * 10))) {} }
            w.sim.run(until: w.sim.clock.now + .seconds(200)) { w.a.engine.table.count + w.b.engine.table.count > 0 }

            let prefix = "seed \(seed)"
            #expect(completed == queued, "\(prefix): \(completed.count) of \(queued.count) messages back")
            #expect(echoCompleted == echoQueued, "\(prefix): \(echoCompleted.count) of \(echoQueued.count) echoes back")
            #expect(ta.isQuiescent && tb.isQuiescent, "\(prefix)")
            for e in [w.a, w.b] {
                #expect(e.engine.tcp.count == 0 && e.engine.buffered == 0 && e.engine.table.count == 0, "\(prefix)")
                let c = e.engine.counters
                #expect(c.received == c.fastPath + c.reinsertedOut + c.consumedBySoftware + c.deliveredToTCP + c.totalDrops,
                        "\(prefix): \(c.rows.filter { $0.1 > 0 })")
                refused += e.engine.tcp.counters.segmentsDropped + c.totalDrops
            }
            // A changed copy of the handshake can end it (a RST the ACK number makes
            // acceptable): then the connection never reaches an engine.
            if ta.counters.connectionsOffloaded > 0 && tb.counters.connectionsOffloaded > 0 { offloadedSeeds += 1 }
        }
        if offload {
            #expect(offloadedSeeds * 10 >= seeds * 9, "both ends offloaded in \(offloadedSeeds) of \(seeds) seeds")
        } else {
            #expect(offloadedSeeds == 0)
        }
        // The echo ran (loss as well as the copies break it sooner on the impaired wire).
        #expect(carried > (impaired ? 50_000 : 500_000) * Int(seeds), "\(carried) bytes echoed")
        #expect(refused > 0, "mutated segments were refused")
    }
}

/// Well-formed frames of every kind the gateway handles, to be mutated.
enum HostileFrames {
    static let client = GatewayWorld.clientIP, server = GatewayWorld.serverIP

    /// From the client, to the gateway's inside port: UDP, TCP with options and each flag,
    /// ICMP echo, an ICMP error quoting a datagram, both kinds of fragment, IP options, and ARP.
    static func fromInside() -> [[UInt8]] {
        let mac = MACAddress.local(0xc1), gateway = GatewayWorld.insideMAC
        var frames: [[UInt8]] = []
        frames.append(ipv4(from: mac, to: gateway, client, server, protocol: 17,
                           l4: udp(40000, 9, payload: [1, 2, 3, 4, 5, 6, 7, 8])))
        for flags: UInt8 in [0x02, 0x10, 0x18, 0x11, 0x04, 0x12] {
            frames.append(ipv4(from: mac, to: gateway, client, server, protocol: 6,
                               l4: tcp(40001, 80, flags: flags, payload: flags == 0x18 ? [9, 9, 9] : [])))
        }
        frames.append(ipv4(from: mac, to: gateway, client, server, protocol: 1, l4: echoRequest()))
        // An ICMP port unreachable about a datagram the server sent the client.
        let quoted = Array(ipv4(from: mac, to: gateway, server, client, protocol: 17, l4: udp(9, 40000, payload: []))[14...])
        frames.append(ipv4(from: mac, to: gateway, client, server, protocol: 1, l4: icmpError(quoting: quoted)))
        // The first and a later fragment of a datagram.
        frames.append(ipv4(from: mac, to: gateway, client, server, protocol: 17,
                           l4: udp(40002, 9, payload: Array(repeating: 7, count: 16)), fragment: 0x2000))
        frames.append(ipv4(from: mac, to: gateway, client, server, protocol: 17,
                           l4: Array(repeating: 7, count: 16), fragment: 0x0003))
        // A header with an option (a no-operation and an end of list).
        frames.append(ipv4(from: mac, to: gateway, client, server, protocol: 17, l4: udp(40003, 9, payload: [1]),
                           options: [1, 1, 1, 0]))
        frames.append(arpRequest(from: mac, client, for: GatewayWorld.insideIP))
        return frames
    }

    /// From the server, to the NAT's address: the answer to each frame the server got through
    /// the NAT (so that it meets a mapping), an ICMP error quoting one, and ARP.
    static func fromOutside(answering seen: [[UInt8]]) -> [[UInt8]] {
        let mac = MACAddress.local(0x51), gateway = GatewayWorld.outsideMAC
        var frames: [[UInt8]] = []
        for frame in seen {
            var reply = frame
            // Ethernet addresses, IP addresses and (for TCP and UDP) ports swapped.
            for i in 0..<6 { reply.swapAt(i, 6 + i) }
            for i in 0..<4 { reply.swapAt(26 + i, 30 + i) }
            let l4 = 14 + Int(reply[14] & 0x0f) * 4
            if reply[23] == 6 || reply[23] == 17, reply.count >= l4 + 4 {
                reply.swapAt(l4, l4 + 2); reply.swapAt(l4 + 1, l4 + 3)
            }
            if reply[23] == 1, reply.count > l4 { reply[l4] = 0 }  // echo request to echo reply
            fixChecksums(&reply)
            frames.append(reply)
            let quote = Array(frame[14..<min(frame.count, l4 + 8)])
            frames.append(ipv4(from: mac, to: gateway, server, GatewayWorld.outsideIP, protocol: 1,
                               l4: icmpError(quoting: quote)))
        }
        frames.append(arpRequest(from: mac, server, for: GatewayWorld.outsideIP))
        return frames
    }

    /// One to four bytes changed, most in the first 64 where the headers are; sometimes the
    /// frame cut short or grown; then, three times in four, the checksums put right.
    static func mutate(_ frame: inout [UInt8], _ rng: inout SeededRandom) {
        for _ in 0...rng.below(4) {
            let i = rng.below(4) == 0 ? rng.below(frame.count) : rng.below(min(frame.count, 64))
            frame[i] = UInt8(truncatingIfNeeded: rng.next())
        }
        switch rng.below(8) {
        case 0: frame = Array(frame.prefix(rng.below(frame.count + 1)))
        case 1: frame += (0..<rng.below(64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        default: break
        }
        if rng.below(4) != 0 { fixChecksums(&frame) }
    }

    /// Recomputes the IPv4 header checksum, and the TCP, UDP or ICMP one over what the total
    /// length and the frame both hold, wherever the header allows.
    static func fixChecksums(_ b: inout [UInt8]) {
        guard b.count >= 34, b[12] == 0x08, b[13] == 0x00 else { return }
        let ihl = Int(b[14] & 0x0f) * 4
        guard ihl >= 20, b.count >= 14 + ihl else { return }
        store(0, at: 24, in: &b)
        store(b.withUnsafeBytes { InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: $0[14..<14 + ihl])) },
              at: 24, in: &b)
        let l4 = 14 + ihl, end = min(b.count, 14 + (Int(b[16]) << 8 | Int(b[17])))
        guard end > l4, (Int(b[20]) << 8 | Int(b[21])) & 0x1fff == 0 else { return }
        let at: Int
        switch b[23] {
        case 6: at = l4 + 16
        case 17: at = l4 + 6
        case 1: at = l4 + 2
        default: return
        }
        guard at + 2 <= end else { return }
        store(0, at: at, in: &b)
        var sum = InternetChecksum()
        if b[23] != 1 {
            b.withUnsafeBytes { sum.add(UnsafeRawBufferPointer(rebasing: $0[26..<34])) }
            sum.add(UInt16(b[23]))
            sum.add(UInt16(end - l4))
        }
        b.withUnsafeBytes { sum.add(UnsafeRawBufferPointer(rebasing: $0[l4..<end])) }
        store(sum.value, at: at, in: &b)
    }

    private static func store(_ value: UInt16, at i: Int, in b: inout [UInt8]) {
        b[i] = UInt8(value >> 8)
        b[i + 1] = UInt8(value & 0xff)
    }

    static func ipv4(from source: MACAddress, to destination: MACAddress, _ from: IPv4Address, _ to: IPv4Address,
                     protocol proto: UInt8, l4: [UInt8], fragment: UInt16 = 0, options: [UInt8] = []) -> [UInt8] {
        let total = 20 + options.count + l4.count
        var b = ethernet(from: source, to: destination, type: .ipv4)
        b += [0x45 + UInt8(options.count / 4), 0, UInt8(total >> 8), UInt8(total & 0xff), 0x12, 0x34,
              UInt8(fragment >> 8), UInt8(fragment & 0xff), 64, proto, 0, 0]
        b += bytes(from.rawValue) + bytes(to.rawValue) + options + l4
        fixChecksums(&b)
        return b
    }

    static func udp(_ source: UInt16, _ destination: UInt16, payload: [UInt8]) -> [UInt8] {
        let length = 8 + payload.count
        return bytes(source) + bytes(destination) + bytes(UInt16(length)) + [0, 0] + payload
    }

    /// MSS, window scale, SACK permitted and timestamps, as Linux sends them on a SYN.
    static func tcp(_ source: UInt16, _ destination: UInt16, flags: UInt8, payload: [UInt8]) -> [UInt8] {
        let header = TCPRepr(sourcePort: source, destinationPort: destination, sequenceNumber: 1000,
                             acknowledgmentNumber: flags & 0x10 != 0 ? 2000 : 0, flags: TCPFlags(rawValue: UInt16(flags)),
                             windowSize: 64240, maxSegmentSize: 1460, windowScale: 7, sackPermitted: true,
                             timestamp: TCPTimestamp(value: 1, echoReply: 0), payloadLength: payload.count)
        return emitted(header.headerLength) { header.emitHeader(into: $0) } + payload
    }

    static func echoRequest() -> [UInt8] { [8, 0, 0, 0, 0, 7, 0, 1] + Array(repeating: 0x61, count: 16) }

    static func icmpError(quoting packet: [UInt8]) -> [UInt8] { [3, 3, 0, 0, 0, 0, 0, 0] + packet }

    static func arpRequest(from mac: MACAddress, _ sender: IPv4Address, for target: IPv4Address) -> [UInt8] {
        arp(ARPRepr(operation: .request, senderHardwareAddress: mac, senderProtocolAddress: sender,
                    targetHardwareAddress: .zero, targetProtocolAddress: target))
    }

    /// An ARP reply to everyone announcing `sender` at `mac`.
    static func gratuitousARP(from mac: MACAddress, _ sender: IPv4Address) -> [UInt8] {
        arp(ARPRepr(operation: .reply, senderHardwareAddress: mac, senderProtocolAddress: sender,
                    targetHardwareAddress: .broadcast, targetProtocolAddress: sender))
    }

    static func arp(_ packet: ARPRepr) -> [UInt8] {
        ethernet(from: packet.senderHardwareAddress, to: .broadcast, type: .arp)
            + emitted(packet.bufferLength) { packet.emit(into: $0) }
    }

    static func ethernet(from source: MACAddress, to destination: MACAddress, type: EtherType) -> [UInt8] {
        let header = EthernetRepr(destination: destination, source: source, etherType: type)
        return emitted(14) { header.emit(into: $0) }
    }

    /// `count` bytes written by `emit`.
    static func emitted(_ count: Int, _ emit: (UnsafeMutableRawBufferPointer) -> Void) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: count)
        b.withUnsafeMutableBytes(emit)
        return b
    }

    static func bytes(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
    static func bytes(_ v: UInt32) -> [UInt8] { bytes(UInt16(v >> 16)) + bytes(UInt16(v & 0xffff)) }
}

extension SeededRandom {
    /// A number in 0..<n.
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}
