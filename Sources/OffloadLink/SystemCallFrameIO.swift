#if os(Linux)
import Glibc
import OffloadCore
import OffloadWire
import COffloadShim

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
    /// Times a receive found the interface gone down (a packet socket reports it once; the
    /// kernel attaches the socket again when the interface comes back up).
    public var interfaceDown: UInt64 = 0
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
        /// Frames that came with an 802.1Q tag, which the kernel took off before a packet
        /// socket saw them: VLANs are not ours to carry, and untagged they would pass for
        /// the native LAN's.
        public var vlanTagged: UInt64 = 0
        /// Frames of a send batch the kernel would not take (its queue full, the interface
        /// down): a frame sent alone that fails is the caller's error instead.
        public var sendRefused: UInt64 = 0

        public init() {}

        public var total: UInt64 {
            truncated &+ runt &+ badVirtioNetHeader &+ kernelHandover &+ kernelBuffer &+ vlanTagged &+ sendRefused
        }
    }

    public init() {}
}

extension SystemLinkCounters: CounterTable {
    public var rows: [(String, UInt64)] {
        [("link frames received", framesReceived), ("link bytes received", bytesReceived),
         ("link frames transmitted", framesTransmitted), ("link bytes transmitted", bytesTransmitted),
         ("link checksums finished in software", checksumsCompletedInSoftware),
         ("link found down", interfaceDown),
         ("link dropped: truncated", drops.truncated), ("link dropped: runt", drops.runt),
         ("link dropped: bad virtio-net header", drops.badVirtioNetHeader),
         ("link dropped: kernel handover", drops.kernelHandover),
         ("link dropped: kernel buffer", drops.kernelBuffer),
         ("link dropped: VLAN-tagged", drops.vlanTagged),
         ("link dropped: send refused", drops.sendRefused)]
    }
}

/// The per-link I/O state shared by TAP and packet sockets: a preallocated gather list for
/// `writev`, the receive vector and scratch space for virtio-net headers and a checksum
/// finished in software. Nothing here allocates per frame.
struct FrameIO: ~Copyable {
    /// Frames come from a character device (`readv`) or a socket (`recvmmsg`).
    enum Source { case device, socket }

    let descriptor: Int32
    let source: Source
    let virtioNetHeader: Bool
    /// A packet socket's receive ring, when it has one: frames are read from it, not with
    /// `recvmmsg`. Released with this value.
    private let ring: OpaquePointer?
    private var vector: UnsafeMutablePointer<iovec>
    private var vectorCapacity: Int
    private var vectorCount = 0
    /// [0, 10): transmit virtio-net header; [16, 26): receive virtio-net header;
    /// [32, 34): a checksum finished in software.
    private let scratch: UnsafeMutableRawPointer
    private let receiveVector: UnsafeMutablePointer<iovec>
    /// A socket's receive batch (one `recvmmsg`): its buffers, where their bytes go, what
    /// the kernel reports for each, and their virtio-net headers (16 bytes apart).
    private static let batchCapacity = 64
    private let batch: UnsafeMutablePointer<PacketBuffer>
    private let batchFrames: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private let batchLengths: UnsafeMutablePointer<Int>
    private let batchHeaders: UnsafeMutableRawPointer
    private let batchTagged: UnsafeMutablePointer<UInt8>
    /// A socket's send batch, while one is open (`beginBatch`): whole frames (virtio-net
    /// header first, if any) copied into slots of `sendSlotSize` bytes, sent with one
    /// `sendmmsg` when the batch ends or fills. A frame with payload slices of its own
    /// (offloaded TCP's gather) or larger than a slot flushes the batch and goes alone, so
    /// frames leave in order and payloads are never copied.
    private static let sendSlotSize = 2048
    private var batching = false
    private var pendingCount = 0
    private let sendSlots: UnsafeMutableRawPointer
    private let sendFrames: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private let sendLengths: UnsafeMutablePointer<Int>

