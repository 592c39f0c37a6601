import OffloadCore
import OffloadWire

extension FlowKey {
    /// The key of an Ethernet frame that arrived on `port`, or nil when the frame is not an
    /// unfragmented IPv4 packet (those go to the software).
    @inlinable
    public init?(frame: UnsafeRawBufferPointer, port: UInt16) {
        guard frame.count >= 34, let base = frame.baseAddress,
              UInt16(bigEndian: base.loadUnaligned(fromByteOffset: 12, as: UInt16.self)) == 0x0800 else { return nil }
        let versionAndLength = base.load(fromByteOffset: 14, as: UInt8.self)
        let headerLength = Int(versionAndLength & 0xf) &<< 2
        // Version 4 and a header of at least 20 bytes (IHL 5 to 15) in one test: 0x45...0x4f.
        guard versionAndLength &- 0x45 <= 0x0a, frame.count >= 14 &+ headerLength else { return nil }
        let fragment = UInt16(bigEndian: base.loadUnaligned(fromByteOffset: 20, as: UInt16.self))
        guard fragment & 0x3fff == 0 else { return nil }
        let proto = base.load(fromByteOffset: 23, as: UInt8.self)
        // Source and destination address, next to each other in the header: one load.
        high = UInt64(bigEndian: base.loadUnaligned(fromByteOffset: 26, as: UInt64.self))
        low = UInt64(port) << 16 | UInt64(proto)
        if proto == 6 || proto == 17 {
            let l4 = 14 + headerLength
            guard frame.count >= l4 + 4 else { return nil }
            // Source and destination port: one load.
            low |= UInt64(UInt32(bigEndian: base.loadUnaligned(fromByteOffset: l4, as: UInt32.self))) << 32
        }
    }
}
