import OffloadCore

/// The TCP control bits (RFC 9293, plus ECE/CWR of RFC 3168 and NS of RFC 3540).
public struct TCPFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let fin = TCPFlags(rawValue: 0x001)
    public static let syn = TCPFlags(rawValue: 0x002)
    public static let rst = TCPFlags(rawValue: 0x004)
    public static let psh = TCPFlags(rawValue: 0x008)
    public static let ack = TCPFlags(rawValue: 0x010)
    public static let urg = TCPFlags(rawValue: 0x020)
    public static let ece = TCPFlags(rawValue: 0x040)
    public static let cwr = TCPFlags(rawValue: 0x080)
    public static let ns = TCPFlags(rawValue: 0x100)
    /// All bits a header can carry.
    public static let mask: UInt16 = 0x1ff

    public var description: String {
        let names: [(TCPFlags, String)] = [(.ns, "N"), (.cwr, "C"), (.ece, "E"), (.urg, "U"), (.ack, "."), (.psh, "P"),
                                           (.rst, "R"), (.syn, "S"), (.fin, "F")]
        let s = names.filter { contains($0.0) }.map(\.1).joined()
        return s.isEmpty ? "none" : s
    }
}

/// A TCP segment: a checked view over its bytes (header, options, payload).
///
/// After `init(checking:)` the data offset is at least 5 words and lies within the bytes.
/// Options are not checked here: `TCPOptions` reads them, and `TCPRepr.parse` checks them.
public struct TCPPacket {
    public enum Field {
        public static let sourcePort = 0
        public static let destinationPort = 2
        public static let sequenceNumber = 4
        public static let acknowledgmentNumber = 8
        /// Data offset (4 bits), reserved (3 bits), NS, then the other eight flags.
        public static let dataOffsetAndFlags = 12
        public static let windowSize = 14
        public static let checksum = 16
        public static let urgentPointer = 18
        public static let options = 20
    }
    public static let minimumHeaderLength = 20
    public static let maximumHeaderLength = 60

    /// The whole segment (normally an IPv4 payload).
    public let bytes: UnsafeRawBufferPointer

    @inlinable
    public init(checking bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.minimumHeaderLength else {
            throw .truncated(format: .tcp, needed: Self.minimumHeaderLength, available: bytes.count)
        }
        let offset = Int(bytes[Field.dataOffsetAndFlags] >> 4) * 4
        guard offset >= Self.minimumHeaderLength, offset <= bytes.count else {
            throw .badHeaderLength(format: .tcp, value: offset)
        }
        self.bytes = bytes
    }

    @inlinable init(unchecked bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    @inlinable public var sourcePort: UInt16 { bytes.u16(Field.sourcePort) }
    @inlinable public var destinationPort: UInt16 { bytes.u16(Field.destinationPort) }
    @inlinable public var sequenceNumber: UInt32 { bytes.u32(Field.sequenceNumber) }
    @inlinable public var acknowledgmentNumber: UInt32 { bytes.u32(Field.acknowledgmentNumber) }
    /// Header length in bytes (data offset × 4).
    @inlinable public var headerLength: Int { Int(bytes[Field.dataOffsetAndFlags] >> 4) &* 4 }
    @inlinable public var flags: TCPFlags { TCPFlags(rawValue: bytes.u16(Field.dataOffsetAndFlags) & TCPFlags.mask) }
    @inlinable public var windowSize: UInt16 { bytes.u16(Field.windowSize) }
    @inlinable public var checksum: UInt16 { bytes.u16(Field.checksum) }
    @inlinable public var urgentPointer: UInt16 { bytes.u16(Field.urgentPointer) }
    /// The options area (header bytes after the fixed 20), possibly empty.
    @inlinable public var optionBytes: UnsafeRawBufferPointer { bytes.slice(Field.options, headerLength) }
    /// The options, read one by one.
    @inlinable public var options: TCPOptions { TCPOptions(optionBytes) }
    @inlinable public var payload: UnsafeRawBufferPointer { bytes.slice(headerLength, bytes.count) }
    /// Sequence space the segment occupies: payload plus one for each of SYN and FIN.
    @inlinable public var segmentLength: Int {
        let f = flags
        return payload.count &+ (f.contains(.syn) ? 1 : 0) &+ (f.contains(.fin) ? 1 : 0)
    }

    /// Whether the checksum verifies under the pseudo-header.
    @inlinable
    public func verifyChecksum(source: IPv4Address, destination: IPv4Address) -> Bool {
        ipv4L4Checksum(bytes, source: source, destination: destination, protocol: IPProtocol.tcp.rawValue) == 0
    }
}

/// A writable TCP view, for rewriting ports, numbers and checksums in place.
public struct MutableTCPPacket {
    public typealias Field = TCPPacket.Field
    public let bytes: UnsafeMutableRawBufferPointer