    init(descriptor: Int32, source: Source, virtioNetHeader: Bool, ring: OpaquePointer? = nil, slices: Int = 64) {
        self.descriptor = descriptor
        self.source = source
        self.virtioNetHeader = virtioNetHeader
        self.ring = ring
        vectorCapacity = slices
        vector = .allocate(capacity: slices)
        scratch = .allocate(byteCount: 64, alignment: 16)
        scratch.initializeMemory(as: UInt8.self, repeating: 0, count: 64)
        receiveVector = .allocate(capacity: 2)
        batch = .allocate(capacity: Self.batchCapacity)
        batchFrames = .allocate(capacity: Self.batchCapacity)
        batchLengths = .allocate(capacity: Self.batchCapacity)
        batchHeaders = .allocate(byteCount: 16 * Self.batchCapacity, alignment: 16)
        batchTagged = .allocate(capacity: Self.batchCapacity)
        let sendSlotCount = source == .socket ? Self.batchCapacity : 0
        sendSlots = .allocate(byteCount: Self.sendSlotSize * sendSlotCount, alignment: 64)
        sendFrames = .allocate(capacity: sendSlotCount)
        sendLengths = .allocate(capacity: sendSlotCount)
        for i in 0..<sendSlotCount { sendFrames[i] = sendSlots + i &* Self.sendSlotSize }
    }

    deinit {
        offload_packet_ring_release(ring)
        vector.deallocate()
        scratch.deallocate()
        receiveVector.deallocate()
        batch.deallocate()
        batchFrames.deallocate()
        batchLengths.deallocate()
        batchHeaders.deallocate()
        batchTagged.deallocate()
        sendSlots.deallocate()
        sendFrames.deallocate()
        sendLengths.deallocate()
    }

    // MARK: receive

