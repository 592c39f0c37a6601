import OffloadCore
import OffloadWire
import Testing

@Suite("Ethernet")
struct EthernetTests {
    @Test func fixtureFields() throws {
        let frames = try fixtureFrames("tcp.pcap")
        try frames[0].withUnsafeBytes { raw in
            let eth = try EthernetFrame(checking: raw)
            #expect(eth.destination == macB)
            #expect(eth.source == macA)
            #expect(eth.etherType == .ipv4)
            #expect(eth.payload.count == frames[0].count - 14)
            #expect(eth.payload.first == 0x45)
        }
    }

    @Test func roundTrip() {
        let repr = EthernetRepr(destination: .broadcast, source: macA, etherType: .arp)
        let bytes = emitting(repr.bufferLength(payloadLength: 4), payloadAt: 14, payload: [1, 2, 3, 4]) { repr.emit(into: $0) }
        #expect(bytes == hex("ffffffffffff ba19aa7dfb71 0806 01020304"))
        let parsed = try? with(bytes) { raw throws(WireError) in EthernetRepr.parse(try EthernetFrame(checking: raw)) }
        #expect(parsed == repr)
    }

    @Test func mutableRewrite() throws {
        var bytes = try fixtureFrames("ping.pcap")[2]
        try bytes.withUnsafeMutableBytes { raw in
            let eth = try MutableEthernetFrame(checking: raw)
            eth.setDestination(.broadcast)
            eth.setSource(macB)
            #expect(eth.frame.destination == .broadcast)
            #expect(eth.frame.source == macB)
            #expect(eth.frame.etherType == .ipv4)
        }
    }

    @Test func truncated() {
        #expect(throws: WireError.truncated(format: .ethernet, needed: 14, available: 13)) {
            try with([UInt8](repeating: 0, count: 13)) { raw throws(WireError) in _ = try EthernetFrame(checking: raw) }
        }
        #expect(throws: WireError.truncated(format: .ethernet, needed: 14, available: 0)) {
            try with([]) { raw throws(WireError) in _ = try EthernetFrame(checking: raw) }
        }
    }
}