    @inlinable
    public init(checking bytes: UnsafeMutableRawBufferPointer) throws(WireError) {
        _ = try TCPPacket(checking: UnsafeRawBufferPointer(bytes))
        self.bytes = bytes
    }

    @inlinable public var packet: TCPPacket { TCPPacket(unchecked: bytes.readOnly) }
    @inlinable public var payload: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: bytes[packet.headerLength...])
    }
    @inlinable public func setSourcePort(_ port: UInt16) { bytes.set16(Field.sourcePort, port) }
    @inlinable public func setDestinationPort(_ port: UInt16) { bytes.set16(Field.destinationPort, port) }
    @inlinable public func setSequenceNumber(_ n: UInt32) { bytes.set32(Field.sequenceNumber, n) }
    @inlinable public func setAcknowledgmentNumber(_ n: UInt32) { bytes.set32(Field.acknowledgmentNumber, n) }
    @inlinable public func setWindowSize(_ w: UInt16) { bytes.set16(Field.windowSize, w) }
    @inlinable public func setChecksum(_ c: UInt16) { bytes.set16(Field.checksum, c) }
    @inlinable public func setFlags(_ f: TCPFlags) {
        let v = bytes.readOnly.u16(Field.dataOffsetAndFlags) & ~TCPFlags.mask | (f.rawValue & TCPFlags.mask)
        bytes.set16(Field.dataOffsetAndFlags, v)
    }

    /// Fills the checksum per `policy` (full, pseudo-header only, or 0).
    @inlinable
    public func fillChecksum(source: IPv4Address, destination: IPv4Address, policy: ChecksumPolicy = .verify) {
        fillL4Checksum(bytes, field: Field.checksum, pseudoHeader: (source, destination, IPProtocol.tcp.rawValue),
                       policy: policy)
    }

    /// Updates the checksum for a 16-bit field (port) changed from `old` to `new` (RFC 1624).
    @inlinable
    public func updateChecksum(old: UInt16, new: UInt16) {
        setChecksum(InternetChecksum.update(packet.checksum, old: old, new: new))
    }

    /// Updates the checksum for a 32-bit field (address in the pseudo-header, sequence number).
    @inlinable
    public func updateChecksum(old: UInt32, new: UInt32) {
        setChecksum(InternetChecksum.update(packet.checksum, old: old, new: new))
    }
}

// MARK: - Options

/// One SACK block: the sequence numbers of the first byte and of the byte after the last.
public struct TCPSACKBlock: Equatable, Hashable, Sendable {
    public var left: UInt32
    public var right: UInt32
    @inlinable public init(left: UInt32, right: UInt32) {
        self.left = left
        self.right = right
    }
}

/// Up to four SACK blocks, stored inline (no allocation).
public struct TCPSACKBlocks: RandomAccessCollection, Equatable, Hashable, Sendable, ExpressibleByArrayLiteral {
    public static let capacity = 4
    @usableFromInline var storage: (TCPSACKBlock, TCPSACKBlock, TCPSACKBlock, TCPSACKBlock)
    @usableFromInline var _count: Int

    @inlinable
    public init() {
        let z = TCPSACKBlock(left: 0, right: 0)
        storage = (z, z, z, z)
        _count = 0
    }

    /// Up to four blocks (more is a programming error).
    public init(_ blocks: some Sequence<TCPSACKBlock>) {
        self.init()
        for b in blocks { append(b) }
    }