    /// Reads up to `max` frames into buffers from `pool` (a device: one `readv` each until
    /// it has nothing more; a socket: one `recvmmsg` for them all) and hands each good frame
    /// to `body`. Stops early when the pool is empty.
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
        switch source {
        case .device: return try receiveFromDevice(into: pool, max: max, counters: &counters, body)
        case .socket: return try receiveFromSocket(into: pool, max: max, counters: &counters, body)
        }
    }

    private mutating func receiveFromDevice(
        into pool: BufferPool, max: Int, counters: inout SystemLinkCounters, _ body: (consuming PacketBuffer) -> Void
    ) throws(LinkError) -> Int {
        let headerSpace = scratch + 16
        var received = 0
        var reads = 0
        while reads < max {
            reads &+= 1
            guard let buffer = pool.take() else { break }
            let n = read(into: buffer.writableSpace, header: headerSpace)
            if n < 0 {
                let code = SystemCall.lastError
                if code == EAGAIN || code == EWOULDBLOCK { break }
                if code == EINTR { reads &-= 1; continue }
                // The kernel could not describe this frame's offload state in a virtio-net
                // header: that frame is gone (as a packet socket reports it).
                if code == EINVAL && virtioNetHeader {
                    counters.drops.kernelHandover &+= 1
                    continue
                }
                // Frames handed on already are the caller's: they count, and the error, if it
                // lasts, comes at the next call. Thrown now, the caller would lose them.
                if received > 0 { break }
                throw SystemCall.error("readv", code, "descriptor \(descriptor)")
            }
            if deliver(buffer, reported: n, header: headerSpace, counters: &counters, body) { received &+= 1 }
        }
        return received
    }

    /// Up to `max` frames (at most 64) from the receive ring, or with one `recvmmsg`: a
    /// buffer from the pool for each frame it might bring, and those not filled go back.
    private mutating func receiveFromSocket(
        into pool: BufferPool, max: Int, counters: inout SystemLinkCounters, _ body: (consuming PacketBuffer) -> Void
    ) throws(LinkError) -> Int {
        // An empty ring costs one load, and no buffer leaves the pool.
        if let ring {
            let waiting = offload_packet_ring_waiting(ring, descriptor)
            if waiting < 0 { try receiveFailed(code: -waiting, counters: &counters) }
            if waiting <= 0 { return 0 }
        }
        // Every buffer of a pool has the same room.
        var taken = 0, room = 0
        while taken < Swift.min(max, Self.batchCapacity), let buffer = pool.take() {
            let space = buffer.writableSpace
            batchFrames[taken] = space.baseAddress
            room = space.count
            (batch + taken).initialize(to: buffer)
            taken &+= 1
        }
        guard taken > 0 else { return 0 }
        let headerSize = virtioNetHeader ? VirtioNetHeader.size : 0
        let n = if let ring {
            Int(offload_packet_ring_receive(ring, descriptor, Int32(taken), batchFrames, room,
                                            batchHeaders, Int32(headerSize), batchLengths, batchTagged))
        } else {
            Int(offload_packet_socket_receive(descriptor, Int32(taken), batchFrames, room,
                                              batchHeaders, Int32(headerSize), batchLengths, batchTagged))
        }
        // The buffers no frame came into go back to the pool before any frame is handed on.
        let filled = Swift.max(n, 0)
        (batch + filled).deinitialize(count: taken &- filled)
        if n < 0 {
            try receiveFailed(code: Int32(-n), counters: &counters)
            return 0
        }
        var received = 0
        for i in 0..<filled {
            guard batchTagged[i] == 0 else {
                (batch + i).deinitialize(count: 1)
                counters.drops.vlanTagged &+= 1
                continue
            }
            if deliver((batch + i).move(), reported: batchLengths[i], header: batchHeaders + 16 &* i,
                       counters: &counters, body) {
                received &+= 1
            }
        }
        return received
    }

    /// What a failed socket receive means: nothing waiting, a frame lost (counted), or an
    /// error that ends the link (thrown).
    private func receiveFailed(code: Int32, counters: inout SystemLinkCounters) throws(LinkError) {
        if code == EAGAIN || code == EWOULDBLOCK { return }
        // The kernel could not describe a frame's offload state in a virtio-net header: that
        // frame is gone, the rest wait for the next poll.
        if code == EINVAL && virtioNetHeader {
            counters.drops.kernelHandover &+= 1
            return
        }
        // The interface went down: the kernel says so once, and attaches the socket again
        // when it comes back up. Not the end of the link.
        if code == ENETDOWN {
            counters.interfaceDown &+= 1
            return
        }
        throw SystemCall.error(ring == nil ? "recvmmsg" : "receive ring", code, "descriptor \(descriptor)")
    }

    /// Checks one frame the kernel reported `reported` bytes for (its virtio-net header, if
    /// any, at `header`), and hands it to `body` or counts why not. Returns whether it went.
    private func deliver(
        _ buffer: consuming PacketBuffer, reported: Int, header: UnsafeMutableRawPointer,
        counters: inout SystemLinkCounters, _ body: (consuming PacketBuffer) -> Void
    ) -> Bool {
        let headerSize = virtioNetHeader ? VirtioNetHeader.size : 0
        let length = reported - headerSize
        guard length >= 0 else { counters.drops.badVirtioNetHeader &+= 1; return false }
        guard length <= buffer.writableSpace.count else { counters.drops.truncated &+= 1; return false }
        guard length >= 14 else { counters.drops.runt &+= 1; return false }
        var metadata = OffloadMetadata.none
        if virtioNetHeader {
            do throws(WireError) {
                metadata = try VirtioNetHeader(parsing: UnsafeRawBufferPointer(start: header, count: headerSize)).metadata()
            } catch {
                counters.drops.badVirtioNetHeader &+= 1
                return false
            }
            if let (start, offset) = metadata.partialChecksumLocation, start &+ offset &+ 2 > length {
                counters.drops.badVirtioNetHeader &+= 1
                return false
            }
        }
        var buffer = buffer
        do throws(BufferError) { try buffer.setCount(length) } catch {
            counters.drops.truncated &+= 1
            return false
        }
        buffer.offload = metadata
        counters.framesReceived &+= 1
        counters.bytesReceived &+= UInt64(length)
        body(buffer)
        return true
    }

    /// One read from the device: the frame into `room`, its virtio-net header (if any) into
    /// `header`. Returns the byte count the kernel reports, or -1.
    private func read(into room: UnsafeMutableRawBufferPointer, header: UnsafeMutableRawPointer) -> Int {
        var parts: Int32 = 0
        if virtioNetHeader {
            receiveVector[0] = iovec(iov_base: header, iov_len: VirtioNetHeader.size)
            parts = 1
        }
        receiveVector[Int(parts)] = iovec(iov_base: room.baseAddress, iov_len: room.count)
        parts &+= 1
        return Glibc.readv(descriptor, receiveVector, parts)
    }

    // MARK: transmit

    /// Writes one frame with one `writev`: [virtio-net header] + header + payload slices.
    /// Without the virtio-net header a partial checksum is finished here (in a 2-byte
    /// scratch that replaces the field in the gather list, so no frame byte is copied) and
    /// a super-frame is refused.
    mutating func transmit(
        header: UnsafeRawBufferPointer, payloads: PayloadSlices, metadata: OffloadMetadata,
        maxFrameSize: Int, counters: inout SystemLinkCounters
    ) throws(LinkError) {
        let length = header.count &+ payloads.byteCount
        guard length <= maxFrameSize else { throw .frameTooLarge(size: length, max: maxFrameSize) }
        if batching {
            if payloads.isEmpty, try stage(header, metadata: metadata, counters: &counters) { return }
            sendBatch(counters: &counters)
        }
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
            case .tcpSegmentation, .udpSegmentation:
                throw .unsupportedOffload("a super-frame (TSO, UDP GSO) without the virtio-net header")
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

    // MARK: send batches (packet sockets)

    /// From here until `endBatch`, whole frames that fit a slot wait to leave together.
    mutating func beginBatch() {
        batching = source == .socket
    }

    /// Sends whatever the batch holds and closes it.
    mutating func endBatch(counters: inout SystemLinkCounters) {
        sendBatch(counters: &counters)
        batching = false
    }

    /// Sends the frames waiting in the batch with `sendmmsg`; the batch stays open. Frames
    /// the kernel refuses are counted in `drops.sendRefused`: all that are left when its
    /// queue is full or the interface down, else only the one it refused (larger than the
    /// MTU, say), and the rest still go.
    private mutating func sendBatch(counters: inout SystemLinkCounters) {
        let header = virtioNetHeader ? VirtioNetHeader.size : 0
        var sent = 0
        while sent < pendingCount {
            let n = Int(offload_packet_socket_send(descriptor, Int32(pendingCount &- sent), sendFrames + sent,
                                                   sendLengths + sent))
            if n < 0, ![EAGAIN, EWOULDBLOCK, ENOBUFS, ENETDOWN].contains(-Int32(n)) {
                counters.drops.sendRefused &+= 1
                sent &+= 1
                continue
            }
            guard n > 0 else {
                counters.drops.sendRefused &+= UInt64(pendingCount &- sent)
                break
            }
            for i in sent..<(sent &+ n) { counters.bytesTransmitted &+= UInt64(sendLengths[i] &- header) }
            counters.framesTransmitted &+= UInt64(n)
            sent &+= n
        }
        pendingCount = 0
    }

    /// Copies a frame without payload slices into the batch; false when it does not fit a
    /// slot (it then goes alone). A full batch is sent first.
    private mutating func stage(
        _ frame: UnsafeRawBufferPointer, metadata: OffloadMetadata, counters: inout SystemLinkCounters
    ) throws(LinkError) -> Bool {
        let header = virtioNetHeader ? VirtioNetHeader.size : 0
        guard header &+ frame.count <= Self.sendSlotSize, let base = frame.baseAddress else { return false }
        if pendingCount == Self.batchCapacity { sendBatch(counters: &counters) }
        let slot = sendFrames[pendingCount].unsafelyUnwrapped
        if virtioNetHeader {
            VirtioNetHeader(metadata).emit(into: UnsafeMutableRawBufferPointer(start: slot, count: header))
        }
        (slot + header).copyMemory(from: base, byteCount: frame.count)
        switch metadata {
        case .partialChecksum(let start, let offset) where !virtioNetHeader:
            try finishChecksum(header: frame, payloads: .none, length: frame.count, start: Int(start),
                               offset: Int(offset))
            let field = Int(start) &+ Int(offset)
            (slot + field).copyMemory(from: UnsafeRawPointer(scratch + 32), byteCount: 2)
            counters.checksumsCompletedInSoftware &+= 1
        case .tcpSegmentation where !virtioNetHeader, .udpSegmentation where !virtioNetHeader:
            throw .unsupportedOffload("a super-frame (TSO, UDP GSO) without the virtio-net header")
        default:
            break
        }
        sendLengths[pendingCount] = header &+ frame.count
        pendingCount &+= 1
        return true
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
