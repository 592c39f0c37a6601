import Testing
import OffloadCore
@testable import OffloadEngine

/// The entry's incremental rewrite against the slow way: write the new fields, recompute
/// every checksum in full.
@Suite struct ConnectionTableRewriteTests {
    struct Packet {
        var proto: UInt8
        var source: IPv4Address
        var destination: IPv4Address
        var sourcePort: UInt16
        var destinationPort: UInt16
        var ttl: UInt8
        var optionWords = 0
        var payload: [UInt8] = []
        var udpChecksum = true

        var key: FlowKey {
            FlowKey(ingressPort: 0, protocol: proto, source: source, destination: destination,
                    sourcePort: sourcePort, destinationPort: destinationPort)
        }
        var ipHeaderLength: Int { 20 + 4 * optionWords }
        var l4HeaderLength: Int { proto == 6 ? 20 : proto == 17 ? 8 : 4 }

        /// An Ethernet frame with every checksum correct.
        func frame() -> [UInt8] {
            let l4Length = l4HeaderLength + payload.count
            var f = [UInt8](repeating: 0, count: 14 + ipHeaderLength + l4Length)
            for i in 0..<12 { f[i] = UInt8(0xa0 + i) }
            f[12] = 0x08; f[13] = 0x00
            let ip = 14
            f[ip] = 0x40 | UInt8(ipHeaderLength / 4)
            put16(&f, ip + 2, UInt16(ipHeaderLength + l4Length))
            put16(&f, ip + 4, 0x1234)
            put16(&f, ip + 6, 0x4000)
            f[ip + 8] = ttl
            f[ip + 9] = proto
            put32(&f, ip + 12, source.rawValue)
            put32(&f, ip + 16, destination.rawValue)
            for i in 0..<(4 * optionWords) { f[ip + 20 + i] = i == 0 ? 1 : 0 }  // NOPs, then end
            let l4 = ip + ipHeaderLength
            switch proto {
            case 6:
                put16(&f, l4, sourcePort); put16(&f, l4 + 2, destinationPort)
                put32(&f, l4 + 4, 0xdead_beef); put32(&f, l4 + 8, 0x0102_0304)
                f[l4 + 12] = 0x50; f[l4 + 13] = 0x18; put16(&f, l4 + 14, 64240)
            case 17:
                put16(&f, l4, sourcePort); put16(&f, l4 + 2, destinationPort); put16(&f, l4 + 4, UInt16(l4Length))
            default:
                f[l4] = 8  // ICMP echo request: its checksum covers no addresses
            }
            for (i, b) in payload.enumerated() { f[l4 + l4HeaderLength + i] = b }
            Self.recomputeChecksums(&f, udpChecksum: udpChecksum)
            return f
        }

