#if os(Linux)
import Glibc
import OffloadCore
import OffloadWire

/// Traffic counters of a Linux link (TAP or packet socket), readable as one value.
public struct SystemLinkCounters: Sendable, Equatable {
    /// Frames handed to the receive body, and their bytes (Ethernet header on, virtio-net
    /// header off).
    public var framesReceived: UInt64 = 0
    public var bytesReceived: UInt64 = 0
    /// Frames written to the device, and their bytes (virtio-net header not counted).
    public var framesTransmitted: UInt64 = 0
    public var bytesTransmitted: UInt64 = 0
    /// Transmitted frames whose partial checksum the link finished in software (a link
    /// without the virtio-net header cannot pass partial checksums on).
    public var checksumsCompletedInSoftware: UInt64 = 0
    /// Frames lost, by reason.
    public var drops = Drops()

    public struct Drops: Sendable, Equatable {
        /// Larger than the receive buffer: the tail was cut off, so the frame was dropped.
        public var truncated: UInt64 = 0
        /// Shorter than an Ethernet header.
        public var runt: UInt64 = 0
        /// A virtio-net header this stack cannot honour (GSO other than TCPv4, ECN, a
        /// checksum location outside the frame, missing bytes).
        public var badVirtioNetHeader: UInt64 = 0
        /// The kernel dropped a frame while handing it over (a packet socket whose
        /// virtio-net header cannot describe the frame's offload state returns EINVAL).
        public var kernelHandover: UInt64 = 0
        /// Dropped by the kernel for want of socket buffer space (packet sockets:
        /// PACKET_STATISTICS, as of the last read of it).
        public var kernelBuffer: UInt64 = 0

        public init() {}

        public var total: UInt64 { truncated &+ runt &+ badVirtioNetHeader &+ kernelHandover &+ kernelBuffer }
    }

    public init() {}
}

extension SystemLinkCounters: CounterTable {
    public var rows: [(String, UInt64)] {
        [("link frames received", framesReceived), ("link bytes received", bytesReceived),
         ("link frames transmitted", framesTransmitted), ("link bytes transmitted", bytesTransmitted),
         ("link checksums finished in software", checksumsCompletedInSoftware),
         ("link dropped: truncated", drops.truncated), ("link dropped: runt", drops.runt),
         ("link dropped: bad virtio-net header", drops.badVirtioNetHeader),
         ("link dropped: kernel handover", drops.kernelHandover),
         ("link dropped: kernel buffer", drops.kernelBuffer)]
    }
}

/// The per-link I/O state shared by TAP and packet sockets: a preallocated gather list for
/// `writev`, the receive vector and scratch space for virtio-net headers and a checksum
/// finished in software. Nothing here allocates per frame.
struct FrameIO: ~Copyable {
    /// Frames come from a character device (`readv`) or a packet socket (`recvmsg`).
    enum Source { case device, socket }

    let descriptor: Int32
    let source: Source
    let virtioNetHeader: Bool
    private var vector: UnsafeMutablePointer<iovec>
    private var vectorCapacity: Int
    private var vectorCount = 0
    /// [0, 10): transmit virtio-net header; [16, 26): receive virtio-net header;
    /// [32, 34): a checksum finished in software.
    private let scratch: UnsafeMutableRawPointer
    private let receiveVector: UnsafeMutablePointer<iovec>

    init(descriptor: Int32, source: Source, virtioNetHeader: Bool, slices: Int = 64) {
        self.descriptor = descriptor
        self.source = source
        self.virtioNetHeader = virtioNetHeader
        vectorCapacity = slices
        vector = .allocate(capacity: slices)
        scratch = .allocate(byteCount: 64, alignment: 16)
        scratch.initializeMemory(as: UInt8.self, repeating: 0, count: 64)
        receiveVector = .allocate(capacity: 2)
    }

    deinit {
        vector.deallocate()
        scratch.deallocate()
        receiveVector.deallocate()
    }

    // MARK: receive

