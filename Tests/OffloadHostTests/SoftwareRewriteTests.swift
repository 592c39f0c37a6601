import Testing
import OffloadCore
import OffloadEngine
@testable import OffloadHost
import OffloadWire

/// B6 for frames whose TCP/UDP checksum a device finishes (from a virtio-net or
/// packet-socket link): the software's complete processing and the engine's completion
/// give the same bytes.
@Suite struct SoftwareRewriteTests {
    @Test(arguments: [IPProtocol.tcp, .udp])
    func partialChecksumFramesAreRewrittenAlike(proto: IPProtocol) throws {
        let source = IPv4Address(10, 1, 0, 2), destination = IPv4Address(10, 2, 0, 2)
        var frame = [UInt8](repeating: 0, count: 14 + 20 + 20 + 100)
        frame.withUnsafeMutableBytes { raw in
            EthernetRepr(destination: .local(2), source: .local(1), etherType: .ipv4).emit(into: raw)
            let l4Length = (proto == .tcp ? 20 : 8) + 100
            IPv4Repr(source: source, destination: destination, protocol: proto, payloadLength: l4Length)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
            let segment = UnsafeMutableRawBufferPointer(rebasing: raw[34..<(34 + l4Length)])
            if proto == .tcp {
                TCPRepr(sourcePort: 40000, destinationPort: 80, sequenceNumber: 9, acknowledgmentNumber: 1,
                        flags: .ack, windowSize: 500, payloadLength: 100)
                    .emit(into: segment, source: source, destination: destination, checksums: .partial)
            } else {
                UDPRepr(sourcePort: 40000, destinationPort: 53, payloadLength: 100)
                    .emit(into: segment, source: source, destination: destination, checksums: .partial)
            }
        }
        if proto == .udp { frame.removeLast(12) }
        let key = FlowKey(ingressPort: 0, protocol: proto.rawValue, source: source, destination: destination,
                          sourcePort: 40000, destinationPort: proto == .tcp ? 80 : 53)
        let forward = FlowAction.Forward(outputPort: 1, destinationMAC: .local(9), sourceMAC: .local(8),
                                         translatedSource: IPv4Address(192, 0, 2, 1), translatedSourcePort: 61000)
        var byEngine = frame, bySoftware = frame
        let outcome = byEngine.withUnsafeMutableBytes {
            FlowEntry(key: key, action: .forward(forward)).applyRewrite(to: $0, partialL4: true)
        }
        #expect(outcome == .rewritten)
        #expect(bySoftware.withUnsafeMutableBytes { SlowPath.rewrite($0, forward, key: key, partialL4: true) })
        #expect(byEngine == bySoftware)
        // Finished as a device would, the checksum verifies.
        let at = proto == .tcp ? 34 + 16 : 34 + 6
        bySoftware.withUnsafeMutableBytes { _ = OffloadMetadata.finishChecksum(in: $0, start: 34, offset: at - 34) }
        try bySoftware.withUnsafeBytes { raw in
            let ip = try IPv4Packet(checking: try EthernetFrame(checking: raw).payload)
            if proto == .tcp {
                #expect(try TCPPacket(checking: ip.payload).verifyChecksum(source: ip.source, destination: ip.destination))
            } else {
                #expect(try UDPPacket(checking: ip.payload).verifyChecksum(source: ip.source, destination: ip.destination))
            }
        }
    }
}

