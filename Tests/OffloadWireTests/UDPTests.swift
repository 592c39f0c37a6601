import OffloadCore
import OffloadWire
import Testing

@Suite("UDP")
struct UDPTests {
    func parse(_ bytes: [UInt8], _ checksums: ChecksumPolicy = .verify) throws(WireError) -> UDPRepr {
        try with(bytes) { raw throws(WireError) in
            try UDPRepr.parse(UDPPacket(checking: raw), source: hostA, destination: hostB, checksums: checksums)
        }
    }

    let sample = UDPRepr(sourcePort: 40000, destinationPort: 5004, payloadLength: 9)
    let payload = Array("hello udp".utf8)

    func sampleBytes(_ checksums: ChecksumPolicy = .verify) -> [UInt8] {
        let repr = sample
        return emitting(repr.bufferLength, payloadAt: 8, payload: payload) {
            repr.emit(into: $0, source: hostA, destination: hostB, checksums: checksums)
        }
    }

    @Test func fixtureDatagram() throws {
        let frame = try fixtureFrames("udp.pcap")[0]
        let parsed = try parseFrame(frame)
        #expect(parsed.ipv4?.protocol == .udp)
        #expect(parsed.udp == UDPRepr(sourcePort: 40000, destinationPort: 5004, payloadLength: 9))
        #expect(Array(frame[parsed.payloadOffset...]) == payload)
        #expect(reemit(parsed, over: frame) == frame)
        // The same datagram emitted from scratch is the captured one.
        #expect(sampleBytes() == Array(frame[34...]))
    }

    @Test func viewFields() throws {
        try sampleBytes().withUnsafeBytes { raw in
            let udp = try UDPPacket(checking: raw)
            #expect(udp.sourcePort == 40000 && udp.destinationPort == 5004)
            #expect(udp.length == 17)
            #expect(Array(udp.payload) == payload)
            #expect(udp.verifyChecksum(source: hostA, destination: hostB))
            #expect(!udp.verifyChecksum(source: hostA, destination: IPv4Address(10, 99, 0, 3)))
        }
    }

    @Test func roundTrip() throws {
        #expect(try parse(sampleBytes()) == sample)
        let empty = UDPRepr(sourcePort: 1, destinationPort: 65535, payloadLength: 0)
        let b = emitting(empty.bufferLength) { empty.emit(into: $0, source: hostA, destination: hostB, checksums: .verify) }
        #expect(try parse(b) == empty)
    }

    @Test func checksumZeroMeansNone() throws {
        let b = sampleBytes(.ignore)
        #expect(b[6] == 0 && b[7] == 0)
        #expect(try parse(b) == sample)
    }

    @Test func badChecksum() {
        var b = sampleBytes(); b[9] ^= 0x01
        #expect(throws: WireError.badChecksum(format: .udp)) { try parse(b) }
        #expect((try? parse(b, .ignore)) == sample)
    }

    @Test func partialChecksumAcceptedAndCompleted() throws {
        var b = sampleBytes(.partial)
        #expect(b != sampleBytes())
        // A partial checksum is accepted when the parser is told it is partial, not otherwise.
        #expect(try parse(b, .partial) == sample)
        #expect(throws: WireError.badChecksum(format: .udp)) { try parse(b) }
        try b.withUnsafeMutableBytes { raw in try completePartialChecksum(frame: raw, start: 0, offset: 6) }
        #expect(b == sampleBytes())
        #expect(try parse(b) == sample)
    }

    @Test func truncated() {
        #expect(throws: WireError.truncated(format: .udp, needed: 8, available: 7)) { try parse(Array(sampleBytes().prefix(7))) }
    }

    @Test func lengthBeyondBytes() {
        var b = sampleBytes(); b[5] = 18
        #expect(throws: WireError.badLength(format: .udp, field: "length", value: 18)) { try parse(b) }
    }

    @Test func lengthBelowHeader() {
        var b = sampleBytes(); b[5] = 7
        #expect(throws: WireError.badLength(format: .udp, field: "length", value: 7)) { try parse(b) }
    }

    @Test func shorterLengthTrimsPayload() throws {
        // Bytes beyond the UDP length (as Linux does) are not part of the datagram.
        let b = sampleBytes() + [0xee, 0xee]
        try b.withUnsafeBytes { raw in
            let udp = try UDPPacket(checking: raw)
            #expect(udp.bytes.count == 17 && udp.payload.count == 9)
        }
        #expect(try parse(b) == sample)
    }

    @Test func natRewriteKeepsChecksumValid() throws {
        var b = sampleBytes()
        try b.withUnsafeMutableBytes { raw in
            let udp = try MutableUDPPacket(checking: raw)
            udp.setSourcePort(61000)
            udp.updateChecksum(old: UInt16(40000), new: UInt16(61000))
            udp.updateChecksum(old: hostA.rawValue, new: IPv4Address(192, 0, 2, 1).rawValue)
            #expect(udp.packet.verifyChecksum(source: IPv4Address(192, 0, 2, 1), destination: hostB))
            udp.setDestinationPort(9)
            udp.fillChecksum(source: hostA, destination: hostB)
            #expect(udp.packet.verifyChecksum(source: hostA, destination: hostB))
            #expect(udp.packet.destinationPort == 9)
        }
    }
}
