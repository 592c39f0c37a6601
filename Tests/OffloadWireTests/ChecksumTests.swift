import OffloadCore
import OffloadWire
import Testing

@Suite("Checksums and partial offload")
struct ChecksumTests {
    @Test func policyFromMetadata() {
        #expect(ChecksumPolicy(.none) == .verify)
        #expect(ChecksumPolicy(.partialChecksum(checksumStart: 34, checksumOffset: 6)) == .partial)
        #expect(ChecksumPolicy(.tcpSegmentation(segmentSize: 1, headerLength: 2, checksumStart: 3, checksumOffset: 4)) == .partial)
    }

    /// Every fixture frame re-emitted with partial L4 checksums (as a TSO/checksum-offload
    /// sender hands them to a device), then completed as capture does, is the captured frame.
    @Test func partialThenCompleteGivesCapturedFrames() throws {
        for name in ["tcp.pcap", "udp.pcap", "unreachable.pcap"] {
            for frame in try fixtureFrames(name) {
                let parsed = try parseFrame(frame)
                guard parsed.tcp != nil || parsed.udp != nil else { continue }
                var partial = reemit(parsed, over: frame, checksums: .partial)
                #expect(partial != frame)
                #expect(try parseFrame(partial, checksums: .partial) == parsed)
                #expect(throws: WireError.self) { try parseFrame(partial, checksums: .verify) }
                let start = 14 + 20
                let offset = parsed.tcp != nil ? TCPPacket.Field.checksum : UDPPacket.Field.checksum
                try partial.withUnsafeMutableBytes { raw in try completePartialChecksum(frame: raw, start: start, offset: offset) }
                #expect(partial == frame)
            }
        }
    }

    @Test func completePartialChecksumRejectsFieldOutsideFrame() {
        var b = [UInt8](repeating: 0, count: 40)
        b.withUnsafeMutableBytes { raw in
            #expect(throws: WireError.self) { try completePartialChecksum(frame: raw, start: 34, offset: 16) }
            #expect(throws: WireError.self) { try completePartialChecksum(frame: raw, start: 39, offset: 0) }
            #expect(throws: WireError.self) { try completePartialChecksum(frame: raw, start: -1, offset: 0) }
            #expect(throws: Never.self) { try completePartialChecksum(frame: raw, start: 20, offset: 18) }
        }
    }

    @Test func ignoreLeavesL4ChecksumsZero() throws {
        for name in ["tcp.pcap", "udp.pcap", "ping.pcap"] {
            for frame in try fixtureFrames(name) {
                let parsed = try parseFrame(frame)
                guard parsed.ipv4 != nil else { continue }
                let zeroed = reemit(parsed, over: frame, checksums: .ignore)
                let field = 14 + 20 + (parsed.tcp != nil ? 16 : parsed.udp != nil ? 6 : 2)
                #expect(zeroed[field] == 0 && zeroed[field + 1] == 0)
                #expect(zeroed[24] == 0 && zeroed[25] == 0) // IPv4 header checksum
                #expect(try parseFrame(zeroed, checksums: .ignore) == parsed)
            }
        }
    }
}