        /// Full recomputation of the IPv4 header checksum and the TCP/UDP/ICMP checksum.
        static func recomputeChecksums(_ f: inout [UInt8], udpChecksum: Bool) {
            let ip = 14
            let ihl = Int(f[ip] & 0x0f) * 4
            let proto = f[ip + 9]
            put16(&f, ip + 10, 0)
            put16(&f, ip + 10, f.withUnsafeBytes { InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: $0[ip..<(ip + ihl)])) })
            let l4 = ip + ihl
            let at = proto == 6 ? 16 : proto == 17 ? 6 : 2
            if proto == 17 && !udpChecksum { put16(&f, l4 + 6, 0); return }
            put16(&f, l4 + at, 0)
            var sum = InternetChecksum()
            if proto == 6 || proto == 17 {
                sum.add(get32(f, ip + 12)); sum.add(get32(f, ip + 16))
                sum.add(UInt16(proto)); sum.add(UInt16(f.count - l4))
            }
            f.withUnsafeBytes { sum.add(UnsafeRawBufferPointer(rebasing: $0[l4...])) }
            var c = sum.value
            if proto == 17 && c == 0 { c = 0xffff }
            put16(&f, l4 + at, c)
        }
    }

    static func put16(_ f: inout [UInt8], _ at: Int, _ v: UInt16) { f[at] = UInt8(v >> 8); f[at + 1] = UInt8(v & 0xff) }
    static func put32(_ f: inout [UInt8], _ at: Int, _ v: UInt32) {
        put16(&f, at, UInt16(v >> 16)); put16(&f, at + 2, UInt16(v & 0xffff))
    }
    static func get16(_ f: [UInt8], _ at: Int) -> UInt16 { UInt16(f[at]) << 8 | UInt16(f[at + 1]) }
    static func get32(_ f: [UInt8], _ at: Int) -> UInt32 { UInt32(get16(f, at)) << 16 | UInt32(get16(f, at + 2)) }

    /// The slow way: every field written, every checksum recomputed (a UDP checksum of 0 stays 0).
    static func reference(_ frame: [UInt8], packet: Packet, forward f: FlowAction.Forward) -> [UInt8] {
        var out = frame
        for (i, b) in f.destinationMAC.bytes.enumerated() { out[i] = b }
        for (i, b) in f.sourceMAC.bytes.enumerated() { out[6 + i] = b }
        out[14 + 8] -= 1
        put32(&out, 14 + 12, (f.translatedSource ?? packet.source).rawValue)
        put32(&out, 14 + 16, (f.translatedDestination ?? packet.destination).rawValue)
        let l4 = 14 + packet.ipHeaderLength
        if packet.proto == 6 || packet.proto == 17 {
            put16(&out, l4, f.translatedSourcePort ?? packet.sourcePort)
            put16(&out, l4 + 2, f.translatedDestinationPort ?? packet.destinationPort)
        }
        Packet.recomputeChecksums(&out, udpChecksum: packet.proto != 17 || get16(frame, l4 + 6) != 0)
        return out
    }

    /// Runs the entry's rewrite on a copy of `frame`, through a table and through a bare entry.
    static func rewrite(_ frame: [UInt8], key: FlowKey, action: FlowAction) -> (FlowRewriteOutcome, [UInt8]) {
        var table = ConnectionTable(capacity: 4)
        let h = table.insert(key, action: action, now: .zero).handle!
        var out = frame
        let outcome = out.withUnsafeMutableBytes { table.applyRewrite(h, to: $0) }
        var bare = frame
        let bareOutcome = bare.withUnsafeMutableBytes { FlowEntry(key: key, action: action).applyRewrite(to: $0) }
        #expect(bare == out && bareOutcome == outcome, "a bare entry rewrites as the table's does")
        return (outcome, out)
    }

    static func verifies(_ f: [UInt8]) -> Bool {
        var copy = f
        let udpNone = f[14 + 9] == 17 && get16(f, 14 + Int(f[14] & 0x0f) * 4 + 6) == 0
        Packet.recomputeChecksums(&copy, udpChecksum: !udpNone)
        return copy == f
    }

    static func randomPacket(_ rng: inout SeededRandom) -> Packet {
        let proto: UInt8 = [6, 17, 17, 1][Int(rng.next() % 4)]
        let ports = proto != 1
        return Packet(proto: proto,
                      source: IPv4Address(rawValue: UInt32(truncatingIfNeeded: rng.next())),
                      destination: IPv4Address(rawValue: UInt32(truncatingIfNeeded: rng.next())),
                      sourcePort: ports ? UInt16(truncatingIfNeeded: rng.next()) : 0,
                      destinationPort: ports ? UInt16(truncatingIfNeeded: rng.next()) : 0,
                      ttl: UInt8(2 + rng.next() % 254), optionWords: Int(rng.next() % 3),
                      payload: (0..<Int(rng.next() % 48)).map { _ in UInt8(truncatingIfNeeded: rng.next()) },
                      udpChecksum: rng.chance(0.7))
    }

    static func randomForward(for p: Packet, _ rng: inout SeededRandom) -> FlowAction.Forward {
        let ports = p.proto != 1
        // Sometimes extreme values: 0, 0xffff, and "translated" to the same value.
        func port(_ old: UInt16) -> UInt16 { [0, 0xffff, old, UInt16(truncatingIfNeeded: rng.next())][Int(rng.next() % 4)] }
        func address(_ old: IPv4Address) -> IPv4Address {
            [IPv4Address(rawValue: 0), IPv4Address(rawValue: 0xffff_ffff), old,
             IPv4Address(rawValue: UInt32(truncatingIfNeeded: rng.next()))][Int(rng.next() % 4)]
        }
        return FlowAction.Forward(
            outputPort: 1, destinationMAC: .local(rng.next()), sourceMAC: MACAddress(rawValue: rng.next()),
            translatedSource: rng.chance(0.6) ? address(p.source) : nil,
            translatedSourcePort: ports && rng.chance(0.6) ? port(p.sourcePort) : nil,
            translatedDestination: rng.chance(0.4) ? address(p.destination) : nil,
            translatedDestinationPort: ports && rng.chance(0.4) ? port(p.destinationPort) : nil)
    }

    @Test func incrementalRewriteEqualsFullRecomputation() {
        var rng = SeededRandom(seed: 1624)
        var counts: [UInt8: Int] = [:]
        var udpWithout = 0
        for _ in 0..<1500 {
            let p = Self.randomPacket(&rng)
            let frame = p.frame()
            #expect(Self.verifies(frame))
            let f = Self.randomForward(for: p, &rng)
            let (outcome, out) = Self.rewrite(frame, key: p.key, action: .forward(f))
            let expected = Self.reference(frame, packet: p, forward: f)
            #expect(outcome == .rewritten)
            #expect(out == expected, "proto \(p.proto) \(p.key) \(f)")
            #expect(Self.verifies(out))
            counts[p.proto, default: 0] += 1
            if p.proto == 17 && !p.udpChecksum {
                udpWithout += 1
                #expect(Self.get16(out, 14 + p.ipHeaderLength + 6) == 0, "UDP without checksum stays without")
            }
        }
        #expect(counts[6, default: 0] > 200 && counts[17, default: 0] > 400 && counts[1, default: 0] > 200)
        #expect(udpWithout > 50)
    }

    /// A frame whose TCP/UDP checksum a device is to finish (the field holds the pseudo-header
    /// sum, as from a virtio-net or packet-socket link): rewritten with `partialL4`, then
    /// finished as the device would, it equals the full recomputation.
    @Test func partialChecksumRewriteFinishesLikeAFullOne() {
        var rng = SeededRandom(seed: 7)
        var checked = 0
        for _ in 0..<1500 {
            var p = Self.randomPacket(&rng)
            guard p.proto == 6 || p.proto == 17 else { continue }
            p.udpChecksum = true
            var frame = p.frame()
            let l4 = 14 + p.ipHeaderLength, at = p.proto == 6 ? 16 : 6
            var pseudo = InternetChecksum()
            pseudo.add(p.source.rawValue); pseudo.add(p.destination.rawValue)
            pseudo.add(UInt16(p.proto)); pseudo.add(UInt16(frame.count - l4))
            Self.put16(&frame, l4 + at, ~pseudo.value)
            let f = Self.randomForward(for: p, &rng)
            var table = ConnectionTable(capacity: 4)
            let h = table.insert(p.key, action: .forward(f), now: .zero).handle!
            var out = frame
            let outcome = out.withUnsafeMutableBytes { table.applyRewrite(h, to: $0, partialL4: true) }
            #expect(outcome == .rewritten)
            out.withUnsafeMutableBytes { _ = OffloadMetadata.finishChecksum(in: $0, start: l4, offset: at) }
            var expected = Self.reference(p.frame(), packet: p, forward: f)
            // A device sends a sum of 0 as 0xffff (both verify); a full computation gives 0.
            if Self.get16(expected, l4 + at) == 0 { Self.put16(&expected, l4 + at, 0xffff) }
            #expect(out == expected, "proto \(p.proto) \(p.key) \(f)")
            checked += 1
        }
        #expect(checked > 500)
    }

    /// A translation chosen so that the new L4 checksum computes to 0: UDP must send 0xffff
    /// (0 means none), TCP must send 0 (what a full computation gives, not 0xffff).
    @Test(arguments: [UInt8(6), 17])
    func checksumThatComputesToZero(proto: UInt8) {
        var rng = SeededRandom(seed: UInt64(proto))
        for _ in 0..<50 {
            var p = Self.randomPacket(&rng)
            p.proto = proto
            p.udpChecksum = true
            p.sourcePort = UInt16(truncatingIfNeeded: rng.next())
            let frame = p.frame()
            // With the new source port 0, find the sum T of everything else; port ~T makes it 0xffff.
            var probe = Self.reference(frame, packet: p, forward: FlowAction.Forward(
                outputPort: 1, destinationMAC: .local(1), sourceMAC: .local(2), translatedSourcePort: 0))
            let l4 = 14 + p.ipHeaderLength
            let at = proto == 6 ? 16 : 6
            Self.put16(&probe, l4 + at, 0)
            var sum = InternetChecksum()
            sum.add(p.source.rawValue); sum.add(p.destination.rawValue)
            sum.add(UInt16(proto)); sum.add(UInt16(probe.count - l4))
            probe.withUnsafeBytes { sum.add(UnsafeRawBufferPointer(rebasing: $0[l4...])) }
            let port = sum.value  // = ~T
            let f = FlowAction.Forward(outputPort: 1, destinationMAC: .local(1), sourceMAC: .local(2),
                                       translatedSourcePort: port)
            let (outcome, out) = Self.rewrite(frame, key: p.key, action: .forward(f))
            #expect(outcome == .rewritten)
            #expect(out == Self.reference(frame, packet: p, forward: f))
            #expect(Self.get16(out, l4 + at) == (proto == 17 ? 0xffff : 0))
        }
    }

    @Test func unchangedWhenTheRewriteDoesNotApply() {
        var rng = SeededRandom(seed: 7)
        for _ in 0..<100 {
            var p = Self.randomPacket(&rng)
            let f = FlowAction.Forward(outputPort: 1, destinationMAC: .local(1), sourceMAC: .local(2),
                                       translatedSource: IPv4Address(1, 2, 3, 4))
            // TTL 0 and 1: the software sends ICMP time exceeded.
            p.ttl = UInt8(rng.next() % 2)
            var frame = p.frame()
            var (outcome, out) = Self.rewrite(frame, key: p.key, action: .forward(f))
            #expect(outcome == .timeToLiveExceeded && out == frame)
            // A fragment.
            p.ttl = 64
            frame = p.frame()
            frame[14 + 6] |= rng.chance(0.5) ? 0x20 : 0x01
            (outcome, out) = Self.rewrite(frame, key: p.key, action: .forward(f))
            #expect(outcome == .fragment && out == frame)
            // Truncated inside the L4 header, or inside the IPv4 header.
            let cut = Array(p.frame().prefix(14 + p.ipHeaderLength + (p.proto == 1 ? 0 : Int(rng.next() % 8)) - (p.proto == 1 ? 1 : 0)))
            (outcome, out) = Self.rewrite(cut, key: p.key, action: .forward(f))
            #expect(outcome == .notApplicable && out == cut)
            // Not a forward action.
            frame = p.frame()
            for action in [FlowAction.drop, .deliver(connection: 3), .toSoftware] {
                (outcome, out) = Self.rewrite(frame, key: p.key, action: action)
                #expect(outcome == .notApplicable && out == frame)
            }
        }
    }

    @Test func actionsRoundTripThroughEntries() {
        var rng = SeededRandom(seed: 99)
        for _ in 0..<300 {
            let p = Self.randomPacket(&rng)
            let actions: [FlowAction] = [.forward(Self.randomForward(for: p, &rng)), .drop, .toSoftware,
                                         .deliver(connection: UInt32(truncatingIfNeeded: rng.next()) & 0x7fff_ffff),
                                         .offloadedTCP(slot: UInt32(truncatingIfNeeded: rng.next()) & 0x7fff_ffff)]
            for a in actions {
                let e = FlowEntry(key: p.key, action: a)
                #expect(e.action == a)
                #expect(e.key == p.key)
            }
        }
    }
}
