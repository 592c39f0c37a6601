import Testing
import COffloadShim
@testable import OffloadCore

/// The plain RFC 1071 loop, byte by byte, as the reference.
func referenceChecksum(_ bytes: [UInt8]) -> UInt16 {
    var sum: UInt32 = 0
    var i = 0
    while i + 1 < bytes.count {
        sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
        i += 2
    }
    if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
    while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
    return ~UInt16(sum)
}

@Suite struct InternetChecksumTests {
    @Test func rfc1071Example() {
        // RFC 1071 section 3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2 (checksum 0x220d).
        let bytes: [UInt8] = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]
        #expect(bytes.withUnsafeBytes { InternetChecksum.checksum($0) } == 0x220d)
    }

    @Test func realIPv4Header() {
        // A header from a Linux ping; its checksum field (0xb1e6) verifies to 0.
        let header: [UInt8] = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61,
                               0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7]
        #expect(header.withUnsafeBytes { InternetChecksum.checksum($0) } == 0)
        var zeroed = header
        zeroed[10] = 0; zeroed[11] = 0
        #expect(zeroed.withUnsafeBytes { InternetChecksum.checksum($0) } == 0xb861)
    }

    @Test(arguments: [0, 1, 2, 3, 7, 31, 32, 33, 63, 64, 65, 1499, 1500, 9001, 65535])
    func matchesReferenceAtEveryLength(length: Int) {
        var rng = SeededRandom(seed: UInt64(length))
        let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
        #expect(bytes.withUnsafeBytes { InternetChecksum.checksum($0) } == referenceChecksum(bytes))
    }

    /// Each vector loop (AVX-512, AVX2, whichever this CPU has; with none, `nativeSum`'s own
    /// choice takes it all) at lengths around its
    /// block sizes and at every alignment, and past the 8 MiB after which the AVX-512 loop
    /// empties its 32-bit lanes: the sum of what it took, with the rest summed in Swift,
    /// folds to the reference.
    @Test(arguments: [512, 256, 0])
    func eachVectorLoopMatchesTheReference(bits: Int32) {
        func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
            var consumed = 0
            let wide = offload_checksum_wide_sum_using(bits, bytes.baseAddress, bytes.count, &consumed)
            let rest = InternetChecksum.nativeSum(UnsafeRawBufferPointer(rebasing: bytes[consumed...]))
            #expect(consumed % 64 == 0 && consumed <= bytes.count)
            return ~InternetChecksum.fold(wide &+ rest).bigEndian
        }
        var rng = SeededRandom(seed: UInt64(bits) + 1071)
        let bytes = (0..<4200).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for length in [63, 64, 65, 127, 128, 129, 191, 192, 255, 256, 1500, 4096] {
            for offset in 0..<4 {
                let piece = Array(bytes[offset..<(offset + length)])
                #expect(piece.withUnsafeBytes { checksum($0) } == referenceChecksum(piece), "\(length) at +\(offset)")
            }
        }
        let large = [UInt8](repeating: 0xff, count: 9 << 20) + [0x12, 0x34]
        #expect(large.withUnsafeBytes { checksum($0) } == ~UInt16(0x1234))
    }

    @Test func allOnesDoesNotOverflow() {
        let bytes = [UInt8](repeating: 0xff, count: 65536)
        #expect(bytes.withUnsafeBytes { InternetChecksum.checksum($0) } == referenceChecksum(bytes))
    }

    @Test func piecewiseSumEqualsWholeSumAtOddSplits() {
        var rng = SeededRandom(seed: 7)
        let bytes = (0..<1001).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for split in [[1000], [1, 1000], [3, 500, 998], [2, 4, 999]] {
            var c = InternetChecksum()
            var from = 0
            bytes.withUnsafeBytes { all in
                for to in split + [bytes.count] {
                    c.add(UnsafeRawBufferPointer(rebasing: all[from..<to]))
                    from = to
                }
            }
            #expect(c.value == referenceChecksum(bytes), "split \(split)")
        }
    }

    @Test func fieldsAddLikeTheirBigEndianBytes() {
        var a = InternetChecksum()
        a.add(UInt32(0x0a00_0001))
        a.add(UInt16(6))
        let bytes: [UInt8] = [0x0a, 0x00, 0x00, 0x01, 0x00, 0x06]
        #expect(a.value == referenceChecksum(bytes))
    }

    @Test func incrementalUpdateMatchesRecomputation() {
        var rng = SeededRandom(seed: 1624)
        for _ in 0..<2000 {
            var bytes = (0..<20).map { _ in UInt8.random(in: 0...255, using: &rng) }
            bytes[10] = 0; bytes[11] = 0
            let before = referenceChecksum(bytes)
            bytes[10] = UInt8(before >> 8); bytes[11] = UInt8(before & 0xff)
            // Change a 16-bit field and a 32-bit field, update incrementally.
            let old16 = UInt16(bytes[8]) << 8 | UInt16(bytes[9])
            let new16 = UInt16.random(in: 0...0xffff, using: &rng)
            let old32 = UInt32(bytes[12]) << 24 | UInt32(bytes[13]) << 16 | UInt32(bytes[14]) << 8 | UInt32(bytes[15])
            let new32 = UInt32.random(in: 0...UInt32.max, using: &rng)
            var updated = InternetChecksum.update(before, old: old16, new: new16)
            updated = InternetChecksum.update(updated, old: old32, new: new32)
            bytes[8] = UInt8(new16 >> 8); bytes[9] = UInt8(new16 & 0xff)
            for i in 0..<4 { bytes[12 + i] = UInt8(truncatingIfNeeded: new32 >> (24 - 8 * i)) }
            bytes[10] = 0; bytes[11] = 0
            let recomputed = referenceChecksum(bytes)
            // 0x0000 and 0xffff are the same number in ones' complement; RFC 1624 yields the
            // one that recomputation never does only for an all-zero header.
            #expect(updated == recomputed || (updated == 0xffff && recomputed == 0) || (updated == 0 && recomputed == 0xffff))
        }
    }
}
