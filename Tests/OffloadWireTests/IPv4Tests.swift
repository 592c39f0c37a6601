import OffloadCore
import OffloadWire
import Testing

@Suite("IPv4")
struct IPv4Tests {
    func parse(_ bytes: [UInt8], _ checksums: ChecksumPolicy = .verify) throws(WireError) -> IPv4Repr {
        try with(bytes) { raw throws(WireError) in try IPv4Repr.parse(IPv4Packet(checking: raw), checksums: checksums) }
    }

    var sample: IPv4Repr {
        IPv4Repr(source: hostA, destination: hostB, protocol: .udp, payloadLength: 8, timeToLive: 64,
                 typeOfService: 0, identification: 0x1234, dontFragment: true)
    }

    /// A valid 28-byte packet (header and 8 payload bytes).
    func sampleBytes() -> [UInt8] {
        let repr = sample
        return emitting(repr.bufferLength, payloadAt: 20, payload: [1, 2, 3, 4, 5, 6, 7, 8]) { repr.emit(into: $0, checksums: .verify) }
    }

    /// Sets a 16-bit field and fixes the header checksum, so only the field is wrong.
    func patched(_ bytes: [UInt8], at offset: Int, _ value: UInt16) -> [UInt8] {
        var b = bytes
        b[offset] = UInt8(value >> 8); b[offset + 1] = UInt8(value & 0xff)
        refreshChecksum(&b)
        return b
    }

