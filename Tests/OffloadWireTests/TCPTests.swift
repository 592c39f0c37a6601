import OffloadCore
import OffloadWire
import Testing

@Suite("TCP")
struct TCPTests {
    func parse(_ bytes: [UInt8], _ checksums: ChecksumPolicy = .verify) throws(WireError) -> TCPRepr {
        try with(bytes) { raw throws(WireError) in
            try TCPRepr.parse(TCPPacket(checking: raw), source: hostA, destination: hostB, checksums: checksums)
        }
    }

    func emit(_ repr: TCPRepr, payload: [UInt8] = [], _ checksums: ChecksumPolicy = .verify) -> [UInt8] {
        emitting(repr.bufferLength, payloadAt: repr.headerLength, payload: payload) {
            repr.emit(into: $0, source: hostA, destination: hostB, checksums: checksums)
        }
    }

    /// A segment whose options area is `options` (padded by the caller to a multiple of 4),
    /// with a valid checksum, so that only the options are wrong.
    func segment(options: [UInt8]) -> [UInt8] {
        precondition(options.count % 4 == 0)
        var b: [UInt8] = [0x13, 0x89, 0xc8, 0x7a, 0, 0, 0, 1, 0, 0, 0, 0, UInt8((20 + options.count) / 4) << 4, 0x10,
                          0xff, 0xff, 0, 0, 0, 0] + options
        let c = b.withUnsafeBytes { ipv4L4Checksum($0, source: hostA, destination: hostB, protocol: 6) }
        b[16] = UInt8(c >> 8); b[17] = UInt8(c & 0xff)
        return b
    }

    @Test func fixtureHandshakeDataAndTeardown() throws {
        let frames = try fixtureFrames("tcp.pcap")
        #expect(frames.count == 8)
        let parsed = try frames.map { try parseFrame($0) }
        for (frame, p) in zip(frames, parsed) {
            #expect(reemit(p, over: frame) == frame, "parse then emit must give the captured bytes")
        }
        let syn = try #require(parsed[0].tcp)
        #expect(syn.sourcePort == 46096 && syn.destinationPort == 5001)
        #expect(syn.flags == .syn)
        #expect(syn.sequenceNumber == 2_682_024_553)
        #expect(syn.windowSize == 64240)
        #expect(syn.maxSegmentSize == 1460)
        #expect(syn.windowScale == 10)
        #expect(syn.sackPermitted)
        #expect(syn.timestamp == TCPTimestamp(value: 2_920_663_361, echoReply: 0))
        #expect(syn.sackBlocks.isEmpty)
        #expect(syn.headerLength == 40)

        let synAck = try #require(parsed[1].tcp)
        #expect(synAck.flags == [.syn, .ack])
        #expect(synAck.acknowledgmentNumber == syn.sequenceNumber &+ 1)
        #expect(synAck.maxSegmentSize == 1460 && synAck.windowScale == 10 && synAck.sackPermitted)
        #expect(synAck.timestamp?.echoReply == syn.timestamp?.value)

        let data = try #require(parsed[3].tcp)
        #expect(data.flags == [.psh, .ack])
        #expect(data.payloadLength == 14)
        #expect(data.maxSegmentSize == nil && data.windowScale == nil && !data.sackPermitted)
        #expect(data.timestamp != nil)
        #expect(data.headerLength == 32)
        #expect(Array(frames[3][parsed[3].payloadOffset...]) == Array("hello offload\n".utf8))

        #expect(parsed[5].tcp?.flags == [.fin, .ack])
        #expect(parsed[6].tcp?.flags == [.fin, .ack])
        #expect(parsed[7].tcp?.flags == .ack)
        #expect(parsed[7].tcp?.acknowledgmentNumber == parsed[6].tcp!.sequenceNumber &+ 1)
    }

