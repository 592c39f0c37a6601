import Testing
import OffloadCore
import OffloadWire
import OffloadEngine

/// A valid Ethernet + IPv4 + UDP frame with `payload` bytes, full checksums.
func udpFrame(payload: Int = 32, ttl: UInt8 = 64) -> [UInt8] {
    let src = IPv4Address(10, 1, 0, 1), dst = IPv4Address(10, 2, 0, 1)
    var frame = [UInt8](repeating: 0, count: 14 + 20 + 8 + payload)
    frame.withUnsafeMutableBytes { raw in
        EthernetRepr(destination: .local(2), source: .local(1), etherType: .ipv4).emit(into: raw)
        IPv4Repr(source: src, destination: dst, protocol: .udp, payloadLength: 8 + payload, timeToLive: ttl)
            .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
        for i in 0..<payload { raw[42 + i] = UInt8(truncatingIfNeeded: i) }
        UDPRepr(sourcePort: 5000, destinationPort: 6000, payloadLength: payload)
            .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[34...]), source: src, destination: dst, checksums: .verify)
    }
    return frame
}

/// A valid TCP segment frame (ACK with 100 bytes of data).
func tcpFrame(payload: Int = 100) -> [UInt8] {
    let src = IPv4Address(10, 1, 0, 1), dst = IPv4Address(10, 2, 0, 1)
    var frame = [UInt8](repeating: 0, count: 14 + 20 + 20 + payload)
    frame.withUnsafeMutableBytes { raw in
        EthernetRepr(destination: .local(2), source: .local(1), etherType: .ipv4).emit(into: raw)
        IPv4Repr(source: src, destination: dst, protocol: .tcp, payloadLength: 20 + payload)
            .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
        for i in 0..<payload { raw[54 + i] = UInt8(truncatingIfNeeded: i * 3) }
        TCPRepr(sourcePort: 40000, destinationPort: 80, sequenceNumber: 1, acknowledgmentNumber: 1, flags: .ack,
                windowSize: 1000, payloadLength: payload)
            .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[34...]), source: src, destination: dst, checksums: .verify)
    }
    return frame
}

/// A broadcast ARP request from 10.1.0.1 for 10.1.0.2, padded to 60 bytes.
func arpRequestFrame() -> [UInt8] {
    var arp = [UInt8](repeating: 0, count: 60)
    arp.withUnsafeMutableBytes { raw in
        EthernetRepr(destination: .broadcast, source: .local(1), etherType: .arp).emit(into: raw)
        ARPRepr(operation: .request, senderHardwareAddress: .local(1), senderProtocolAddress: IPv4Address(10, 1, 0, 1),
                targetHardwareAddress: .zero, targetProtocolAddress: IPv4Address(10, 1, 0, 2))
            .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]))
    }
    return arp
}

/// Recomputes the IPv4 header checksum after a test changed a header field.
func refillIPChecksum(_ frame: inout [UInt8]) {
    frame[24] = 0; frame[25] = 0
    let ihl = Int(frame[14] & 0xf) * 4
    let c = frame.withUnsafeBytes { InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: $0[14..<14 + ihl])) }
    frame[24] = UInt8(c >> 8); frame[25] = UInt8(c & 0xff)
}

@Suite struct CompatibilityTestTests {
    let test = CompatibilityTest(mtu: 1500)

    func failure(_ frame: [UInt8], _ metadata: OffloadMetadata = .none) -> CompatibilityFailure? {
        frame.withUnsafeBytes { raw in
            do throws(CompatibilityFailure) {
                try test.check(raw, metadata: metadata)
                return nil
            } catch { return error }
        }
    }

    @Test func validFramesPass() {
        #expect(failure(udpFrame()) == nil)
        #expect(failure(tcpFrame()) == nil)
        #expect(failure(udpFrame(payload: 2)) == nil, "short frame")
        var padded = udpFrame(payload: 2)
        padded += [UInt8](repeating: 0, count: 60 - padded.count)
        #expect(failure(padded) == nil, "minimum-size frame with Ethernet padding")
        var noSum = udpFrame()
        noSum[40] = 0; noSum[41] = 0
        #expect(failure(noSum) == nil, "UDP without a checksum")
    }