    /// Reads frames into buffers from `pool` until `max` reads were made, the descriptor has
    /// nothing more (EAGAIN) or the pool is empty, and hands each good frame to `body`.
    mutating func receive(
        into pool: BufferPool, max: Int, minimumSpace: Int, counters: inout SystemLinkCounters,
        _ body: (consuming PacketBuffer) -> Void
    ) throws(LinkError) -> Int {
        let space = pool.bufferSize - pool.headroom
        guard space >= minimumSpace else {
            throw .configuration(
                "pool buffers hold \(space) bytes after their headroom, this link needs \(minimumSpace)"
                    + (virtioNetHeader ? " (virtio-net header mode receives 64 KiB TSO frames)" : ""))
        }
        let headerSize = virtioNetHeader ? VirtioNetHeader.size : 0
        let headerSpace = scratch + 16
        var received = 0
        var reads = 0
        while reads < max {
            reads &+= 1
            guard var buffer = pool.take() else { break }
            let room = buffer.writableSpace
            let n = read(into: room, header: headerSpace)
            if n < 0 {
                let code = SystemCall.lastError
                if code == EAGAIN || code == EWOULDBLOCK { break }
                if code == EINTR { reads &-= 1; continue }
                if code == EINVAL && source == .socket && virtioNetHeader {
                    counters.drops.kernelHandover &+= 1
                    continue
                }
                throw SystemCall.error(source == .socket ? "recvmsg" : "readv", code, "descriptor \(descriptor)")
            }
            let length = n - headerSize
            guard length >= 0 else { counters.drops.badVirtioNetHeader &+= 1; continue }
            guard length <= room.count else { counters.drops.truncated &+= 1; continue }
            guard length >= 14 else { counters.drops.runt &+= 1; continue }
            var metadata = OffloadMetadata.none
            if virtioNetHeader {
                do throws(WireError) {
                    metadata = try VirtioNetHeader(
                        parsing: UnsafeRawBufferPointer(start: headerSpace, count: headerSize)).metadata()
                } catch {
                    counters.drops.badVirtioNetHeader &+= 1
                    continue
                }
                if let (start, offset) = metadata.partialChecksumLocation, start &+ offset &+ 2 > length {
                    counters.drops.badVirtioNetHeader &+= 1
                    continue
                }
            }
            do throws(BufferError) { try buffer.setCount(length) } catch {
                counters.drops.truncated &+= 1
                continue
            }
            buffer.offload = metadata
            counters.framesReceived &+= 1
            counters.bytesReceived &+= UInt64(length)
            received &+= 1
            body(buffer)
        }
        return received
    }

    /// One read: the frame into `room`, its virtio-net header (if any) into `header`.
    /// Returns the byte count the kernel reports (a truncated frame's full length) or -1.
    private func read(into room: UnsafeMutableRawBufferPointer, header: UnsafeMutableRawPointer) -> Int {
        var parts: Int32 = 0
        if virtioNetHeader {
            receiveVector[0] = iovec(iov_base: header, iov_len: VirtioNetHeader.size)
            parts = 1
        }
        receiveVector[Int(parts)] = iovec(iov_base: room.baseAddress, iov_len: room.count)
        parts &+= 1
        switch source {
        case .device:
            return Glibc.readv(descriptor, receiveVector, parts)
        case .socket:
            var message = msghdr()
            message.msg_iov = receiveVector
            message.msg_iovlen = Int(parts)
            // MSG_TRUNC: the result is the frame's real length, so a cut frame shows.
            return Glibc.recvmsg(descriptor, &message, Int32(MSG_TRUNC))
        }
    }

    // MARK: transmit