    @Test func fixtureViewAndOptionIterator() throws {
        let frame = try fixtureFrames("tcp.pcap")[0]
        try frame.withUnsafeBytes { raw in
            let tcp = try TCPPacket(checking: UnsafeRawBufferPointer(rebasing: raw[34...]))
            #expect(tcp.headerLength == 40)
            #expect(tcp.checksum == 0xe70c)
            #expect(tcp.verifyChecksum(source: hostA, destination: hostB))
            #expect(tcp.segmentLength == 1)
            var it = tcp.options
            var seen: [TCPOption] = []
            while let o = try it.next() { seen.append(o) }
            #expect(seen == [.maxSegmentSize(1460), .sackPermitted, .timestamp(TCPTimestamp(value: 2_920_663_361, echoReply: 0)),
                             .noOperation, .windowScale(10)])
        }
    }

    @Test func roundTripWithSACKBlocks() throws {
        for n in 1...4 {
            let blocks = TCPSACKBlocks((0..<n).map { TCPSACKBlock(left: UInt32(1000 * $0), right: UInt32(1000 * $0 + 500)) })
            // Four blocks fit only without timestamps.
            let repr = TCPRepr(sourcePort: 5001, destinationPort: 51322, sequenceNumber: 1, acknowledgmentNumber: 2,
                               flags: .ack, windowSize: 100, sackBlocks: blocks,
                               timestamp: n < 4 ? TCPTimestamp(value: 5, echoReply: 6) : nil, payloadLength: 3)
            let b = emit(repr, payload: [1, 2, 3])
            #expect(b.count == repr.bufferLength)
            let parsed = try parse(b)
            #expect(parsed == repr)
            #expect(parsed.sackBlocks.count == n)
            #expect(parsed.sackBlocks.last == TCPSACKBlock(left: UInt32(1000 * (n - 1)), right: UInt32(1000 * (n - 1) + 500)))
        }
    }

    @Test func roundTripOptionCombinations() throws {
        let variants: [TCPRepr] = [
            TCPRepr(sourcePort: 1, destinationPort: 2, sequenceNumber: .max, flags: [.syn], windowSize: 65535,
                    maxSegmentSize: 536, windowScale: 14, sackPermitted: true),
            TCPRepr(sourcePort: 1, destinationPort: 2, sequenceNumber: 0, flags: [.syn], windowSize: 1, sackPermitted: true),
            TCPRepr(sourcePort: 1, destinationPort: 2, sequenceNumber: 0, flags: [.rst, .ack, .urg, .ece, .cwr, .ns],
                    windowSize: 0, urgentPointer: 7),
            TCPRepr(sourcePort: 1, destinationPort: 2, sequenceNumber: 0, flags: .fin, windowSize: 9, windowScale: 0,
                    timestamp: TCPTimestamp(value: .max, echoReply: 1), payloadLength: 1),
        ]
        for repr in variants {
            #expect(try parse(emit(repr, payload: [UInt8](repeating: 0x61, count: repr.payloadLength))) == repr)
        }
    }

    @Test func linuxOptionLayout() {
        let repr = TCPRepr(sourcePort: 1, destinationPort: 2, sequenceNumber: 0, flags: .syn, windowSize: 0,
                           maxSegmentSize: 1460, windowScale: 7, sackPermitted: true,
                           timestamp: TCPTimestamp(value: 0x01020304, echoReply: 0))
        let b = emit(repr)
        #expect(Array(b[20...]) == hex("020405b4 0402080a 01020304 00000000 01030307"))
        let noTS = TCPRepr(sourcePort: 1, destinationPort: 2, sequenceNumber: 0, flags: .syn, windowSize: 0, sackPermitted: true,
                           sackBlocks: [TCPSACKBlock(left: 1, right: 2)])
        #expect(Array(emit(noTS)[20...]) == hex("01010402 0101050a 00000001 00000002"))
    }

    @Test func unknownOptionsSkippedByLength() throws {
        // Kind 30 (MPTCP) with 6 bytes, then MSS, then EOL and padding.
        let b = segment(options: [30, 6, 1, 2, 3, 4, 2, 4, 0x05, 0xb4, 0, 0])
        let repr = try parse(b)
        #expect(repr.maxSegmentSize == 1460)
        try b.withUnsafeBytes { raw in
            var it = try TCPPacket(checking: raw).options
            #expect(try it.next() == .unknown(kind: 30, length: 6))
            #expect(try it.next() == .maxSegmentSize(1460))
            #expect(try it.next() == nil)
        }
        var empty = TCPOptions(UnsafeRawBufferPointer(start: nil, count: 0))
        #expect(try empty.next() == nil)
    }

    @Test func truncated() {
        #expect(throws: WireError.truncated(format: .tcp, needed: 20, available: 19)) { try parse(Array(segment(options: []).prefix(19))) }
    }

    @Test func dataOffsetBelow5() {
        var b = segment(options: []); b[12] = 0x40
        #expect(throws: WireError.badHeaderLength(format: .tcp, value: 16)) { try parse(b) }
    }

    @Test func dataOffsetBeyondSegment() {
        var b = segment(options: []); b[12] = 0x60
        #expect(throws: WireError.badHeaderLength(format: .tcp, value: 24)) { try parse(b) }
    }

    @Test func badChecksum() {
        var b = segment(options: []); b[4] ^= 0x80
        #expect(throws: WireError.badChecksum(format: .tcp)) { try parse(b) }
        #expect((try? parse(b, .ignore))?.sequenceNumber == 0x8000_0001)
    }

    @Test func partialChecksumAcceptedAndCompleted() throws {
        let repr = TCPRepr(sourcePort: 5001, destinationPort: 51322, sequenceNumber: 77, acknowledgmentNumber: 5,
                           flags: [.psh, .ack], windowSize: 512, timestamp: TCPTimestamp(value: 1, echoReply: 2), payloadLength: 5)
        var b = emit(repr, payload: Array("hello".utf8), .partial)
        let full = emit(repr, payload: Array("hello".utf8), .verify)
        #expect(b != full)
        #expect(throws: WireError.badChecksum(format: .tcp)) { try parse(b) }
        #expect(try parse(b, .partial) == repr)
        // The partial field holds exactly the pseudo-header sum.
        let pseudo = ipv4PseudoHeaderChecksum(source: hostA, destination: hostB, protocol: 6, length: b.count).partial
        #expect(UInt16(b[16]) << 8 | UInt16(b[17]) == pseudo)
        try b.withUnsafeMutableBytes { raw in try completePartialChecksum(frame: raw, start: 0, offset: 16) }
        #expect(b == full)
    }

    @Test func optionLengthZero() {
        #expect(throws: WireError.badOption(format: .tcpOption, kind: 2, length: 0)) { try parse(segment(options: [2, 0, 0, 0])) }
    }

    @Test func optionLengthOne() {
        #expect(throws: WireError.badOption(format: .tcpOption, kind: 99, length: 1)) { try parse(segment(options: [99, 1, 0, 0])) }
    }

    @Test func optionPastTheEnd() {
        #expect(throws: WireError.badOption(format: .tcpOption, kind: 8, length: 10)) {
            try parse(segment(options: [1, 1, 8, 10, 0, 0, 0, 0]))
        }
    }

    @Test func optionLengthByteMissing() {
        #expect(throws: WireError.truncated(format: .tcpOption, needed: 2, available: 1)) { try parse(segment(options: [1, 1, 1, 3])) }
    }

    @Test func wrongMSSLength() {
        #expect(throws: WireError.badOption(format: .tcpOption, kind: 2, length: 3)) { try parse(segment(options: [2, 3, 5, 0])) }
    }

    @Test func wrongWindowScaleLength() {
        #expect(throws: WireError.badOption(format: .tcpOption, kind: 3, length: 4)) { try parse(segment(options: [3, 4, 7, 0])) }
    }

    @Test func wrongSACKPermittedLength() {
        #expect(throws: WireError.badOption(format: .tcpOption, kind: 4, length: 3)) { try parse(segment(options: [4, 3, 0, 0])) }
    }

    @Test func wrongTimestampLength() {
        #expect(throws: WireError.badOption(format: .tcpOption, kind: 8, length: 8)) {
            try parse(segment(options: [8, 8, 0, 0, 0, 0, 0, 0]))
        }
    }

    @Test func wrongSACKLengths() {
        // Not 2 + 8n.
        #expect(throws: WireError.badOption(format: .tcpOption, kind: 5, length: 6)) { try parse(segment(options: [5, 6, 0, 0, 0, 0, 0, 0])) }
        // No block at all.
        #expect(throws: WireError.badOption(format: .tcpOption, kind: 5, length: 2)) { try parse(segment(options: [5, 2, 0, 0])) }
        // Five blocks would not fit in 40 bytes anyway; 4 + 1 claimed past the end.
        #expect(throws: WireError.badOption(format: .tcpOption, kind: 5, length: 42)) {
            try parse(segment(options: [1, 1, 5, 42] + [UInt8](repeating: 0, count: 36)))
        }
    }

    @Test func natRewriteKeepsChecksumValid() throws {
        var b = try fixtureFrames("tcp.pcap")[3]
        try b.withUnsafeMutableBytes { raw in
            let ip = try MutableIPv4Packet(checking: UnsafeMutableRawBufferPointer(rebasing: raw[14...]))
            let tcp = try MutableTCPPacket(checking: ip.payload)
            let newSource = IPv4Address(192, 0, 2, 33)
            tcp.updateChecksum(old: hostA.rawValue, new: newSource.rawValue)
            ip.rewriteSource(newSource)
            tcp.updateChecksum(old: tcp.packet.sourcePort, new: 1024)
            tcp.setSourcePort(1024)
            #expect(ip.packet.verifyChecksum)
            #expect(tcp.packet.verifyChecksum(source: newSource, destination: hostB))
            tcp.setFlags([.rst])
            tcp.setSequenceNumber(5); tcp.setAcknowledgmentNumber(6); tcp.setWindowSize(7)
            tcp.fillChecksum(source: newSource, destination: hostB)
            #expect(tcp.packet.verifyChecksum(source: newSource, destination: hostB))
            #expect(tcp.packet.flags == .rst && tcp.packet.headerLength == 32)
        }
        let parsed = try parseFrame(b)
        #expect(parsed.tcp?.sourcePort == 1024 && parsed.tcp?.sequenceNumber == 5 && parsed.tcp?.windowSize == 7)
    }
}
