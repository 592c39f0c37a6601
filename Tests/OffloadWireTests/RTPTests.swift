import OffloadCore
import OffloadWire
import Testing

@Suite("RTP")
struct RTPTests {
    func parse(_ bytes: [UInt8]) throws(WireError) -> RTPRepr {
        try with(bytes) { raw throws(WireError) in RTPRepr.parse(try RTPPacket(checking: raw)) }
    }

    @Test func fixtureOverUDP() throws {
        let frame = try fixtureFrames("udp.pcap")[1]
        let parsed = try parseFrame(frame)
        #expect(parsed.udp == UDPRepr(sourcePort: 40002, destinationPort: 5004, payloadLength: 20))
        let rtp = try #require(parsed.rtp)
        #expect(rtp == RTPRepr(marker: true, payloadType: 96, sequenceNumber: 0x1234, timestamp: 0x1122_3344,
                               ssrc: 0xdead_beef, csrcs: [0x0102_0304], payloadLength: 4))
        #expect(Array(frame[parsed.payloadOffset...]) == Array("abcd".utf8))
        #expect(reemit(parsed, over: frame) == frame)
        try frame.withUnsafeBytes { raw in
            let p = try RTPPacket(checking: UnsafeRawBufferPointer(rebasing: raw[42...]))
            #expect(p.version == 2 && !p.hasPadding && !p.hasExtension && p.csrcCount == 1)
            #expect(p.csrc(0) == 0x0102_0304)
            #expect(p.headerLength == 16 && p.extensionProfile == nil && p.extensionData.isEmpty)
        }
    }

    @Test func fixtureWithExtensionAndPadding() throws {
        let frame = try fixtureFrames("udp.pcap")[2]
        let parsed = try parseFrame(frame)
        #expect(parsed.udp == UDPRepr(sourcePort: 40002, destinationPort: 5004, payloadLength: 24))
        #expect(parsed.rtp == RTPRepr(marker: false, payloadType: 0, sequenceNumber: 1, timestamp: 160, ssrc: 0xdead_beef,
                                      headerExtension: RTPHeaderExtension(profile: 0xbede, lengthInWords: 1),
                                      paddingLength: 2, payloadLength: 2))
        #expect(reemit(parsed, over: frame) == frame)
        try frame.withUnsafeBytes { raw in
            let p = try RTPPacket(checking: UnsafeRawBufferPointer(rebasing: raw[42...]))
            #expect(p.hasPadding && p.hasExtension && p.csrcCount == 0)
            #expect(Array(p.extensionData) == [0x10, 0x20, 0x30, 0x40])
            #expect(Array(p.payload) == Array("xy".utf8))
        }
    }

    @Test func nonRTPDatagramIsNotVersion2() throws {
        // The first UDP fixture carries "hello udp" (9 bytes, too short), and padded to 12 its first byte gives version 1.
        let frame = try fixtureFrames("udp.pcap")[0]
        #expect(throws: WireError.truncated(format: .rtp, needed: 12, available: 9)) {
            try with(Array(frame[42...])) { raw throws(WireError) in _ = try RTPPacket(checking: raw) }
        }
        #expect(throws: WireError.badField(format: .rtp, field: "version", value: 1)) {
            try with(Array(frame[42...]) + [0, 0, 0]) { raw throws(WireError) in _ = try RTPPacket(checking: raw) }
        }
    }

    let full = RTPRepr(marker: false, payloadType: 0, sequenceNumber: 65535, timestamp: 160, ssrc: 7,
                       csrcs: [1, 2, 3], headerExtension: RTPHeaderExtension(profile: 0xbede, lengthInWords: 2),
                       paddingLength: 3, payloadLength: 5)

    func fullBytes() -> [UInt8] {
        let repr = full
        // Extension data (8 bytes) and payload (5) prefilled; emit writes the rest.
        return emitting(repr.bufferLength, payloadAt: 28, payload: [0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 1, 2, 3, 4, 5]) {
            repr.emit(into: $0)
        }
    }

    @Test func roundTripWithEverything() throws {
        let b = fullBytes()
        #expect(b.count == 12 + 12 + 4 + 8 + 5 + 3)
        #expect(b[0] == 0xb3) // V=2, P, X, CC=3
        #expect(Array(b.suffix(3)) == [0, 0, 3])
        #expect(try parse(b) == full)
        try b.withUnsafeBytes { raw in
            let p = try RTPPacket(checking: raw)
            #expect(p.extensionProfile == 0xbede)
            #expect(Array(p.extensionData) == [0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8])
            #expect(Array(p.payload) == [1, 2, 3, 4, 5])
            #expect(p.paddingLength == 3)
        }
        let minimal = RTPRepr(payloadType: 127, sequenceNumber: 0, timestamp: .max, ssrc: 0, payloadLength: 0)
        #expect(try parse(emitting(minimal.bufferLength) { minimal.emit(into: $0) }) == minimal)
        let fifteen = RTPRepr(payloadType: 8, sequenceNumber: 1, timestamp: 2, ssrc: 3, csrcs: RTPCSRCList(1...15), payloadLength: 1)
        #expect(try parse(emitting(fifteen.bufferLength) { fifteen.emit(into: $0) }) == fifteen)
    }

    @Test func truncated() {
        #expect(throws: WireError.truncated(format: .rtp, needed: 12, available: 11)) { try parse(Array(fullBytes().prefix(11))) }
    }

    @Test func versionNot2() {
        var b = fullBytes(); b[0] = 0x73
        #expect(throws: WireError.badField(format: .rtp, field: "version", value: 1)) { try parse(b) }
    }

    @Test func csrcListPastTheEnd() {
        // CC=15 needs 72 bytes of header; there are 44.
        var b = fullBytes(); b[0] = 0x8f
        #expect(throws: WireError.badLength(format: .rtp, field: "CSRC count", value: 15)) { try parse(b) }
    }

    @Test func extensionHeaderMissing() {
        // X set, CC=0, nothing after the fixed header.
        let b: [UInt8] = [0x90, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]
        #expect(throws: WireError.truncated(format: .rtp, needed: 16, available: 12)) { try parse(b) }
    }

    @Test func extensionLengthPastTheEnd() {
        var b = fullBytes(); b[26] = 0; b[27] = 20
        #expect(throws: WireError.badLength(format: .rtp, field: "extension length", value: 20)) { try parse(b) }
    }

    @Test func paddingCountZero() {
        var b = fullBytes(); b[b.count - 1] = 0
        #expect(throws: WireError.badLength(format: .rtp, field: "padding", value: 0)) { try parse(b) }
    }

    @Test func paddingPastTheHeader() {
        var b = fullBytes(); b[b.count - 1] = 9 // only 8 bytes follow the 36-byte header
        #expect(throws: WireError.badLength(format: .rtp, field: "padding", value: 9)) { try parse(b) }
    }
}