    func refreshChecksum(_ b: inout [UInt8]) {
        let ihl = Int(b[0] & 0xf) * 4
        b[10] = 0; b[11] = 0
        let c = b.withUnsafeBytes { InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<min(ihl, $0.count)])) }
        b[10] = UInt8(c >> 8); b[11] = UInt8(c & 0xff)
    }

    @Test func fixtureFields() throws {
        let frame = try fixtureFrames("tcp.pcap")[0]
        try frame.withUnsafeBytes { raw in
            let ip = try IPv4Packet(checking: UnsafeRawBufferPointer(rebasing: raw[14...]))
            #expect(ip.version == 4)
            #expect(ip.headerLength == 20)
            #expect(ip.totalLength == 60)
            #expect(ip.identification == 34659)
            #expect(ip.dontFragment && !ip.moreFragments && ip.fragmentOffset == 0 && !ip.isFragment)
            #expect(ip.timeToLive == 64)
            #expect(ip.protocol == .tcp)
            #expect(ip.checksum == 0x9e90)
            #expect(ip.verifyChecksum)
            #expect(ip.source == hostA && ip.destination == hostB)
            #expect(ip.options.isEmpty)
            #expect(ip.payload.count == 40)
        }
    }

    @Test func roundTrip() throws {
        let bytes = sampleBytes()
        #expect(try parse(bytes) == sample)
        // Emit then parse for a few variations.
        for repr in [IPv4Repr(source: hostB, destination: hostA, protocol: .icmp, payloadLength: 0, timeToLive: 1,
                              typeOfService: 0xc0, identification: 0xffff, dontFragment: false),
                     IPv4Repr(source: .broadcast, destination: .any, protocol: IPProtocol(rawValue: 99), payloadLength: 1400)] {
            let b = emitting(repr.bufferLength) { repr.emit(into: $0, checksums: .verify) }
            #expect(try parse(b) == repr)
        }
    }

    @Test func emitIgnoreLeavesChecksumZero() throws {
        let repr = sample
        let b = emitting(repr.bufferLength) { repr.emit(into: $0, checksums: .ignore) }
        #expect(b[10] == 0 && b[11] == 0)
        #expect(throws: WireError.badChecksum(format: .ipv4)) { try parse(b) }
        #expect(try parse(b, .ignore) == repr)
        // The header checksum is never offloaded: .partial computes and verifies it.
        let p = emitting(repr.bufferLength) { repr.emit(into: $0, checksums: .partial) }
        #expect(p == sampleBytes().prefix(20) + [UInt8](repeating: 0, count: 8))
    }

    @Test func ethernetPaddingTrimmed() throws {
        let padded = sampleBytes() + [0, 0, 0, 0, 0, 0]
        #expect(try with(padded) { raw throws(WireError) in try IPv4Packet(checking: raw).payload.count } == 8)
        #expect(try parse(padded) == sample)
    }

    @Test func optionsAreSkipped() throws {
        // IHL 6: one word of options (NOP NOP NOP EOL).
        var b = sampleBytes()
        b.insert(contentsOf: [1, 1, 1, 0], at: 20)
        b[0] = 0x46
        b = patched(b, at: 2, 32)
        try b.withUnsafeBytes { raw in
            let ip = try IPv4Packet(checking: raw)
            #expect(ip.headerLength == 24)
            #expect(Array(ip.options) == [1, 1, 1, 0])
            #expect(Array(ip.payload) == [1, 2, 3, 4, 5, 6, 7, 8])
        }
        #expect(try parse(b) == sample)
    }

    @Test func truncated() {
        #expect(throws: WireError.truncated(format: .ipv4, needed: 20, available: 19)) { try parse(Array(sampleBytes().prefix(19))) }
    }

    @Test func versionNot4() {
        var b = sampleBytes(); b[0] = 0x65
        #expect(throws: WireError.badField(format: .ipv4, field: "version", value: 6)) { try parse(b) }
    }

    @Test func headerLengthBelow5() {
        var b = sampleBytes(); b[0] = 0x44
        #expect(throws: WireError.badHeaderLength(format: .ipv4, value: 16)) { try parse(b) }
    }

    @Test func headerLengthBeyondTotalLength() {
        // IHL 6 (24 bytes) but total length 22.
        var b = sampleBytes(); b[0] = 0x46
        b = patched(b, at: 2, 22)
        #expect(throws: WireError.badHeaderLength(format: .ipv4, value: 24)) { try parse(b) }
    }

    @Test func headerLengthBeyondBytes() {
        var b = sampleBytes(); b[0] = 0x4f
        #expect(throws: WireError.truncated(format: .ipv4, needed: 60, available: 28)) { try parse(b) }
    }

    @Test func totalLengthBeyondBytes() {
        let b = patched(sampleBytes(), at: 2, 29)
        #expect(throws: WireError.badLength(format: .ipv4, field: "total length", value: 29)) { try parse(b) }
    }

    @Test func badHeaderChecksum() {
        var b = sampleBytes(); b[8] = 63 // TTL changed, checksum not updated
        #expect(throws: WireError.badChecksum(format: .ipv4)) { try parse(b) }
        #expect(throws: WireError.badChecksum(format: .ipv4)) { try parse(b, .partial) }
        #expect((try? parse(b, .ignore))?.timeToLive == 63)
    }

    @Test func moreFragmentsUnsupported() {
        let b = patched(sampleBytes(), at: 6, 0x2000)
        #expect(throws: WireError.unsupported(format: .ipv4, what: "fragment (more fragments)")) { try parse(b) }
    }

    @Test func fragmentOffsetUnsupported() {
        let b = patched(sampleBytes(), at: 6, 0x0003)
        #expect(throws: WireError.unsupported(format: .ipv4, what: "fragment (offset 24)")) { try parse(b) }
    }

    @Test func mutableRewritesKeepChecksumValid() throws {
        var b = sampleBytes()
        try b.withUnsafeMutableBytes { raw in
            let ip = try MutableIPv4Packet(checking: raw)
            ip.decrementTimeToLive()
            #expect(ip.packet.timeToLive == 63)
            #expect(ip.packet.verifyChecksum)
            ip.rewriteSource(IPv4Address(192, 168, 1, 7))
            ip.rewriteDestination(IPv4Address(8, 8, 4, 4))
            #expect(ip.packet.verifyChecksum)
            #expect(ip.packet.source == IPv4Address(192, 168, 1, 7))
            ip.setTimeToLive(0)
            ip.fillChecksum()
            #expect(!ip.decrementTimeToLive())
            #expect(ip.packet.timeToLive == 0 && ip.packet.verifyChecksum)
            ip.setTimeToLive(5)
            #expect(!ip.packet.verifyChecksum)
            ip.fillChecksum()
            #expect(ip.packet.verifyChecksum)
            ip.payload[0] = 0xaa
        }
        #expect(b[20] == 0xaa)
        #expect(try parse(b).destination == IPv4Address(8, 8, 4, 4))
    }
}
