import OffloadCore
import OffloadWire
import Testing

@Suite("ARP")
struct ARPTests {
    func parse(_ bytes: [UInt8]) throws(WireError) -> ARPRepr {
        try with(bytes) { raw throws(WireError) in try ARPRepr.parse(ARPPacket(checking: raw)) }
    }

    @Test func fixtureRequestAndReply() throws {
        let frames = try fixtureFrames("ping.pcap")
        let request = try parseFrame(frames[0])
        #expect(request.ethernet == EthernetRepr(destination: .broadcast, source: macA, etherType: .arp))
        #expect(request.arp == ARPRepr(operation: .request, senderHardwareAddress: macA, senderProtocolAddress: hostA,
                                       targetHardwareAddress: .zero, targetProtocolAddress: hostB))
        let reply = try parseFrame(frames[1])
        #expect(reply.arp == ARPRepr(operation: .reply, senderHardwareAddress: macB, senderProtocolAddress: hostB,
                                     targetHardwareAddress: macA, targetProtocolAddress: hostA))
        #expect(reemit(request, over: frames[0]) == frames[0])
        #expect(reemit(reply, over: frames[1]) == frames[1])
    }

    var sample: ARPRepr {
        ARPRepr(operation: .reply, senderHardwareAddress: macB, senderProtocolAddress: hostB,
                targetHardwareAddress: macA, targetProtocolAddress: hostA)
    }

    func sampleBytes() -> [UInt8] {
        let repr = sample
        return emitting(repr.bufferLength) { repr.emit(into: $0) }
    }

    @Test func roundTripAndPaddingIgnored() throws {
        let bytes = sampleBytes()
        #expect(bytes.count == 28)
        #expect(try parse(bytes) == sample)
        // Frames pad ARP to 46 bytes: the view keeps only the 28.
        let padded = bytes + [UInt8](repeating: 0, count: 18)
        #expect(try with(padded) { raw throws(WireError) in try ARPPacket(checking: raw).bytes.count } == 28)
        #expect(try parse(padded) == sample)
    }

    @Test func truncated() {
        #expect(throws: WireError.truncated(format: .arp, needed: 28, available: 27)) {
            try parse(Array(sampleBytes().prefix(27)))
        }
    }

    @Test func wrongHardwareType() {
        var b = sampleBytes(); b[1] = 6
        #expect(throws: WireError.badField(format: .arp, field: "hardware type", value: 6)) { try parse(b) }
    }

    @Test func wrongProtocolType() {
        var b = sampleBytes(); b[2] = 0x86; b[3] = 0xdd
        #expect(throws: WireError.badField(format: .arp, field: "protocol type", value: 0x86dd)) { try parse(b) }
    }

    @Test func wrongHardwareLength() {
        var b = sampleBytes(); b[4] = 8
        #expect(throws: WireError.badField(format: .arp, field: "hardware length", value: 8)) { try parse(b) }
    }

    @Test func wrongProtocolLength() {
        var b = sampleBytes(); b[5] = 16
        #expect(throws: WireError.badField(format: .arp, field: "protocol length", value: 16)) { try parse(b) }
    }

    @Test func unknownOperation() {
        var b = sampleBytes(); b[7] = 3
        #expect(throws: WireError.badField(format: .arp, field: "operation", value: 3)) { try parse(b) }
    }
}