    public init(arrayLiteral elements: TCPSACKBlock...) { self.init(elements) }

    @inlinable public var startIndex: Int { 0 }
    @inlinable public var endIndex: Int { _count }

    @inlinable
    public subscript(i: Int) -> TCPSACKBlock {
        get {
            precondition(i >= 0 && i < _count, "TCPSACKBlocks: index out of range")
            switch i {
            case 0: return storage.0
            case 1: return storage.1
            case 2: return storage.2
            default: return storage.3
            }
        }
        set {
            precondition(i >= 0 && i < _count, "TCPSACKBlocks: index out of range")
            switch i {
            case 0: storage.0 = newValue
            case 1: storage.1 = newValue
            case 2: storage.2 = newValue
            default: storage.3 = newValue
            }
        }
    }

    /// Adds a block; there is room for four.
    @inlinable
    public mutating func append(_ block: TCPSACKBlock) {
        precondition(_count < Self.capacity, "TCPSACKBlocks: at most 4 blocks")
        _count += 1
        self[_count - 1] = block
    }

    @inlinable
    public static func == (a: TCPSACKBlocks, b: TCPSACKBlocks) -> Bool { a.elementsEqual(b) }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(_count)
        for b in self { hasher.combine(b) }
    }
}

/// The timestamps option (RFC 7323).
public struct TCPTimestamp: Equatable, Hashable, Sendable {
    public var value: UInt32
    public var echoReply: UInt32
    @inlinable public init(value: UInt32, echoReply: UInt32) {
        self.value = value
        self.echoReply = echoReply
    }
}

/// One TCP option as read from the options area.
public enum TCPOption: Equatable, Hashable, Sendable {
    case noOperation
    case maxSegmentSize(UInt16)
    case windowScale(UInt8)
    case sackPermitted
    case sack(TCPSACKBlocks)
    case timestamp(TCPTimestamp)
    /// An option this stack does not know, skipped by its length.
    case unknown(kind: UInt8, length: Int)

    public enum Kind {
        public static let endOfList: UInt8 = 0
        public static let noOperation: UInt8 = 1
        public static let maxSegmentSize: UInt8 = 2
        public static let windowScale: UInt8 = 3
        public static let sackPermitted: UInt8 = 4
        public static let sack: UInt8 = 5
        public static let timestamp: UInt8 = 8
    }
    public enum Length {
        public static let maxSegmentSize = 4
        public static let windowScale = 3
        public static let sackPermitted = 2
        public static let timestamp = 10
        public static let sackBase = 2
        public static let sackPerBlock = 8
    }
}

/// Reads the options of a TCP header one at a time, checking each one's length. Stops at
/// end-of-list or at the end of the area.
public struct TCPOptions {
    @usableFromInline let bytes: UnsafeRawBufferPointer
    @usableFromInline var offset = 0

    @inlinable public init(_ optionBytes: UnsafeRawBufferPointer) { bytes = optionBytes }

