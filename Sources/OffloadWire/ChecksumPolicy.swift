import OffloadCore

/// What parsers and emitters do with checksum fields.
///
/// | policy     | parse                                   | emit                                    |
/// |------------|-----------------------------------------|-----------------------------------------|
/// | `.verify`  | verify every checksum                   | compute every checksum in full          |
/// | `.partial` | L4 checksum holds only the pseudo-header sum: not verified (the IPv4 header checksum is verified) | L4 checksum gets the pseudo-header sum only, for a device to finish (the IPv4 header checksum is computed) |
/// | `.ignore`  | verify nothing                          | write 0 into checksum fields            |
///
/// `.partial` is what `OffloadMetadata.partialChecksum` means for a frame; see
/// `ChecksumPolicy(_:)` and `completePartialChecksum(frame:start:offset:)`.
public enum ChecksumPolicy: Equatable, Hashable, Sendable {
    case verify
    case partial
    case ignore

    /// The policy for a frame carrying `metadata`: `.partial` when its L4 checksum is partial.
    @inlinable
    public init(_ metadata: OffloadMetadata) {
        self = metadata.partialChecksumLocation == nil ? .verify : .partial
    }

    /// The policy for a header checksum that is never offloaded (IPv4): `.partial` acts as `.verify`.
    @inlinable
    var forHeader: ChecksumPolicy { self == .partial ? .verify : self }
}

/// The IPv4 pseudo-header sum (RFC 793 / RFC 768) for an L4 checksum, not yet folded.
@inlinable
public func ipv4PseudoHeaderChecksum(source: IPv4Address, destination: IPv4Address,
                                     protocol proto: UInt8, length: Int) -> InternetChecksum {
    var sum = InternetChecksum()
    sum.add(source.rawValue)
    sum.add(destination.rawValue)
    sum.add(UInt16(proto))
    sum.add(UInt16(truncatingIfNeeded: length))
    return sum
}

/// The full L4 checksum (host order) of `bytes` (the whole L4 message, its checksum field
/// included) under the IPv4 pseudo-header. With the checksum field filled in correctly, this is 0.
@inlinable
public func ipv4L4Checksum(_ bytes: UnsafeRawBufferPointer, source: IPv4Address, destination: IPv4Address,
                           protocol proto: UInt8) -> UInt16 {
    var sum = ipv4PseudoHeaderChecksum(source: source, destination: destination, protocol: proto,
                                       length: bytes.count)
    sum.add(bytes)
    return sum.value
}

/// Finishes a partial checksum (`OffloadMetadata.partialChecksum`) in place, as a device
/// would: the ones' complement sum of `frame[start...]` (whose checksum field, at
/// `start + offset`, holds the pseudo-header sum) is complemented and stored big-endian
/// in that field (a typed-error form of `OffloadMetadata.finishChecksum`).
///
/// Throws `.badField` when the field does not lie inside the frame.
public func completePartialChecksum(frame: UnsafeMutableRawBufferPointer, start: Int, offset: Int) throws(WireError) {
    guard OffloadMetadata.finishChecksum(in: frame, start: start, offset: offset) else {
        throw .badField(format: .virtioNet, field: "checksum start+offset", value: start + offset)
    }
}

// MARK: - Byte access helpers (internal, inlinable)

extension UnsafeRawBufferPointer {
    @inlinable @inline(__always)
    func u8(_ offset: Int) -> UInt8 { self[offset] }
    @inlinable @inline(__always)
    func u16(_ offset: Int) -> UInt16 {
        UInt16(bigEndian: baseAddress.unsafelyUnwrapped.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }
    @inlinable @inline(__always)
    func u32(_ offset: Int) -> UInt32 {
        UInt32(bigEndian: baseAddress.unsafelyUnwrapped.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
    @inlinable @inline(__always)
    func slice(_ from: Int, _ to: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: self[from..<to])
    }
}

extension UnsafeMutableRawBufferPointer {
    @inlinable @inline(__always)
    func set8(_ offset: Int, _ value: UInt8) { self[offset] = value }
    @inlinable @inline(__always)
    func set16(_ offset: Int, _ value: UInt16) {
        precondition(offset >= 0 && offset + 2 <= count)
        baseAddress.unsafelyUnwrapped.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }
    @inlinable @inline(__always)
    func set32(_ offset: Int, _ value: UInt32) {
        precondition(offset >= 0 && offset + 4 <= count)
        baseAddress.unsafelyUnwrapped.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }
    @inlinable @inline(__always)
    var readOnly: UnsafeRawBufferPointer { UnsafeRawBufferPointer(self) }
}

// MARK: - L4 checksum helpers shared by UDP, TCP and ICMP

/// Fills the L4 checksum field at `field` of `message` (the whole L4 message) per `policy`:
/// `.verify` the full checksum, `.partial` the pseudo-header sum only, `.ignore` 0.
/// `pseudoHeader` is nil for ICMP, which has none (its partial sum is 0).
/// With `zeroMeansNone` (UDP), a computed full checksum of 0 is sent as 0xffff.
@inlinable
func fillL4Checksum(_ message: UnsafeMutableRawBufferPointer, field: Int, pseudoHeader: (IPv4Address, IPv4Address, UInt8)?,
                    policy: ChecksumPolicy, zeroMeansNone: Bool = false) {
    message.set16(field, 0)
    switch policy {
    case .ignore:
        return
    case .partial:
        if let (s, d, p) = pseudoHeader {
            message.set16(field, ipv4PseudoHeaderChecksum(source: s, destination: d, protocol: p, length: message.count).partial)
        }
    case .verify:
        var value: UInt16
        if let (s, d, p) = pseudoHeader {
            value = ipv4L4Checksum(message.readOnly, source: s, destination: d, protocol: p)
        } else {
            value = InternetChecksum.checksum(message.readOnly)
        }
        if zeroMeansNone && value == 0 { value = 0xffff }
        message.set16(field, value)
    }
}
