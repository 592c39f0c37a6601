import OffloadCore

/// The checksum of a TCP or UDP header, or of an ICMP message, as the gateway's translations
/// update it in place (RFC 1624): where it lies, and UDP's rules about 0.
enum TransportChecksum {
    /// Where the checksum of `proto`'s header lies: TCP 16, UDP 6, ICMP 2.
    static func offset(_ proto: UInt8) -> Int { proto == 17 ? 6 : proto == 6 ? 16 : 2 }

    /// Replaces the checksum in `l4` (a header and what follows, maybe cut short, as in an
    /// ICMP error's quote or a first fragment) with `change` of it. Nothing happens where the
    /// checksum is not in `l4`, or for UDP's 0 (no checksum); a UDP result of 0 is sent as
    /// 0xffff, its other spelling.
    static func update(in l4: UnsafeMutableRawBufferPointer, protocol proto: UInt8, _ change: (UInt16) -> UInt16) {
        let at = offset(proto)
        guard l4.count >= at + 2 else { return }
        let old = UInt16(bigEndian: l4.loadUnaligned(fromByteOffset: at, as: UInt16.self))
        if proto == 17 && old == 0 { return }
        let new = change(old)
        l4.storeBytes(of: (proto == 17 && new == 0 ? 0xffff : new).bigEndian, toByteOffset: at, as: UInt16.self)
    }
}