    /// The next option, or nil at the end. A length byte missing, below 2, past the end, or
    /// wrong for a known kind is `.badOption` (or `.truncated` for a missing length byte).
    @inlinable
    public mutating func next() throws(WireError) -> TCPOption? {
        typealias K = TCPOption.Kind
        typealias L = TCPOption.Length
        guard offset < bytes.count else { return nil }
        let kind = bytes[offset]
        switch kind {
        case K.endOfList:
            offset = bytes.count
            return nil
        case K.noOperation:
            offset += 1
            return .noOperation
        default:
            break
        }
        let remaining = bytes.count - offset
        guard remaining >= 2 else { throw .truncated(format: .tcpOption, needed: 2, available: remaining) }
        let length = Int(bytes[offset + 1])
        guard length >= 2, length <= remaining else { throw .badOption(format: .tcpOption, kind: kind, length: length) }
        let o = offset
        offset += length
        switch kind {
        case K.maxSegmentSize:
            guard length == L.maxSegmentSize else { throw .badOption(format: .tcpOption, kind: kind, length: length) }
            return .maxSegmentSize(bytes.u16(o + 2))
        case K.windowScale:
            guard length == L.windowScale else { throw .badOption(format: .tcpOption, kind: kind, length: length) }
            return .windowScale(bytes[o + 2])
        case K.sackPermitted:
            guard length == L.sackPermitted else { throw .badOption(format: .tcpOption, kind: kind, length: length) }
            return .sackPermitted
        case K.timestamp:
            guard length == L.timestamp else { throw .badOption(format: .tcpOption, kind: kind, length: length) }
            return .timestamp(TCPTimestamp(value: bytes.u32(o + 2), echoReply: bytes.u32(o + 6)))
        case K.sack:
            let n = (length - L.sackBase) / L.sackPerBlock
            guard (length - L.sackBase) % L.sackPerBlock == 0, n >= 1, n <= TCPSACKBlocks.capacity else {
                throw .badOption(format: .tcpOption, kind: kind, length: length)
            }
            var blocks = TCPSACKBlocks()
            for i in 0..<n {
                let b = o + 2 + i * L.sackPerBlock
                blocks.append(TCPSACKBlock(left: bytes.u32(b), right: bytes.u32(b + 4)))
            }
            return .sack(blocks)
        default:
            return .unknown(kind: kind, length: length)
        }
    }
}

// MARK: - Repr

/// A TCP header with its options, as a value.
///
/// `emit` lays options out as Linux does (`tcp_options_write`), every option on a 32-bit
/// boundary: MSS; SACK-permitted + timestamps (or NOP NOP + timestamps); NOP NOP +
/// SACK-permitted when there are no timestamps; NOP + window scale; NOP NOP + SACK blocks.
/// A Linux segment therefore parses and emits to the same bytes. Unknown options are not kept.
public struct TCPRepr: Equatable, Hashable, Sendable {
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var sequenceNumber: UInt32
    public var acknowledgmentNumber: UInt32
    public var flags: TCPFlags
    /// The window field as sent (not scaled).
    public var windowSize: UInt16
    public var urgentPointer: UInt16
    public var maxSegmentSize: UInt16?
    public var windowScale: UInt8?
    public var sackPermitted: Bool
    public var sackBlocks: TCPSACKBlocks
    public var timestamp: TCPTimestamp?
    public var payloadLength: Int

    public init(sourcePort: UInt16, destinationPort: UInt16, sequenceNumber: UInt32, acknowledgmentNumber: UInt32 = 0,
                flags: TCPFlags, windowSize: UInt16, urgentPointer: UInt16 = 0, maxSegmentSize: UInt16? = nil,
                windowScale: UInt8? = nil, sackPermitted: Bool = false, sackBlocks: TCPSACKBlocks = TCPSACKBlocks(),
                timestamp: TCPTimestamp? = nil, payloadLength: Int = 0) {
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.sequenceNumber = sequenceNumber
        self.acknowledgmentNumber = acknowledgmentNumber
        self.flags = flags
        self.windowSize = windowSize
        self.urgentPointer = urgentPointer
        self.maxSegmentSize = maxSegmentSize
        self.windowScale = windowScale
        self.sackPermitted = sackPermitted
        self.sackBlocks = sackBlocks
        self.timestamp = timestamp
        self.payloadLength = payloadLength
    }

    /// Reads a checked segment and its options (a malformed option throws). With `.verify`
    /// a checksum that does not verify is `.badChecksum`; `.partial` and `.ignore` skip it.
    @inlinable
    public static func parse(_ packet: TCPPacket, source: IPv4Address, destination: IPv4Address,
                             checksums: ChecksumPolicy) throws(WireError) -> TCPRepr {
        if checksums == .verify && !packet.verifyChecksum(source: source, destination: destination) {
            throw .badChecksum(format: .tcp)
        }
        var repr = TCPRepr(sourcePort: packet.sourcePort, destinationPort: packet.destinationPort,
                           sequenceNumber: packet.sequenceNumber, acknowledgmentNumber: packet.acknowledgmentNumber,
                           flags: packet.flags, windowSize: packet.windowSize, urgentPointer: packet.urgentPointer,
                           payloadLength: packet.payload.count)
        var options = packet.options
        while let option = try options.next() {
            switch option {
            case .maxSegmentSize(let m): repr.maxSegmentSize = m
            case .windowScale(let w): repr.windowScale = w
            case .sackPermitted: repr.sackPermitted = true
            case .sack(let blocks): repr.sackBlocks = blocks
            case .timestamp(let t): repr.timestamp = t
            case .noOperation, .unknown: break
            }
        }
        return repr
    }