    @Test func eachMalformationHasItsReason() {
        var f = udpFrame(); f[12] = 0x86; f[13] = 0xdd
        #expect(failure(f) == .unsupportedEtherType)
        #expect(failure(Array(udpFrame()[0..<10])) == .truncated)
        #expect(failure(Array(udpFrame()[0..<30])) == .truncated)
        f = udpFrame(); f[14] = 0x65; refillIPChecksum(&f)
        #expect(failure(f) == .badIPVersion)
        f = udpFrame(); f[14] = 0x44
        #expect(failure(f) == .badHeaderLength)
        f = udpFrame(); f[17] &+= 10; refillIPChecksum(&f)
        #expect(failure(f) == .totalLengthMismatch, "total length beyond the frame")
        f = udpFrame() + [UInt8](repeating: 0, count: 40)
        #expect(failure(f) == .totalLengthMismatch, "bytes after the packet that are not padding")
        f = udpFrame(); f[22] = 63
        #expect(failure(f) == .badHeaderChecksum)
        f = udpFrame(ttl: 0)
        #expect(failure(f) == .ttlExpired)
        f = udpFrame(); f[20] = 0x20; refillIPChecksum(&f)
        #expect(failure(f) == .fragment)
        f = udpFrame(); f[39] &+= 1
        #expect(failure(f) == .badL4Length, "UDP length disagrees with the IP payload")
        f = tcpFrame(); f[46] = 0x40
        #expect(failure(f) == .badL4Length, "TCP data offset below 5")
        f = udpFrame(); f[50] ^= 0xff
        #expect(failure(f) == .badL4Checksum)
        f = tcpFrame(); f[60] ^= 0xff
        #expect(failure(f) == .badL4Checksum)
        #expect(failure(udpFrame(payload: 1500)) == .oversize)
    }

    /// The software's own ARP requests and answers pass; a malformed ARP packet does not.
    @Test func arpIsCheckedAsARP() {
        let arp = arpRequestFrame()
        #expect(failure(arp) == nil)
        var f = arp; f[21] = 9
        #expect(failure(f) == .malformedARP, "operation neither request nor reply")
        f = arp; f[18] = 8
        #expect(failure(f) == .malformedARP, "hardware length not 6")
        #expect(failure(Array(arp[0..<30])) == .malformedARP, "truncated")
        // ARP has no checksum a device could finish (it would write over the hardware type),
        // and fits a frame.
        #expect(failure(arp, .partialChecksum(checksumStart: 14, checksumOffset: 0)) == .badOffloadMetadata)
        #expect(failure(arp + [UInt8](repeating: 0, count: 1500)) == .oversize)
    }

    @Test func ipOptionsAreRefused() {
        // Insert 4 bytes of NOP options: IHL 6.
        var f = udpFrame()
        f.insert(contentsOf: [1, 1, 1, 0], at: 34)
        f[14] = 0x46
        let total = (Int(f[16]) << 8 | Int(f[17])) + 4
        f[16] = UInt8(total >> 8); f[17] = UInt8(total & 0xff)
        refillIPChecksum(&f)
        #expect(failure(f) == .ipOptions)
    }

    @Test func offloadMetadataIsValidatedNotTrusted() {
        // A partial checksum at the right place passes without verifying the sum...
        var f = udpFrame(); f[40] = 0x12; f[41] = 0x34
        #expect(failure(f, .partialChecksum(checksumStart: 34, checksumOffset: 6)) == nil)
        // ...but pointing anywhere else fails.
        #expect(failure(f, .partialChecksum(checksumStart: 34, checksumOffset: 16)) == .badOffloadMetadata)
        #expect(failure(f, .partialChecksum(checksumStart: 14, checksumOffset: 6)) == .badOffloadMetadata)
        // TSO: only TCP, with a sane segment size; then a large packet is fine.
        let tso = OffloadMetadata.tcpSegmentation(segmentSize: 1448, headerLength: 54, checksumStart: 34, checksumOffset: 16)
        #expect(failure(tcpFrame(payload: 8000), tso) == nil)
        #expect(failure(udpFrame(payload: 3000), tso) == .badOffloadMetadata)
        let huge = OffloadMetadata.tcpSegmentation(segmentSize: 9000, headerLength: 54, checksumStart: 34, checksumOffset: 16)
        #expect(failure(tcpFrame(payload: 8000), huge) == .badOffloadMetadata)
        #expect(failure(tcpFrame(payload: 8000)) == .oversize)
        // UDP GSO likewise: only UDP, each datagram (headers and segment) within the MTU.
        func uso(_ size: UInt16) -> OffloadMetadata {
            .udpSegmentation(segmentSize: size, headerLength: 42, checksumStart: 34, checksumOffset: 6)
        }
        #expect(failure(udpFrame(payload: 3000), uso(1472)) == nil)
        #expect(failure(udpFrame(payload: 3000), uso(1473)) == .badOffloadMetadata)
        #expect(failure(tcpFrame(payload: 3000), uso(1000)) == .badOffloadMetadata)
    }

    /// A TSO super-segment's segment size leaves room for its headers as they are: with 12
    /// bytes of TCP options (timestamps), 1448 is the most that fits a 1500-byte MTU.
    @Test func segmentSizeCountsTheTCPOptions() {
        var f = tcpFrame(payload: 8000)
        // Twelve bytes of options in place of the first twelve of payload (NOP, NOP, and a
        // timestamp option): the TCP header grows to 32 bytes; the checksum is partial.
        f.replaceSubrange(54..<66, with: [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0])
        f[46] = 0x80
        func tso(_ size: UInt16) -> OffloadMetadata {
            .tcpSegmentation(segmentSize: size, headerLength: 66, checksumStart: 34, checksumOffset: 16)
        }
        #expect(failure(f, tso(1448)) == nil)
        #expect(failure(f, tso(1460)) == .badOffloadMetadata, "1460 + 52 bytes of headers is 1512 bytes a frame")
    }
}