/// B6 for a frame that arrived damaged: both processing splits give the same bytes, and
/// the damage still shows in its checksums. The software recomputed every checksum from
/// scratch, and a damaged frame left with valid ones.
@Suite struct DamagedFrameRewriteTests {
    @Test(arguments: [IPProtocol.tcp, .udp], [false, true])
    func aDamagedFrameStaysDamaged(proto: IPProtocol, damagedHeader: Bool) throws {
        let source = IPv4Address(10, 1, 0, 2), destination = IPv4Address(10, 2, 0, 2)
        let l4Length = (proto == .tcp ? 20 : 8) + 100
        var frame = [UInt8](repeating: 0x5a, count: 14 + 20 + l4Length)
        frame.withUnsafeMutableBytes { raw in
            EthernetRepr(destination: .local(2), source: .local(1), etherType: .ipv4).emit(into: raw)
            IPv4Repr(source: source, destination: destination, protocol: proto, payloadLength: l4Length)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
            let segment = UnsafeMutableRawBufferPointer(rebasing: raw[34...])
            if proto == .tcp {
                TCPRepr(sourcePort: 40000, destinationPort: 80, sequenceNumber: 9, acknowledgmentNumber: 1,
                        flags: .ack, windowSize: 500, payloadLength: 100)
                    .emit(into: segment, source: source, destination: destination, checksums: .verify)
            } else {
                UDPRepr(sourcePort: 40000, destinationPort: 53, payloadLength: 100)
                    .emit(into: segment, source: source, destination: destination, checksums: .verify)
            }
        }
        // Damage on the way: a bit of the IPv4 header's identification, or of the payload.
        frame[damagedHeader ? 18 : frame.count - 1] ^= 0x10
        let key = FlowKey(ingressPort: 0, protocol: proto.rawValue, source: source, destination: destination,
                          sourcePort: 40000, destinationPort: proto == .tcp ? 80 : 53)
        let forward = FlowAction.Forward(outputPort: 1, destinationMAC: .local(9), sourceMAC: .local(8),
                                         translatedSource: IPv4Address(192, 0, 2, 1), translatedSourcePort: 61000)
        var byEngine = frame, bySoftware = frame
        let outcome = byEngine.withUnsafeMutableBytes {
            FlowEntry(key: key, action: .forward(forward)).applyRewrite(to: $0, partialL4: false)
        }
        #expect(outcome == .rewritten)
        #expect(bySoftware.withUnsafeMutableBytes { SlowPath.rewrite($0, forward, key: key, partialL4: false) })
        #expect(byEngine == bySoftware)
        try bySoftware.withUnsafeBytes { raw in
            let ip = try IPv4Packet(checking: try EthernetFrame(checking: raw).payload)
            let l4Verifies = proto == .tcp
                ? try TCPPacket(checking: ip.payload).verifyChecksum(source: ip.source, destination: ip.destination)
                : try UDPPacket(checking: ip.payload).verifyChecksum(source: ip.source, destination: ip.destination)
            #expect(ip.verifyChecksum == !damagedHeader && l4Verifies == damagedHeader,
                    "the damaged checksum still fails, the other still holds")
        }
    }
}

/// The software's RTP check on a new UDP flow's first frame (B8): by offsets, bounded by the
/// UDP length.
@Suite struct CarriesRTPTests {
    /// Ethernet + IPv4 (with `optionWords` option words) + UDP with `payload`, then `padding`
    /// zero bytes after the datagram, as Ethernet pads a short frame.
    static func frame(payload: [UInt8], optionWords: Int = 0, padding: Int = 0) -> [UInt8] {
        let ip = 14, udp = ip + 20 + 4 * optionWords
        var f = [UInt8](repeating: 0, count: udp + 8 + payload.count + padding)
        f[12] = 0x08
        f[ip] = 0x45 + UInt8(optionWords)
        f[ip + 9] = 17
        let length = 8 + payload.count
        f[udp + 4] = UInt8(length >> 8); f[udp + 5] = UInt8(length & 0xff)
        for (i, b) in payload.enumerated() { f[udp + 8 + i] = b }
        return f
    }

    static func check(_ f: [UInt8]) -> Bool { f.withUnsafeBytes { SlowPath.carriesRTP($0) } }

    @Test func rtpIsToldFromWhatIsNot() {
        let rtp: [UInt8] = [0x80, 0x00, 0, 1] + [UInt8](repeating: 7, count: 8)
        #expect(Self.check(Self.frame(payload: rtp)))
        #expect(Self.check(Self.frame(payload: rtp, optionWords: 2)), "the UDP header moves with IP options")
        #expect(Self.check(Self.frame(payload: rtp + [1, 2, 3], padding: 6)))
        var rtcp = rtp; rtcp[1] = 200
        #expect(!Self.check(Self.frame(payload: rtcp)), "an RTCP sender report")
        var version1 = rtp; version1[0] = 0x40
        #expect(!Self.check(Self.frame(payload: version1)))
        // Eleven payload bytes and padding that would complete a header: the UDP length says no.
        #expect(!Self.check(Self.frame(payload: Array(rtp.prefix(11)), padding: 8)))
        // A length field longer than the frame, or shorter than a UDP header.
        var long = Self.frame(payload: rtp); long[14 + 20 + 5] = 200
        #expect(!Self.check(long))
        var short = Self.frame(payload: rtp); short[14 + 20 + 4] = 0; short[14 + 20 + 5] = 4
        #expect(!Self.check(short))
        #expect(!Self.check(Array(Self.frame(payload: rtp).prefix(14 + 20 + 6))), "cut inside the UDP header")
    }
}
