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
        let headerLength = Int(versionAndLength & 0xf) * 4
        guard versionAndLength >> 4 == 4, headerLength >= 20, frame.count >= 14 + headerLength else { return nil }
        let fragment = UInt16(bigEndian: base.loadUnaligned(fromByteOffset: 20, as: UInt16.self))
        guard fragment & 0x3fff == 0 else { return nil }
        let proto = base.load(fromByteOffset: 23, as: UInt8.self)
        var sourcePort: UInt16 = 0, destinationPort: UInt16 = 0
        if proto == 6 || proto == 17 {
            let l4 = 14 + headerLength
            guard frame.count >= l4 + 4 else { return nil }
            sourcePort = UInt16(bigEndian: base.loadUnaligned(fromByteOffset: l4, as: UInt16.self))
            destinationPort = UInt16(bigEndian: base.loadUnaligned(fromByteOffset: l4 + 2, as: UInt16.self))
        }
        self.init(ingressPort: port, protocol: proto,
                  source: IPv4Address(loadingFrom: base, offset: 26), destination: IPv4Address(loadingFrom: base, offset: 30),
                  sourcePort: sourcePort, destinationPort: destinationPort)
    }
}
