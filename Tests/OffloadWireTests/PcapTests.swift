import OffloadCore
import OffloadWire
import Testing

@Suite("pcap")
struct PcapTests {
    func records(_ file: [UInt8]) throws(WireError) -> [(PcapRecordHeader, [UInt8], Int64)] {
        try with(file) { raw throws(WireError) in
            var reader = try PcapReader(raw)
            var out: [(PcapRecordHeader, [UInt8], Int64)] = []
            while let r = try reader.next() { out.append((r.header, Array(r.data), r.nanosecondsSinceEpoch)) }
            return out
        }
    }

    /// The same file with every header field byte-swapped (a big-endian writer's file).
    func byteSwapped(_ file: [UInt8]) throws -> [UInt8] {
        var out = file
        func swap(_ o: Int, _ n: Int) { out[o..<(o + n)].reverse() }
        swap(0, 4); swap(4, 2); swap(6, 2); swap(8, 4); swap(12, 4); swap(16, 4); swap(20, 4)
        var o = 24
        while o < out.count {
            let caplen = Int(file[o + 8]) | Int(file[o + 9]) << 8 | Int(file[o + 10]) << 16 | Int(file[o + 11]) << 24
            for k in 0..<4 { swap(o + 4 * k, 4) }
            o += 16 + caplen
        }
        return out
    }

    @Test func fixtureMicroseconds() throws {
        let file = try fixtureBytes("tcp.pcap")
        let header = try with(file) { raw throws(WireError) in try PcapFileHeader.parse(raw) }
        #expect(header == PcapFileHeader(nanosecondResolution: false, bigEndian: false, snapLength: 262_144, linkType: 1))
        let recs = try records(file)
        #expect(recs.count == 8)
        #expect(recs.map { $0.1.count } == [74, 74, 66, 80, 66, 66, 66, 66])
        #expect(recs.allSatisfy { Int($0.0.capturedLength) == $0.1.count && $0.0.originalLength == $0.0.capturedLength })
        #expect(recs.allSatisfy { $0.0.fraction < 1_000_000 })
        #expect(zip(recs, recs.dropFirst()).allSatisfy { $0.2 <= $1.2 })
    }

    @Test func fixtureNanosecondsMatchesMicroseconds() throws {
        let micro = try fixtureBytes("udp.pcap")
        let nano = try fixtureBytes("udp-nano.pcap")
        #expect(try with(nano) { raw throws(WireError) in try PcapFileHeader.parse(raw) }.nanosecondResolution)
        let a = try records(micro), b = try records(nano)
        #expect(a.count == 3 && b.count == 3)
        for (x, y) in zip(a, b) {
            #expect(x.1 == y.1)
            #expect(x.2 == y.2)
            #expect(y.0.fraction == x.0.fraction * 1000)
        }
    }

    @Test func bigEndianFilesRead() throws {
        for name in ["ping.pcap", "udp-nano.pcap"] {
            let file = try fixtureBytes(name)
            let swapped = try byteSwapped(file)
            #expect(swapped != file)
            let header = try with(swapped) { raw throws(WireError) in try PcapFileHeader.parse(raw) }
            #expect(header.bigEndian)
            let a = try records(file), b = try records(swapped)
            #expect(a.map(\.0) == b.map(\.0))
            #expect(a.map(\.1) == b.map(\.1))
        }
    }

    @Test func emitThenReadBack() throws {
        for nano in [false, true] {
            let frames: [[UInt8]] = [[1, 2, 3], [], Array(repeating: 0xab, count: 60)]
            let fh = PcapFileHeader(nanosecondResolution: nano, snapLength: 65535)
            var file = emitting(fh.bufferLength) { fh.emit(into: $0) }
            for (i, f) in frames.enumerated() {
                let rh = PcapRecordHeader(nanosecondsSinceEpoch: 1_700_000_000_123_456_789 + Int64(i), length: f.count,
                                          nanosecondResolution: nano)
                file += emitting(rh.bufferLength, payloadAt: 16, payload: f) { rh.emit(into: $0) }
            }
            #expect(Array(file[0..<4]) == (nano ? [0x4d, 0x3c, 0xb2, 0xa1] : [0xd4, 0xc3, 0xb2, 0xa1]))
            #expect(try with(file) { raw throws(WireError) in try PcapFileHeader.parse(raw) } == fh)
            let recs = try records(file)
            #expect(recs.map(\.1) == frames)
            #expect(recs[0].0.seconds == 1_700_000_000)
            #expect(recs[0].0.fraction == (nano ? 123_456_789 : 123_456))
            #expect(recs[2].2 == (nano ? 1_700_000_000_123_456_791 : 1_700_000_000_123_456_000))
        }
    }

    @Test func emptyFileHasNoRecords() throws {
        let fh = PcapFileHeader()
        let file = emitting(fh.bufferLength) { fh.emit(into: $0) }
        #expect(try records(file).isEmpty)
    }

    @Test func truncatedFinalRecordData() throws {
        let file = try fixtureBytes("udp.pcap")
        // The last record is 66 bytes of frame after its 16-byte header; cut 5 of them.
        #expect(throws: WireError.truncated(format: .pcap, needed: 16 + 66, available: 16 + 61)) {
            try records(Array(file.dropLast(5)))
        }
        // The records before it are still read one by one.
        var seen = 0
        #expect(throws: WireError.self) {
            try with(Array(file.dropLast(5))) { raw throws(WireError) in
                var reader = try PcapReader(raw)
                while try reader.next() != nil { seen += 1 }
            }
        }
        #expect(seen == 2)
    }

    @Test func truncatedFinalRecordHeader() throws {
        let file = try fixtureBytes("udp.pcap")
        let firstTwo = 24 + (16 + 51) + (16 + 62)
        #expect(throws: WireError.truncated(format: .pcap, needed: 16, available: 10)) {
            try records(Array(file.prefix(firstTwo + 10)))
        }
    }

    @Test func truncatedFileHeader() {
        #expect(throws: WireError.truncated(format: .pcap, needed: 24, available: 23)) {
            try records([UInt8](repeating: 0, count: 23))
        }
    }

    @Test func badMagic() throws {
        var file = try fixtureBytes("udp.pcap")
        file[0] = 0x0a; file[1] = 0x0d; file[2] = 0x0d; file[3] = 0x0a // pcapng
        #expect(throws: WireError.badField(format: .pcap, field: "magic", value: 0x0a0d_0d0a)) { try records(file) }
    }

    @Test func badVersion() throws {
        var file = try fixtureBytes("udp.pcap")
        file[4] = 1
        #expect(throws: WireError.badField(format: .pcap, field: "major version", value: 1)) { try records(file) }
    }

    @Test func nonEthernetLinkTypeUnsupported() throws {
        var file = try fixtureBytes("udp.pcap")
        file[20] = 101 // LINKTYPE_RAW
        #expect(throws: WireError.unsupported(format: .pcap, what: "link type 101")) { try records(file) }
    }

    @Test func capturedLengthAboveOriginal() throws {
        var file = try fixtureBytes("udp.pcap")
        file[24 + 12] = 50 // original length 50 < captured 51
        #expect(throws: WireError.badLength(format: .pcap, field: "captured length", value: 51)) { try records(file) }
    }

    @Test func absurdCapturedLength() throws {
        var file = try fixtureBytes("udp.pcap")
        file[24 + 11] = 0x7f; file[24 + 15] = 0x7f
        #expect(throws: WireError.badLength(format: .pcap, field: "captured length", value: 0x7f00_0033)) { try records(file) }
    }
}
