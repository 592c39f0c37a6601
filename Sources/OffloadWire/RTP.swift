import OffloadCore

/// An RTP packet (RFC 3550 section 5.1): a checked view over its bytes (normally a UDP payload).
///
/// After `init(checking:)`: version 2; the CSRC list, the header extension (its 4-byte
/// header and `length` words) and, with the padding bit, the padding count (at least 1,
/// at most what follows the header) all lie within the bytes.
public struct RTPPacket {
    public enum Field {
        /// V (2 bits), P, X, CC (4 bits).
        public static let flags = 0
        /// M, PT (7 bits).
        public static let markerAndPayloadType = 1
        public static let sequenceNumber = 2
        public static let timestamp = 4
        public static let ssrc = 8
        public static let csrcList = 12
    }
    public static let fixedHeaderLength = 12
    public static let version: UInt8 = 2
    public static let extensionHeaderLength = 4

    public let bytes: UnsafeRawBufferPointer

    @inlinable
    public init(checking bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.fixedHeaderLength else {
            throw .truncated(format: .rtp, needed: Self.fixedHeaderLength, available: bytes.count)
        }
        let b0 = bytes[Field.flags]
        guard b0 >> 6 == Self.version else { throw .badField(format: .rtp, field: "version", value: Int(b0 >> 6)) }
        let csrcCount = Int(b0 & 0x0f)
        var header = Self.fixedHeaderLength + 4 * csrcCount
        guard header <= bytes.count else { throw .badLength(format: .rtp, field: "CSRC count", value: csrcCount) }
        if b0 & 0x10 != 0 {
            guard header + Self.extensionHeaderLength <= bytes.count else {
                throw .truncated(format: .rtp, needed: header + Self.extensionHeaderLength, available: bytes.count)
            }
            let words = Int(bytes.u16(header + 2))
            header += Self.extensionHeaderLength + 4 * words
            guard header <= bytes.count else { throw .badLength(format: .rtp, field: "extension length", value: words) }
        }
        if b0 & 0x20 != 0 {
            let padding = Int(bytes[bytes.count - 1])
            guard padding >= 1, padding <= bytes.count - header else {
                throw .badLength(format: .rtp, field: "padding", value: padding)
            }
        }
        self.bytes = bytes
    }

    @inlinable public var version: UInt8 { bytes[Field.flags] >> 6 }
    @inlinable public var hasPadding: Bool { bytes[Field.flags] & 0x20 != 0 }
    @inlinable public var hasExtension: Bool { bytes[Field.flags] & 0x10 != 0 }
    @inlinable public var csrcCount: Int { Int(bytes[Field.flags] & 0x0f) }
    @inlinable public var marker: Bool { bytes[Field.markerAndPayloadType] & 0x80 != 0 }
    @inlinable public var payloadType: UInt8 { bytes[Field.markerAndPayloadType] & 0x7f }
    @inlinable public var sequenceNumber: UInt16 { bytes.u16(Field.sequenceNumber) }
    @inlinable public var timestamp: UInt32 { bytes.u32(Field.timestamp) }
    @inlinable public var ssrc: UInt32 { bytes.u32(Field.ssrc) }
    /// The `i`th contributing source (0 ≤ i < csrcCount).
    @inlinable public func csrc(_ i: Int) -> UInt32 {
        precondition(i >= 0 && i < csrcCount, "RTPPacket.csrc: index out of range")
        return bytes.u32(Field.csrcList + 4 * i)
    }
    @inlinable var extensionOffset: Int { Field.csrcList + 4 * csrcCount }
    /// The extension's profile-defined 16 bits, if there is an extension.
    @inlinable public var extensionProfile: UInt16? { hasExtension ? bytes.u16(extensionOffset) : nil }
    /// The extension's data (its `length` words), empty without an extension.
    @inlinable public var extensionData: UnsafeRawBufferPointer {
        guard hasExtension else { return bytes.slice(extensionOffset, extensionOffset) }
        let start = extensionOffset + RTPPacket.extensionHeaderLength
        return bytes.slice(start, start + 4 * Int(bytes.u16(extensionOffset + 2)))
    }
    /// Fixed header, CSRC list and extension.
    @inlinable public var headerLength: Int {
        hasExtension ? extensionOffset + RTPPacket.extensionHeaderLength + 4 * Int(bytes.u16(extensionOffset + 2)) : extensionOffset
    }
    /// Padding bytes at the end, the count byte included (0 without padding).
    @inlinable public var paddingLength: Int { hasPadding ? Int(bytes[bytes.count - 1]) : 0 }
    @inlinable public var payload: UnsafeRawBufferPointer { bytes.slice(headerLength, bytes.count - paddingLength) }
}

