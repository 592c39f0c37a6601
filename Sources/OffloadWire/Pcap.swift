import OffloadCore

/// The classic libpcap file format (https://www.tcpdump.org/manpages/pcap-savefile.5.html):
/// a 24-byte global header, then records of a 16-byte header and the captured bytes.
/// Reading takes either byte order and microsecond or nanosecond timestamps; writing is
/// little-endian.
public enum Pcap {
    public static let magicMicroseconds: UInt32 = 0xa1b2_c3d4
    public static let magicNanoseconds: UInt32 = 0xa1b2_3c4d
    public static let linkTypeEthernet: UInt32 = 1
    public static let versionMajor: UInt16 = 2
    public static let versionMinor: UInt16 = 4
    /// Records claiming more captured bytes than this are malformed (libpcap's own limit
    /// for Ethernet is 256 KiB).
    public static let maximumRecordLength = 262_144
}

/// The pcap global (file) header, as a value.
public struct PcapFileHeader: Equatable, Hashable, Sendable {
    public enum Field {
        public static let magic = 0
        public static let versionMajor = 4
        public static let versionMinor = 6
        public static let thisZone = 8
        public static let sigFigs = 12
        public static let snapLength = 16
        public static let linkType = 20
    }
    public static let length = 24

    /// Timestamps' fractional part counts nanoseconds (else microseconds).
    public var nanosecondResolution: Bool
    /// The file's numbers are big-endian (only ever true for a parsed file).
    public var bigEndian: Bool
    public var snapLength: UInt32
    public var linkType: UInt32

    public init(nanosecondResolution: Bool = false, bigEndian: Bool = false, snapLength: UInt32 = 262_144,
                linkType: UInt32 = Pcap.linkTypeEthernet) {
        self.nanosecondResolution = nanosecondResolution
        self.bigEndian = bigEndian
        self.snapLength = snapLength
        self.linkType = linkType
    }

    /// Reads the global header: a known magic in either byte order (else `.badField`),
    /// version 2.x, and link type Ethernet (else `.unsupported`).
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(WireError) -> PcapFileHeader {
        guard bytes.count >= length else { throw .truncated(format: .pcap, needed: length, available: bytes.count) }
        let raw = bytes.baseAddress!.loadUnaligned(fromByteOffset: Field.magic, as: UInt32.self)
        var header = PcapFileHeader()
        switch UInt32(littleEndian: raw) {
        case Pcap.magicMicroseconds: header.bigEndian = false; header.nanosecondResolution = false
        case Pcap.magicNanoseconds: header.bigEndian = false; header.nanosecondResolution = true
        default:
            switch UInt32(bigEndian: raw) {
            case Pcap.magicMicroseconds: header.bigEndian = true; header.nanosecondResolution = false
            case Pcap.magicNanoseconds: header.bigEndian = true; header.nanosecondResolution = true
            default: throw .badField(format: .pcap, field: "magic", value: Int(UInt32(littleEndian: raw)))
            }
        }
        let major = header.read16(bytes, Field.versionMajor)
        guard major == Pcap.versionMajor else { throw .badField(format: .pcap, field: "major version", value: Int(major)) }
        header.snapLength = header.read32(bytes, Field.snapLength)
        // The upper bits of the link-type field hold FCS information; the type is the low 16.
        header.linkType = header.read32(bytes, Field.linkType) & 0xffff
        guard header.linkType == Pcap.linkTypeEthernet else {
            throw .unsupported(format: .pcap, what: "link type \(header.linkType)")
        }
        return header
    }

    @usableFromInline
    func read16(_ bytes: UnsafeRawBufferPointer, _ offset: Int) -> UInt16 {
        let v = bytes.baseAddress!.loadUnaligned(fromByteOffset: offset, as: UInt16.self)
        return bigEndian ? UInt16(bigEndian: v) : UInt16(littleEndian: v)
    }

    @usableFromInline
    func read32(_ bytes: UnsafeRawBufferPointer, _ offset: Int) -> UInt32 {
        let v = bytes.baseAddress!.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
        return bigEndian ? UInt32(bigEndian: v) : UInt32(littleEndian: v)
    }

    public var headerLength: Int { Self.length }
    public var bufferLength: Int { Self.length }

    /// Writes the 24-byte header, little-endian (whatever `bigEndian` says).
    public func emit(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= Self.length, "PcapFileHeader.emit: buffer too small")
        let p = buffer.baseAddress!
        p.storeBytes(of: (nanosecondResolution ? Pcap.magicNanoseconds : Pcap.magicMicroseconds).littleEndian,
                     toByteOffset: Field.magic, as: UInt32.self)
        p.storeBytes(of: Pcap.versionMajor.littleEndian, toByteOffset: Field.versionMajor, as: UInt16.self)
        p.storeBytes(of: Pcap.versionMinor.littleEndian, toByteOffset: Field.versionMinor, as: UInt16.self)
        p.storeBytes(of: UInt32(0), toByteOffset: Field.thisZone, as: UInt32.self)
        p.storeBytes(of: UInt32(0), toByteOffset: Field.sigFigs, as: UInt32.self)
        p.storeBytes(of: snapLength.littleEndian, toByteOffset: Field.snapLength, as: UInt32.self)
        p.storeBytes(of: linkType.littleEndian, toByteOffset: Field.linkType, as: UInt32.self)
    }
}

