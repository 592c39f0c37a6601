import Testing
import OffloadCore
import OffloadEngine
@testable import OffloadHost
import OffloadWire

/// B6 for frames whose TCP/UDP checksum a device finishes (from a virtio-net or
/// packet-socket link): the software's complete processing and the engine's completion
/// give the same bytes.
@Suite struct SoftwareRewriteTests {
    @Test(arguments: [IPProtocol.tcp, .udp])
    func partialChecksumFramesAreRewrittenAlike(proto: IPProtocol) throws {
        let source = IPv4Address(10, 1, 0, 2), destination = IPv4Address(10, 2, 0, 2)
        var frame = [UInt8](repeating: 0, count: 14 + 20 + 20 + 100)
        frame.withUnsafeMutableBytes { raw in
            EthernetRepr(destination: .local(2), source: .local(1), etherType: .ipv4).emit(into: raw)
            let l4Length = (proto == .tcp ? 20 : 8) + 100
            IPv4Repr(source: source, destination: destination, protocol: proto, payloadLength: l4Length)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
            let segment = UnsafeMutableRawBufferPointer(rebasing: raw[34..<(34 + l4Length)])
            if proto == .tcp {
                TCPRepr(sourcePort: 40000, destinationPort: 80, sequenceNumber: 9, acknowledgmentNumber: 1,
                        flags: .ack, windowSize: 500, payloadLength: 100)
                    .emit(into: segment, source: source, destination: destination, checksums: .partial)
            } else {
                UDPRepr(sourcePort: 40000, destinationPort: 53, payloadLength: 100)
                    .emit(into: segment, source: source, destination: destination, checksums: .partial)
            }
        }
        if proto == .udp { frame.removeLast(12) }
        let key = FlowKey(ingressPort: 0, protocol: proto.rawValue, source: source, destination: destination,
                          sourcePort: 40000, destinationPort: proto == .tcp ? 80 : 53)
        let forward = FlowAction.Forward(outputPort: 1, destinationMAC: .local(9), sourceMAC: .local(8),
                                         translatedSource: IPv4Address(192, 0, 2, 1), translatedSourcePort: 61000)
        var byEngine = frame, bySoftware = frame
        let outcome = byEngine.withUnsafeMutableBytes {
            FlowEntry(key: key, action: .forward(forward)).applyRewrite(to: $0, partialL4: true)
        }
        #expect(outcome == .rewritten)
        #expect(bySoftware.withUnsafeMutableBytes { SlowPath.rewrite($0, forward, partialL4: true) })
        #expect(byEngine == bySoftware)
        // Finished as a device would, the checksum verifies.
        let at = proto == .tcp ? 34 + 16 : 34 + 6
        bySoftware.withUnsafeMutableBytes { _ = OffloadMetadata.finishChecksum(in: $0, start: 34, offset: at - 34) }
        try bySoftware.withUnsafeBytes { raw in
            let ip = try IPv4Packet(checking: try EthernetFrame(checking: raw).payload)
            if proto == .tcp {
                #expect(try TCPPacket(checking: ip.payload).verifyChecksum(source: ip.source, destination: ip.destination))
            } else {
                #expect(try UDPPacket(checking: ip.payload).verifyChecksum(source: ip.source, destination: ip.destination))
            }
        }
    }
}
