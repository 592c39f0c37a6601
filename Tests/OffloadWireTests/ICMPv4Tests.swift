import OffloadCore
import OffloadWire
import Testing

@Suite("ICMPv4")
struct ICMPv4Tests {
    func parse(_ bytes: [UInt8], _ checksums: ChecksumPolicy = .verify) throws(WireError) -> ICMPv4Repr {
        try with(bytes) { raw throws(WireError) in try ICMPv4Repr.parse(ICMPv4Packet(checking: raw), checksums: checksums) }
    }

    func refreshChecksum(_ b: inout [UInt8]) {
        b[2] = 0; b[3] = 0
        let c = b.withUnsafeBytes { InternetChecksum.checksum($0) }
        b[2] = UInt8(c >> 8); b[3] = UInt8(c & 0xff)
    }

    @Test func fixtureEcho() throws {
        let frames = try fixtureFrames("ping.pcap")
        let expected: [(ICMPv4Repr, IPv4Address)] = [
            (.echoRequest(identifier: 14364, sequenceNumber: 1, dataLength: 56), hostA),
            (.echoReply(identifier: 14364, sequenceNumber: 1, dataLength: 56), hostB),
            (.echoRequest(identifier: 14364, sequenceNumber: 2, dataLength: 56), hostA),
            (.echoReply(identifier: 14364, sequenceNumber: 2, dataLength: 56), hostB),
        ]
        for (frame, (icmp, source)) in zip(frames[2...], expected) {
            let parsed = try parseFrame(frame)
            #expect(parsed.icmp == icmp)
            #expect(parsed.ipv4?.source == source)
            #expect(parsed.ipv4?.protocol == .icmp)
            #expect(parsed.ipv4?.payloadLength == 64)
            #expect(reemit(parsed, over: frame) == frame)
        }
        // The reply carries the request's data.
        #expect(frames[2][42...] == frames[3][42...])
    }