    /// Writes one frame with one `writev`: [virtio-net header] + header + payload slices.
    /// Without the virtio-net header a partial checksum is finished here (in a 2-byte
    /// scratch that replaces the field in the gather list, so no frame byte is copied) and
    /// TSO is refused.
    mutating func transmit(
        header: UnsafeRawBufferPointer, payloads: PayloadSlices, metadata: OffloadMetadata,
        maxFrameSize: Int, counters: inout SystemLinkCounters
    ) throws(LinkError) {
        let length = header.count &+ payloads.byteCount
        guard length <= maxFrameSize else { throw .frameTooLarge(size: length, max: maxFrameSize) }
        vectorCount = 0
        var finishedInSoftware = false
        if virtioNetHeader {
            VirtioNetHeader(metadata).emit(into: UnsafeMutableRawBufferPointer(start: scratch, count: VirtioNetHeader.size))
            append(UnsafeRawPointer(scratch), VirtioNetHeader.size)
            try appendFrame(header: header, payloads: payloads, checksumField: nil)
        } else {
            switch metadata {
            case .none:
                try appendFrame(header: header, payloads: payloads, checksumField: nil)
            case .partialChecksum(let start, let offset):
                try finishChecksum(header: header, payloads: payloads, length: length,
                                   start: Int(start), offset: Int(offset))
                try appendFrame(header: header, payloads: payloads, checksumField: Int(start) &+ Int(offset))
                finishedInSoftware = true
            case .tcpSegmentation:
                throw .unsupportedOffload("TCP segmentation (TSO) without the virtio-net header")
            }
        }
        var written: Int
        repeat {
            written = Glibc.writev(descriptor, vector, Int32(vectorCount))
        } while written < 0 && SystemCall.lastError == EINTR
        if written < 0 {
            let code = SystemCall.lastError
            if code == EAGAIN || code == EWOULDBLOCK || code == ENOBUFS { throw .wouldBlock }
            throw SystemCall.error("writev", code, "frame of \(length) bytes on descriptor \(descriptor)")
        }
        counters.framesTransmitted &+= 1
        counters.bytesTransmitted &+= UInt64(length)
        if finishedInSoftware { counters.checksumsCompletedInSoftware &+= 1 }
    }

    /// Sums the frame from `start` to its end (the field holds the pseudo-header sum) and
    /// stores the finished checksum, big-endian, in the scratch.
    private func finishChecksum(
        header: UnsafeRawBufferPointer, payloads: PayloadSlices, length: Int, start: Int, offset: Int
    ) throws(LinkError) {
        guard start &+ offset &+ 2 <= length else {
            throw .unsupportedOffload("a partial checksum at \(start)+\(offset) outside a frame of \(length) bytes")
        }
        var sum = InternetChecksum()
        var position = 0
        func add(_ piece: UnsafeRawBufferPointer) {
            let skip = Swift.max(start &- position, 0)
            if skip < piece.count, let base = piece.baseAddress {
                sum.add(UnsafeRawBufferPointer(start: base + skip, count: piece.count &- skip))
            }
            position &+= piece.count
        }
        add(header)
        for slice in payloads.slices { add(slice) }
        (scratch + 32).storeBytes(of: OffloadMetadata.finished(sum.value, offset: offset).bigEndian, as: UInt16.self)
    }

    /// Appends header and payloads; with `checksumField`, the two bytes there come from the
    /// scratch instead of the frame.
    private mutating func appendFrame(
        header: UnsafeRawBufferPointer, payloads: PayloadSlices, checksumField: Int?
    ) throws(LinkError) {
        var position = 0
        try appendPiece(header, &position, checksumField)
        for slice in payloads.slices { try appendPiece(slice, &position, checksumField) }
    }

    private mutating func appendPiece(
        _ piece: UnsafeRawBufferPointer, _ position: inout Int, _ field: Int?
    ) throws(LinkError) {
        defer { position &+= piece.count }
        guard piece.count > 0, let base = piece.baseAddress else { return }
        guard let field, field >= position, field < position &+ piece.count else {
            append(UnsafeRawPointer(base), piece.count)
            return
        }
        let at = field &- position
        guard at &+ 2 <= piece.count else {
            throw .unsupportedOffload("a partial checksum field split across two gather slices")
        }
        append(UnsafeRawPointer(base), at)
        append(UnsafeRawPointer(scratch + 32), 2)
        append(UnsafeRawPointer(base + at + 2), piece.count &- at &- 2)
    }

    private mutating func append(_ base: UnsafeRawPointer, _ count: Int) {
        guard count > 0 else { return }
        if vectorCount == vectorCapacity { grow() }
        vector[vectorCount] = iovec(iov_base: UnsafeMutableRawPointer(mutating: base), iov_len: count)
        vectorCount &+= 1
    }

    /// A gather list longer than any before: the vector doubles once and stays that size.
    private mutating func grow() {
        let bigger = UnsafeMutablePointer<iovec>.allocate(capacity: vectorCapacity * 2)
        bigger.update(from: vector, count: vectorCount)
        vector.deallocate()
        vector = bigger
        vectorCapacity *= 2
    }
}
#endif
