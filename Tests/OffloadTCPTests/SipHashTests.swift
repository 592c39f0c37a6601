import Testing
import OffloadTCP

@Suite struct SipHashTests {
    /// The reference key 00 01 02 ... 0f, as two little-endian words.
    let key: (UInt64, UInt64) = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908)

    /// From the reference implementation's vectors.h (vectors_sip64): the hash of the
    /// message 00 01 02 ... (length - 1), its eight bytes read little-endian.
    static let vectors: [(length: Int, hash: UInt64)] = [
        (0, 0x726f_db47_dd0e_0e31),
        (1, 0x74f8_39c5_93dc_67fd),
        (7, 0xab02_00f5_8b01_d137),
        (8, 0x93f5_f579_9a93_2462),
        (15, 0xa129_ca61_49be_45e5),
        (16, 0x3f2a_cc7f_57c2_9bdb),
    ]

    @Test(arguments: vectors)
    func referenceVectors(length: Int, hash: UInt64) {
        let message = (0..<length).map { UInt8($0) }
        #expect(message.withUnsafeBytes { SipHash24.hash($0, key: key) } == hash)
    }

    @Test func integersAreAppendedLittleEndian() {
        // 00 01 ... 0e as a word, a half-word, a short and a byte: the 15-byte vector.
        var h = SipHash24(key: key)
        h.append(UInt64(0x0706_0504_0302_0100))
        h.append(UInt32(0x0b0a_0908))
        h.append(UInt16(0x0d0c))
        h.append(UInt8(0x0e))
        #expect(h.finalize() == 0xa129_ca61_49be_45e5)
        // A word that does not start on a word boundary goes byte by byte.
        var unaligned = SipHash24(key: key)
        unaligned.append(UInt8(0x00))
        unaligned.append(UInt64(0x0807_0605_0403_0201))
        unaligned.append(UInt32(0x0c0b_0a09))
        unaligned.append(UInt16(0x0e0d))
        #expect(unaligned.finalize() == 0xa129_ca61_49be_45e5)
    }

    @Test func finalizeLeavesTheStateAlone() {
        var h = SipHash24(key: key)
        h.append(UInt64(0x0706_0504_0302_0100))
        #expect(h.finalize() == h.finalize())
        #expect(h.finalize() == 0x93f5_f579_9a93_2462)
    }
}
