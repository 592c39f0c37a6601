import Testing
import OffloadCore
import OffloadEngine

@Suite struct FlowKeyTests {
    @Test func packedKeysDifferWhenAnyFieldDiffers() {
        let base = FlowKey(ingressPort: 1, protocol: 17, source: IPv4Address(10, 0, 0, 1),
                           destination: IPv4Address(10, 0, 0, 2), sourcePort: 1000, destinationPort: 2000)
        var variants = [base]
        var k = base; k.ingressPort = 2; variants.append(k)
        k = base; k.protocol = 6; variants.append(k)
        k = base; k.source = IPv4Address(10, 0, 0, 3); variants.append(k)
        k = base; k.destination = IPv4Address(10, 0, 0, 3); variants.append(k)
        k = base; k.sourcePort = 1001; variants.append(k)
        k = base; k.destinationPort = 2001; variants.append(k)
        let packed = Set(variants.map { "\($0.packed.0),\($0.packed.1)" })
        #expect(packed.count == variants.count)
    }
}
