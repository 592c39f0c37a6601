import OffloadCore
import OffloadWire
import Testing

/// Every frame of every fixture through the whole stack, checksums verified.
@Suite("Fixtures")
struct FixtureTests {
    static let files = ["ping.pcap", "tcp.pcap", "udp.pcap", "udp-nano.pcap", "unreachable.pcap"]

    @Test(arguments: files)
    func everyFrameParsesAndReemitsIdentically(_ name: String) throws {
        let frames = try fixtureFrames(name)
        #expect(!frames.isEmpty)
        for frame in frames {
            let parsed = try parseFrame(frame)
            #expect(parsed.arp != nil || parsed.ipv4 != nil)
            if let ip = parsed.ipv4 {
                #expect(Set([ip.source, ip.destination]) == Set([hostA, hostB]))
                #expect(ip.bufferLength == frame.count - 14)
            }
            #expect(reemit(parsed, over: frame) == frame)
        }
    }

    /// Flipping any single bit of an IPv4 frame's IP header or L4 message makes the stack
    /// throw a typed error or (for bits no checksum covers, none here) parse differently;
    /// it never traps.
    @Test(arguments: files)
    func everySingleBitFlipIsCaught(_ name: String) throws {
        for frame in try fixtureFrames(name) {
            let original = try parseFrame(frame)
            guard original.ipv4 != nil else { continue }
            for byte in 14..<frame.count {
                for bit in 0..<8 {
                    var b = frame
                    b[byte] ^= 1 << bit
                    let result = Result { try parseFrame(b) }
                    if case .success(let p) = result {
                        Issue.record("\(name): flipping bit \(bit) of byte \(byte) went unnoticed: \(p)")
                    }
                }
            }
        }
    }

    /// Every prefix of every frame either parses or throws a WireError.
    @Test(arguments: files)
    func everyTruncationIsTyped(_ name: String) throws {
        for frame in try fixtureFrames(name) {
            for n in 0..<frame.count {
                do {
                    _ = try parseFrame(Array(frame.prefix(n)))
                } catch is WireError {
                } catch {
                    Issue.record("untyped error \(error)")
                }
            }
        }
    }
}

/// Seeded random corruption: mutated and truncated frames, parsed with checksums verified
/// and ignored (so corrupted options, lengths and quotes reach the deeper parsers), only
/// ever parse or throw a WireError. A trap would crash the test run.
@Suite("Corruption")
struct CorruptionTests {
    struct XorShift {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return state
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    @Test(arguments: FixtureTests.files)
    func randomMutationsNeverTrap(_ name: String) throws {
        var rng = XorShift(state: 0x9e37_79b9_7f4a_7c15 ^ UInt64(name.utf8.count))
        var parsedIgnoring = 0
        for frame in try fixtureFrames(name) {
            for _ in 0..<500 {
                var b = frame
                for _ in 0...rng.below(4) {
                    // Bias towards header bytes, where the lengths and options are.
                    let i = rng.below(4) == 0 ? rng.below(b.count) : 14 + rng.below(min(b.count - 14, 64))
                    b[i] = UInt8(truncatingIfNeeded: rng.next())
                }
                if rng.below(4) == 0 { b = Array(b.prefix(rng.below(b.count + 1))) }
                for policy in [ChecksumPolicy.verify, .partial, .ignore] {
                    do {
                        _ = try parseFrame(b, checksums: policy)
                        if policy == .ignore { parsedIgnoring += 1 }
                    } catch is WireError {
                    } catch {
                        Issue.record("untyped error \(error)")
                    }
                }
            }
        }
        #expect(parsedIgnoring > 0)
    }

    @Test func randomBytesThroughEveryView() {
        var rng = XorShift(state: 42)
        for _ in 0..<5000 {
            let b = (0..<rng.below(80)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            b.withUnsafeBytes { raw in
                _ = try? ARPRepr.parse(ARPPacket(checking: raw))
                _ = try? IPv4Repr.parse(IPv4Packet(checking: raw), checksums: .ignore)
                _ = try? IPv4Packet(checkingHeader: raw).payload
                _ = try? ICMPv4Repr.parse(ICMPv4Packet(checking: raw), checksums: .ignore)
                _ = try? UDPRepr.parse(UDPPacket(checking: raw), source: hostA, destination: hostB, checksums: .ignore)
                _ = try? TCPRepr.parse(TCPPacket(checking: raw), source: hostA, destination: hostB, checksums: .ignore)
                if let p = try? RTPPacket(checking: raw) {
                    _ = RTPRepr.parse(p)
                    _ = p.payload
                }
                if var reader = try? PcapReader(raw) { while (try? reader.next()) != nil {} }
                _ = try? VirtioNetHeader(parsing: raw).metadata()
            }
        }
    }
}