/// Up to 15 CSRC identifiers, stored inline (no allocation).
public struct RTPCSRCList: RandomAccessCollection, Equatable, Hashable, Sendable, ExpressibleByArrayLiteral {
    public static let capacity = 15
    @usableFromInline var storage: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32,
                                    UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32)
    @usableFromInline var _count = 0

    @inlinable
    public init() { storage = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0) }

    public init(_ ids: some Sequence<UInt32>) {
        self.init()
        for id in ids { append(id) }
    }
    public init(arrayLiteral elements: UInt32...) { self.init(elements) }

    @inlinable public var startIndex: Int { 0 }
    @inlinable public var endIndex: Int { _count }

    @inlinable
    public subscript(i: Int) -> UInt32 {
        precondition(i >= 0 && i < _count, "RTPCSRCList: index out of range")
        return withUnsafeBytes(of: storage) { $0.load(fromByteOffset: 4 * i, as: UInt32.self) }
    }

    @inlinable
    public mutating func append(_ id: UInt32) {
        precondition(_count < Self.capacity, "RTPCSRCList: at most 15 CSRCs")
        let i = _count
        withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: id, toByteOffset: 4 * i, as: UInt32.self) }
        _count += 1
    }

    @inlinable public static func == (a: RTPCSRCList, b: RTPCSRCList) -> Bool { a.elementsEqual(b) }
    public func hash(into hasher: inout Hasher) {
        hasher.combine(_count)
        for id in self { hasher.combine(id) }
    }
}

/// The RTP header extension's fixed part: the profile-defined field and the data length in
/// 32-bit words. Its data is payload-like: `emit` leaves it as it is in the buffer.
public struct RTPHeaderExtension: Equatable, Hashable, Sendable {
    public var profile: UInt16
    public var lengthInWords: UInt16
    public init(profile: UInt16, lengthInWords: UInt16) {
        self.profile = profile
        self.lengthInWords = lengthInWords
    }
}

/// An RTP fixed header with its CSRC list, extension header and padding, as a value.
public struct RTPRepr: Equatable, Hashable, Sendable {
    public var marker: Bool
    public var payloadType: UInt8
    public var sequenceNumber: UInt16
    public var timestamp: UInt32
    public var ssrc: UInt32
    public var csrcs: RTPCSRCList
    public var headerExtension: RTPHeaderExtension?
    /// Padding bytes at the end, the count byte included (0: no padding bit).
    public var paddingLength: UInt8
    public var payloadLength: Int

    public init(marker: Bool = false, payloadType: UInt8, sequenceNumber: UInt16, timestamp: UInt32, ssrc: UInt32,
                csrcs: RTPCSRCList = RTPCSRCList(), headerExtension: RTPHeaderExtension? = nil,
                paddingLength: UInt8 = 0, payloadLength: Int) {
        self.marker = marker
        self.payloadType = payloadType
        self.sequenceNumber = sequenceNumber
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.csrcs = csrcs
        self.headerExtension = headerExtension
        self.paddingLength = paddingLength
        self.payloadLength = payloadLength
    }

    @inlinable
    public static func parse(_ packet: RTPPacket) -> RTPRepr {
        var csrcs = RTPCSRCList()
        for i in 0..<packet.csrcCount { csrcs.append(packet.csrc(i)) }
        let ext = packet.extensionProfile.map {
            RTPHeaderExtension(profile: $0, lengthInWords: UInt16(packet.extensionData.count / 4))
        }
        return RTPRepr(marker: packet.marker, payloadType: packet.payloadType, sequenceNumber: packet.sequenceNumber,
                       timestamp: packet.timestamp, ssrc: packet.ssrc, csrcs: csrcs, headerExtension: ext,
                       paddingLength: UInt8(packet.paddingLength), payloadLength: packet.payload.count)
    }

    /// Fixed header, CSRC list, and the extension (header and data).
    @inlinable public var headerLength: Int {
        RTPPacket.fixedHeaderLength + 4 * csrcs.count
            + (headerExtension.map { RTPPacket.extensionHeaderLength + 4 * Int($0.lengthInWords) } ?? 0)
    }
    @inlinable public var bufferLength: Int { headerLength + payloadLength + Int(paddingLength) }

    /// Writes the fixed header, CSRC list and extension header into `buffer` (which holds
    /// `bufferLength` bytes; the extension data and payload are left as they are), then the
    /// padding: zeros ending in the count byte.
    @inlinable
    public func emit(into buffer: UnsafeMutableRawBufferPointer) {
        typealias F = RTPPacket.Field
        precondition(buffer.count >= bufferLength, "RTPRepr.emit: buffer too small")
        precondition(payloadType < 128, "RTPRepr.emit: payload type is 7 bits")
        buffer[F.flags] = RTPPacket.version << 6 | (paddingLength > 0 ? 0x20 : 0) | (headerExtension != nil ? 0x10 : 0)
            | UInt8(csrcs.count)
        buffer[F.markerAndPayloadType] = (marker ? 0x80 : 0) | payloadType
        buffer.set16(F.sequenceNumber, sequenceNumber)
        buffer.set32(F.timestamp, timestamp)
        buffer.set32(F.ssrc, ssrc)
        var o = F.csrcList
        for id in csrcs {
            buffer.set32(o, id)
            o += 4
        }
        if let ext = headerExtension {
            buffer.set16(o, ext.profile)
            buffer.set16(o + 2, ext.lengthInWords)
        }
        if paddingLength > 0 {
            let end = bufferLength
            for i in (end - Int(paddingLength))..<(end - 1) { buffer[i] = 0 }
            buffer[end - 1] = paddingLength
        }
    }
}