/// A pcap record header, as a value.
public struct PcapRecordHeader: Equatable, Hashable, Sendable {
    public enum Field {
        public static let seconds = 0
        public static let fraction = 4
        public static let capturedLength = 8
        public static let originalLength = 12
    }
    public static let length = 16

    public var seconds: UInt32
    /// Microseconds or nanoseconds, as the file header says.
    public var fraction: UInt32
    public var capturedLength: UInt32
    public var originalLength: UInt32

    public init(seconds: UInt32, fraction: UInt32, capturedLength: UInt32, originalLength: UInt32) {
        self.seconds = seconds
        self.fraction = fraction
        self.capturedLength = capturedLength
        self.originalLength = originalLength
    }

    /// A header for a frame of `length` bytes (all captured) at `nanoseconds` since the epoch.
    public init(nanosecondsSinceEpoch ns: Int64, length: Int, nanosecondResolution: Bool) {
        let t = max(ns, 0)
        seconds = UInt32(truncatingIfNeeded: t / 1_000_000_000)
        let sub = t % 1_000_000_000
        fraction = UInt32(nanosecondResolution ? sub : sub / 1000)
        capturedLength = UInt32(length)
        originalLength = UInt32(length)
    }

    /// Reads a record header in the file's byte order.
    public static func parse(_ bytes: UnsafeRawBufferPointer, file: PcapFileHeader) throws(WireError) -> PcapRecordHeader {
        guard bytes.count >= length else { throw .truncated(format: .pcap, needed: length, available: bytes.count) }
        return PcapRecordHeader(seconds: file.read32(bytes, Field.seconds), fraction: file.read32(bytes, Field.fraction),
                                capturedLength: file.read32(bytes, Field.capturedLength),
                                originalLength: file.read32(bytes, Field.originalLength))
    }

    /// The timestamp in nanoseconds since the epoch.
    public func nanosecondsSinceEpoch(file: PcapFileHeader) -> Int64 {
        Int64(seconds) * 1_000_000_000 + Int64(fraction) * (file.nanosecondResolution ? 1 : 1000)
    }

    public var headerLength: Int { Self.length }
    public var bufferLength: Int { Self.length + Int(capturedLength) }

    /// Writes the 16-byte header, little-endian.
    public func emit(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= Self.length, "PcapRecordHeader.emit: buffer too small")
        let p = buffer.baseAddress!
        p.storeBytes(of: seconds.littleEndian, toByteOffset: Field.seconds, as: UInt32.self)
        p.storeBytes(of: fraction.littleEndian, toByteOffset: Field.fraction, as: UInt32.self)
        p.storeBytes(of: capturedLength.littleEndian, toByteOffset: Field.capturedLength, as: UInt32.self)
        p.storeBytes(of: originalLength.littleEndian, toByteOffset: Field.originalLength, as: UInt32.self)
    }
}

/// One record of a pcap file: its header and its captured bytes (a view into the file).
public struct PcapRecord {
    public let header: PcapRecordHeader
    public let data: UnsafeRawBufferPointer
    /// The timestamp in nanoseconds since the epoch.
    public let nanosecondsSinceEpoch: Int64
}

/// Iterates the records of a whole pcap file held in memory.
///
///     var reader = try PcapReader(file)
///     while let record = try reader.next() { ... record.data ... }
///
/// A record whose header or data runs past the end of the file is `.truncated`; one that
/// claims more captured bytes than `Pcap.maximumRecordLength` or than its original length is
/// `.badLength`.
public struct PcapReader {
    public let fileHeader: PcapFileHeader
    public let bytes: UnsafeRawBufferPointer
    /// Offset of the next record.
    public private(set) var offset: Int

    public init(_ file: UnsafeRawBufferPointer) throws(WireError) {
        fileHeader = try PcapFileHeader.parse(file)
        bytes = file
        offset = PcapFileHeader.length
    }

    /// The next record, or nil at the end of the file.
    public mutating func next() throws(WireError) -> PcapRecord? {
        guard offset < bytes.count else { return nil }
        let rest = bytes.slice(offset, bytes.count)
        let header = try PcapRecordHeader.parse(rest, file: fileHeader)
        let captured = Int(header.capturedLength)
        guard captured <= Pcap.maximumRecordLength, captured <= Int(header.originalLength) else {
            throw .badLength(format: .pcap, field: "captured length", value: captured)
        }
        guard PcapRecordHeader.length + captured <= rest.count else {
            throw .truncated(format: .pcap, needed: PcapRecordHeader.length + captured, available: rest.count)
        }
        offset += PcapRecordHeader.length + captured
        return PcapRecord(header: header, data: rest.slice(PcapRecordHeader.length, PcapRecordHeader.length + captured),
                          nanosecondsSinceEpoch: header.nanosecondsSinceEpoch(file: fileHeader))
    }
}