    @Test func fixturePortUnreachable() throws {
        let frames = try fixtureFrames("unreachable.pcap")
        let parsed = try parseFrame(frames[1])
        let quoted = IPv4Repr(source: hostA, destination: hostB, protocol: .udp, payloadLength: 19, timeToLive: 64,
                              typeOfService: 0, identification: 65311, dontFragment: true)
        // Linux quotes the whole (short) datagram: 8 UDP header bytes and 11 of payload.
        #expect(parsed.icmp == .destinationUnreachable(code: ICMPv4Packet.UnreachableCode.port, nextHopMTU: 0,
                                                       quoted: quoted, quotedDataLength: 19))
        #expect(parsed.ipv4?.typeOfService == 0xc0)
        #expect(parsed.ipv4?.source == hostB)
        #expect(reemit(parsed, over: frames[1]) == frames[1])
        // The quoted bytes are the original datagram's.
        #expect(frames[1][(14 + 20 + 8)...] == frames[0][14...])
        // The quoted UDP header gives the flow back.
        try frames[1].withUnsafeBytes { raw in
            let ip = try IPv4Packet(checking: UnsafeRawBufferPointer(rebasing: raw[14...]))
            let icmp = try ICMPv4Packet(checking: ip.payload)
            #expect(icmp.isError)
            let inner = try icmp.quotedHeader()
            let udp = try UDPPacket(checking: inner.payload)
            #expect(udp.sourcePort == 40001 && udp.destinationPort == 5999)
        }
    }

    @Test func echoRoundTrip() throws {
        let data: [UInt8] = Array(0..<32)
        for repr in [ICMPv4Repr.echoRequest(identifier: 7, sequenceNumber: 65535, dataLength: 32),
                     .echoReply(identifier: 0xbeef, sequenceNumber: 0, dataLength: 32)] {
            let b = emitting(repr.bufferLength, payloadAt: 8, payload: data) { repr.emit(into: $0, checksums: .verify) }
            #expect(try parse(b) == repr)
            #expect(b.withUnsafeBytes { InternetChecksum.checksum($0) } == 0)
        }
    }

    func timeExceeded() -> (ICMPv4Repr, [UInt8]) {
        let quoted = IPv4Repr(source: hostA, destination: IPv4Address(192, 0, 2, 9), protocol: .tcp, payloadLength: 40,
                              timeToLive: 1, identification: 99)
        let repr = ICMPv4Repr.timeExceeded(code: 0, quoted: quoted, quotedDataLength: 8)
        let b = emitting(repr.bufferLength, payloadAt: 28, payload: [0xc8, 0x7a, 0x13, 0x89, 0, 0, 0, 1]) {
            repr.emit(into: $0, checksums: .verify)
        }
        return (repr, b)
    }

    @Test func errorRoundTrip() throws {
        let (repr, b) = timeExceeded()
        #expect(b.count == 36)
        #expect(try parse(b) == repr)
        let frag = ICMPv4Repr.destinationUnreachable(code: ICMPv4Packet.UnreachableCode.fragmentationNeeded, nextHopMTU: 1400,
                                                     quoted: IPv4Repr(source: hostB, destination: hostA, protocol: .udp, payloadLength: 3000),
                                                     quotedDataLength: 8)
        let fb = emitting(frag.bufferLength) { frag.emit(into: $0, checksums: .verify) }
        #expect(try parse(fb) == frag)
        #expect(fb[6] == 0x05 && fb[7] == 0x78)
    }

    @Test func truncated() {
        #expect(throws: WireError.truncated(format: .icmpv4, needed: 8, available: 7)) { try parse([8, 0, 0, 0, 0, 0, 0]) }
    }

    @Test func errorQuoteShorterThanHeaderPlus8() {
        var b = Array(timeExceeded().1.prefix(35))
        refreshChecksum(&b)
        #expect(throws: WireError.truncated(format: .icmpv4, needed: 36, available: 35)) { try parse(b) }
    }

    @Test func errorQuoteWithoutIPHeader() {
        var b = Array(timeExceeded().1.prefix(20))
        refreshChecksum(&b)
        #expect(throws: WireError.truncated(format: .ipv4, needed: 20, available: 12)) { try parse(b) }
    }

    @Test func errorQuotedHeaderNotIPv4() {
        var b = timeExceeded().1
        b[8] = 0x65
        refreshChecksum(&b)
        #expect(throws: WireError.badField(format: .ipv4, field: "version", value: 6)) { try parse(b) }
    }

    @Test func badChecksum() {
        var b = timeExceeded().1
        b[30] ^= 0xff
        #expect(throws: WireError.badChecksum(format: .icmpv4)) { try parse(b) }
        #expect((try? parse(b, .ignore)) == timeExceeded().0)
    }

    @Test func unknownTypeUnsupported() {
        var b: [UInt8] = [13, 0, 0, 0, 0, 0, 0, 0] // timestamp request
        refreshChecksum(&b)
        #expect(throws: WireError.unsupported(format: .icmpv4, what: "type 13 code 0")) { try parse(b) }
    }

    @Test func echoWithNonZeroCode() {
        var b: [UInt8] = [8, 1, 0, 0, 0, 1, 0, 1]
        refreshChecksum(&b)
        #expect(throws: WireError.badField(format: .icmpv4, field: "echo code", value: 1)) { try parse(b) }
    }

    @Test func natRewriteOfIdentifier() throws {
        let repr = ICMPv4Repr.echoRequest(identifier: 100, sequenceNumber: 1, dataLength: 4)
        var b = emitting(repr.bufferLength, payloadAt: 8, payload: [9, 9, 9, 9]) { repr.emit(into: $0, checksums: .verify) }
        try b.withUnsafeMutableBytes { raw in
            let icmp = try MutableICMPv4Packet(checking: raw)
            icmp.setIdentifier(2000)
            icmp.updateChecksum(old: 100, new: 2000)
            #expect(icmp.packet.verifyChecksum)
            icmp.setIdentifier(3000)
            icmp.fillChecksum()
        }
        #expect(try parse(b) == .echoRequest(identifier: 3000, sequenceNumber: 1, dataLength: 4))
    }
}
