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

    /// The key is stored packed: each field's setter changes that field and no other.
    @Test func eachFieldSetsOnlyItself() {
        var rng = SeededRandom(seed: 31)
        func random16() -> UInt16 { UInt16(truncatingIfNeeded: rng.next()) }
        func randomAddress() -> IPv4Address { IPv4Address(rawValue: UInt32(truncatingIfNeeded: rng.next())) }
        for _ in 0..<500 {
            let old = FlowKey(ingressPort: random16(), protocol: UInt8(truncatingIfNeeded: rng.next()), source: randomAddress(),
                              destination: randomAddress(), sourcePort: random16(), destinationPort: random16())
            var k = old
            let port = random16(), proto = UInt8(truncatingIfNeeded: rng.next()), source = randomAddress()
            let destination = randomAddress(), sourcePort = random16(), destinationPort = random16()
            k.ingressPort = port
            #expect(k == FlowKey(ingressPort: port, protocol: old.protocol, source: old.source, destination: old.destination,
                                 sourcePort: old.sourcePort, destinationPort: old.destinationPort))
            k.protocol = proto
            k.source = source
            #expect(k == FlowKey(ingressPort: port, protocol: proto, source: source, destination: old.destination,
                                 sourcePort: old.sourcePort, destinationPort: old.destinationPort))
            k.destination = destination
            k.sourcePort = sourcePort
            #expect(k.destinationPort == old.destinationPort)
            k.destinationPort = destinationPort
            #expect(k == FlowKey(ingressPort: port, protocol: proto, source: source, destination: destination,
                                 sourcePort: sourcePort, destinationPort: destinationPort))
            #expect((k.ingressPort, k.protocol, k.source, k.destination, k.sourcePort, k.destinationPort)
                    == (port, proto, source, destination, sourcePort, destinationPort))
        }
    }

    /// A frame's key, read with two wide loads, holds the fields the headers carry; ports
    /// only for TCP and UDP; and there is no key for what is not unfragmented IPv4.
    @Test func framesGiveTheirHeadersFields() {
        var rng = SeededRandom(seed: 32)
        var checked = 0
        for _ in 0..<600 {
            let proto: UInt8 = [6, 17, 1, 47][Int(rng.next() % 4)]
            let options = Int(rng.next() % 3) * 4
            let l4 = 14 + 20 + options
            var frame = [UInt8](repeating: 0, count: l4 + 8)
            frame[12] = 0x08
            frame[14] = 0x45 + UInt8(options / 4)
            frame[23] = proto
            for i in 26..<34 { frame[i] = UInt8(truncatingIfNeeded: rng.next()) }
            for i in l4..<(l4 + 4) { frame[i] = UInt8(truncatingIfNeeded: rng.next()) }
            let port = UInt16(truncatingIfNeeded: rng.next())
            func word(_ at: Int) -> UInt32 { frame[at..<(at + 4)].reduce(0) { $0 << 8 | UInt32($1) } }
            let hasPorts = proto == 6 || proto == 17
            let expected = FlowKey(ingressPort: port, protocol: proto, source: IPv4Address(rawValue: word(26)),
                                   destination: IPv4Address(rawValue: word(30)),
                                   sourcePort: hasPorts ? UInt16(truncatingIfNeeded: word(l4) >> 16) : 0,
                                   destinationPort: hasPorts ? UInt16(truncatingIfNeeded: word(l4)) : 0)
            #expect(frame.withUnsafeBytes { FlowKey(frame: $0, port: port) } == expected)
            checked += 1
            var fragment = frame
            fragment[21] = 1  // fragment offset 8
            #expect(fragment.withUnsafeBytes { FlowKey(frame: $0, port: port) } == nil)
            if hasPorts {
                // Cut inside the ports: no key rather than a key with half a port.
                #expect(frame.withUnsafeBytes { FlowKey(frame: UnsafeRawBufferPointer(rebasing: $0[..<(l4 + 3)]), port: port) } == nil)
            }
        }
        #expect(checked == 600)
    }

    /// What the fast path's unchecked rewrite relies on: a frame has a key only if it is
    /// IPv4 (EtherType and version), with a header of at least 20 bytes that it holds whole,
    /// and not a fragment (neither more-fragments nor an offset).
    @Test func framesThatAreNotWholeUnfragmentedIPv4HaveNoKey() {
        var good = [UInt8](repeating: 0, count: 14 + 24 + 8)
        good[12] = 0x08
        good[14] = 0x46  // one option word
        good[23] = 17
        func key(_ f: [UInt8]) -> FlowKey? { f.withUnsafeBytes { FlowKey(frame: $0, port: 0) } }
        #expect(key(good) != nil)
        var f = good; f[12] = 0x86; f[13] = 0xdd
        #expect(key(f) == nil, "IPv6 EtherType")
        f = good; f[14] = 0x66
        #expect(key(f) == nil, "version 6")
        f = good; f[14] = 0x44
        #expect(key(f) == nil, "a 16-byte header")
        #expect(key(Array(good[..<36])) == nil, "cut inside the header's option")
        f = good; f[20] = 0x20
        #expect(key(f) == nil, "more fragments")
        f = good; f[21] = 0x01
        #expect(key(f) == nil, "a fragment offset")
        f = good; f[20] = 0x40
        #expect(key(f) != nil, "don't-fragment alone is no fragment")
    }

    /// The version and header length are tested together (`0x45...0x4f`): every value of
    /// that byte, in a frame long enough for the longest header and the ports.
    @Test func onlyVersion4WithAHeaderOf20BytesOrMoreHasAKey() {
        var frame = [UInt8](repeating: 0, count: 14 + 60 + 8)
        frame[12] = 0x08
        frame[23] = 17
        for byte in 0...255 {
            frame[14] = UInt8(byte)
            let hasKey = frame.withUnsafeBytes { FlowKey(frame: $0, port: 0) } != nil
            #expect(hasKey == (byte >> 4 == 4 && byte & 0xf >= 5), "version and length byte \(byte)")
        }
    }
}
