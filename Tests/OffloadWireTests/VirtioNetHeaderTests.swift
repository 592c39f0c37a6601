import OffloadCore
import OffloadWire
import Testing

@Suite("virtio-net header")
struct VirtioNetHeaderTests {
    func parse(_ bytes: [UInt8]) throws(WireError) -> VirtioNetHeader {
        try with(bytes) { raw throws(WireError) in try VirtioNetHeader(parsing: raw) }
    }

    @Test func layoutIsLittleEndian() throws {
        let h = VirtioNetHeader(flags: 1, gsoType: 1, headerLength: 66, gsoSize: 1448, checksumStart: 34, checksumOffset: 16)
        let b = emitting(VirtioNetHeader.size) { h.emit(into: $0) }
        #expect(b == [1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0])
        #expect(try parse(b) == h)
    }

    @Test func metadataRoundTrip() throws {
        let cases: [OffloadMetadata] = [
            .none,
            .partialChecksum(checksumStart: 34, checksumOffset: 16),
            .tcpSegmentation(segmentSize: 1448, headerLength: 66, checksumStart: 34, checksumOffset: 16),
            .udpSegmentation(segmentSize: 1000, headerLength: 42, checksumStart: 34, checksumOffset: 6),
        ]
        for m in cases {
            let h = VirtioNetHeader(m)
            let b = emitting(VirtioNetHeader.size) { h.emit(into: $0) }
            #expect(try parse(b).metadata() == m)
        }
    }

    @Test func truncated() {
        #expect(throws: WireError.truncated(format: .virtioNet, needed: 10, available: 9)) { try parse([UInt8](repeating: 0, count: 9)) }
    }

    @Test func gsoWithoutNeedsChecksum() {
        #expect(throws: WireError.badField(format: .virtioNet, field: "flags (GSO without NEEDS_CSUM)", value: 0)) {
            try VirtioNetHeader(flags: 0, gsoType: VirtioNetHeader.gsoTCPv4, gsoSize: 1448).metadata()
        }
    }

    @Test func gsoSizeZero() {
        #expect(throws: WireError.badField(format: .virtioNet, field: "gso_size", value: 0)) {
            try VirtioNetHeader(flags: 1, gsoType: VirtioNetHeader.gsoTCPv4, gsoSize: 0).metadata()
        }
    }

    @Test func unsupportedGSO() {
        #expect(throws: WireError.unsupported(format: .virtioNet, what: "gso_type 4")) {
            try VirtioNetHeader(flags: 1, gsoType: VirtioNetHeader.gsoTCPv6, gsoSize: 1400).metadata()
        }
    }
}
