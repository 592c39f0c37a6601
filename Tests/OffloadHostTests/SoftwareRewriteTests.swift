import Testing
import OffloadCore
import OffloadEngine
@testable import OffloadHost
import OffloadWire

/// B6: the software's complete processing and the engine's completion give the same bytes.
@Suite struct SoftwareRewriteTests {
    static let source = IPv4Address(10, 1, 0, 2), destination = IPv4Address(10, 2, 0, 2)

    /// Ethernet + IPv4 + TCP or UDP with 100 bytes of payload; `checksums` for the L4 one.
    static func frame(_ proto: IPProtocol, checksums: ChecksumPolicy) -> [UInt8] {
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
                    .emit(into: segment, source: source, destination: destination, checksums: checksums)
            } else {
                UDPRepr(sourcePort: 40000, destinationPort: 53, payloadLength: 100)
                    .emit(into: segment, source: source, destination: destination, checksums: checksums)
            }
        }
        return frame
    }

    /// `frame` rewritten for a source NAT by the engine's entry and by the software, which
    /// must agree.
    static func rewrittenBoth(_ frame: [UInt8], _ proto: IPProtocol, partialL4: Bool) -> [UInt8] {
        let key = FlowKey(ingressPort: 0, protocol: proto.rawValue, source: source, destination: destination,
                          sourcePort: 40000, destinationPort: proto == .tcp ? 80 : 53)
        let forward = FlowAction.Forward(outputPort: 1, destinationMAC: .local(9), sourceMAC: .local(8),
                                         translatedSource: IPv4Address(192, 0, 2, 1), translatedSourcePort: 61000)
        var byEngine = frame, bySoftware = frame
        let outcome = byEngine.withUnsafeMutableBytes {
            FlowEntry(key: key, action: .forward(forward)).applyRewrite(to: $0, partialL4: partialL4)
        }
        #expect(outcome == .rewritten)
        #expect(bySoftware.withUnsafeMutableBytes { SlowPath.rewrite($0, forward, key: key, partialL4: partialL4) })
        #expect(byEngine == bySoftware)
        return bySoftware
    }

    /// Whether the IPv4 header's checksum and the TCP/UDP one verify.
    static func checksumsVerify(_ frame: [UInt8], _ proto: IPProtocol) throws -> (header: Bool, l4: Bool) {
        try frame.withUnsafeBytes { raw in
            let ip = try IPv4Packet(checking: try EthernetFrame(checking: raw).payload)
            let l4 = proto == .tcp
                ? try TCPPacket(checking: ip.payload).verifyChecksum(source: ip.source, destination: ip.destination)
                : try UDPPacket(checking: ip.payload).verifyChecksum(source: ip.source, destination: ip.destination)
            return (ip.verifyChecksum, l4)
        }
    }

    /// A frame whose TCP/UDP checksum a device finishes (from a virtio-net or packet-socket
    /// link): finished as a device would, after either rewrite, it verifies.
    @Test(arguments: [IPProtocol.tcp, .udp])
    func partialChecksumFramesAreRewrittenAlike(proto: IPProtocol) throws {
        var frame = Self.rewrittenBoth(Self.frame(proto, checksums: .partial), proto, partialL4: true)
        let at = proto == .tcp ? 34 + 16 : 34 + 6
        frame.withUnsafeMutableBytes { _ = OffloadMetadata.finishChecksum(in: $0, start: 34, offset: at - 34) }
        #expect(try Self.checksumsVerify(frame, proto) == (true, true))
    }

    /// A frame damaged on the way: after either rewrite the damage still shows in its
    /// checksums. The software recomputed every checksum from scratch, and a damaged frame
    /// left with valid ones.
    @Test(arguments: [IPProtocol.tcp, .udp], [false, true])
    func aDamagedFrameStaysDamaged(proto: IPProtocol, damagedHeader: Bool) throws {
        var frame = Self.frame(proto, checksums: .verify)
        // A bit of the IPv4 header's identification, or of the payload.
        frame[damagedHeader ? 18 : frame.count - 1] ^= 0x10
        let verified = try Self.checksumsVerify(Self.rewrittenBoth(frame, proto, partialL4: false), proto)
        #expect(verified == (!damagedHeader, damagedHeader), "the damaged checksum still fails, the other holds")
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