    /// Bytes of options `emit` writes (a multiple of 4).
    @inlinable
    public var optionsLength: Int {
        var n = 0
        if maxSegmentSize != nil { n += 4 }
        if timestamp != nil { n += 12 } // SACK-permitted rides in the timestamps word
        else if sackPermitted { n += 4 }
        if windowScale != nil { n += 4 }
        if !sackBlocks.isEmpty { n += 4 + 8 * sackBlocks.count }
        return n
    }

    /// Header with options; at most 60 (more options than fit is a programming error at emit).
    @inlinable public var headerLength: Int { TCPPacket.minimumHeaderLength + optionsLength }
    @inlinable public var bufferLength: Int { headerLength + payloadLength }

    /// Writes the header and options into `buffer`, which holds the whole segment
    /// (`bufferLength` bytes, the payload already in place after the header), then the
    /// checksum per `checksums` (full, pseudo-header sum only for offload, or 0).
    @inlinable
    public func emit(into buffer: UnsafeMutableRawBufferPointer, source: IPv4Address, destination: IPv4Address,
                     checksums: ChecksumPolicy) {
        let hl = headerLength
        precondition(buffer.count >= hl + payloadLength, "TCPRepr.emit: buffer too small")
        let segment = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<(hl + payloadLength)])
        emitHeader(into: segment)
        fillL4Checksum(segment, field: TCPPacket.Field.checksum,
                       pseudoHeader: (source, destination, IPProtocol.tcp.rawValue), policy: checksums)
    }

    /// Writes the header and options (`headerLength` bytes) with a checksum field of 0, for
    /// a segment whose payload is elsewhere (a gather list) and whose checksum the caller sums.
    @inlinable
    public func emitHeader(into segment: UnsafeMutableRawBufferPointer) {
        typealias F = TCPPacket.Field
        typealias K = TCPOption.Kind
        let hl = headerLength
        precondition(hl <= TCPPacket.maximumHeaderLength, "TCPRepr.emit: options do not fit in 40 bytes")
        precondition(segment.count >= hl, "TCPRepr.emitHeader: buffer too small")
        segment.set16(F.checksum, 0)
        segment.set16(F.sourcePort, sourcePort)
        segment.set16(F.destinationPort, destinationPort)
        segment.set32(F.sequenceNumber, sequenceNumber)
        segment.set32(F.acknowledgmentNumber, acknowledgmentNumber)
        segment.set16(F.dataOffsetAndFlags, UInt16(hl / 4) << 12 | (flags.rawValue & TCPFlags.mask))
        segment.set16(F.windowSize, windowSize)
        segment.set16(F.urgentPointer, urgentPointer)
        var o = F.options
        func word(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
            segment.set32(o, UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d))
            o += 4
        }
        if let mss = maxSegmentSize {
            word(K.maxSegmentSize, 4, UInt8(mss >> 8), UInt8(truncatingIfNeeded: mss))
        }
        if let ts = timestamp {
            if sackPermitted { word(K.sackPermitted, 2, K.timestamp, 10) } else { word(1, 1, K.timestamp, 10) }
            segment.set32(o, ts.value)
            segment.set32(o + 4, ts.echoReply)
            o += 8
        } else if sackPermitted {
            word(1, 1, K.sackPermitted, 2)
        }
        if let ws = windowScale { word(1, K.windowScale, 3, ws) }
        if !sackBlocks.isEmpty {
            word(1, 1, K.sack, UInt8(2 + 8 * sackBlocks.count))
            for b in sackBlocks {
                segment.set32(o, b.left)
                segment.set32(o + 4, b.right)
                o += 8
            }
        }
    }
}
