import OffloadCore

/// A frame on the wire: where its bytes are and when it may arrive.
@usableFromInline
struct FrameInFlight {
    @usableFromInline var deliverAt: Instant
    /// Transmit order, to break ties between equal delivery times.
    @usableFromInline var sequence: UInt64
    @usableFromInline var slot: Int32
    @usableFromInline var length: Int32
    @usableFromInline var metadata: OffloadMetadata
    /// The sender's own bytes, for a frame sent with `transmit(lending:)`; nil when the
    /// frame is in its slot.
    @usableFromInline var lent: UnsafeRawPointer?

    @inlinable
    init(deliverAt: Instant, sequence: UInt64, slot: Int32, length: Int32, metadata: OffloadMetadata,
         lent: UnsafeRawPointer? = nil) {
        self.deliverAt = deliverAt
        self.sequence = sequence
        self.slot = slot
        self.length = length
        self.metadata = metadata
        self.lent = lent
    }

    func arrivesBefore(_ other: FrameInFlight) -> Bool {
        deliverAt != other.deliverAt ? deliverAt < other.deliverAt : sequence < other.sequence
    }
}

/// One direction of a memory wire: preallocated frame slots, and the frames in flight
/// ordered by delivery time (a FIFO ring when frames cannot overtake each other, a binary
/// heap when jitter or reordering lets them). Nothing is allocated after init.
///
/// A perfect direction (no impairment at all) takes a shorter path for every frame: no
/// clock, no random draw (a zero probability draws nothing either way), and the ring.
/// The hot parts are inlinable so that the engine's poll loop, specialized for memory
/// links, inlines them with its per-frame closure.
@usableFromInline
struct MemoryWireDirection {
    let impairments: Impairments
    /// Read once from `impairments`: whether delivery depends on the clock, whether frames
    /// can overtake each other (a heap instead of a ring), and whether nothing happens to
    /// frames at all.
    @usableFromInline let usesTime: Bool
    @usableFromInline let reorders: Bool
    @usableFromInline let isPerfect: Bool
    /// The impairments' durations in nanoseconds, converted once (Duration arithmetic is
    /// 128-bit and too slow for every frame).
    let delayNanoseconds: Int64
    let jitterNanoseconds: Int64
    let reorderDelayNanoseconds: Int64
    var random: SeededRandom
    @usableFromInline var counters = MemoryWireCounters()
    /// Told of every payload slice handed to the wire (where its memory lies), for the
    /// zero-copy tests; nil costs nothing.
    var payloadWitness: ((UnsafeRawBufferPointer) -> Void)?
    @usableFromInline let slotSize: Int
    @usableFromInline let slotCount: Int
    @usableFromInline let slab: UnsafeMutableRawPointer
    /// Free frame slots, for the heap; in a ring a frame's slot is its ring position.
    let freeSlots: UnsafeMutablePointer<Int32>
    var freeCount: Int
    /// Where the frame-by-frame receive puts its burst.
    @usableFromInline let scratch: UnsafeMutablePointer<PacketBuffer>
    /// Ring (head, count) or heap (count) over `slotCount` frames.
    @usableFromInline let queue: UnsafeMutablePointer<FrameInFlight>
    @usableFromInline var head = 0
    @usableFromInline var inFlight = 0
    @usableFromInline var sequence: UInt64 = 0
    /// When the sender's serializer is free again (rate limit).
    var serializerFreeAt = Instant.zero

    init(impairments: Impairments, random: SeededRandom, maxFrameSize: Int, slots: Int) {
        self.impairments = impairments
        usesTime = impairments.usesTime
        reorders = impairments.reorders
        isPerfect = impairments.isPerfect
        delayNanoseconds = impairments.delay.nanoseconds
        jitterNanoseconds = impairments.jitter.nanoseconds
        reorderDelayNanoseconds = impairments.reorderDelay.nanoseconds
        self.random = random
        slotSize = maxFrameSize
        slotCount = slots
        slab = .allocate(byteCount: maxFrameSize * slots, alignment: 64)
        freeSlots = .allocate(capacity: slots)
        for i in 0..<slots { freeSlots[i] = Int32(slots - 1 - i) }
        freeCount = slots
        queue = .allocate(capacity: slots)
        scratch = .allocate(capacity: MemoryWireDirection.scratchCount)
        queue.initialize(repeating: FrameInFlight(deliverAt: .zero, sequence: 0, slot: 0, length: 0, metadata: .none),
                         count: slots)
    }

    /// Frees the frame slots; the wire calls this once, when it goes.
    func deallocate() {
        slab.deallocate()
        freeSlots.deallocate()
        queue.deallocate()
        scratch.deallocate()
    }

    var nextDelivery: Instant? {
        guard inFlight > 0 else { return nil }
        return reorders ? queue[0].deliverAt : queue[head].deliverAt
    }

    @inlinable
    mutating func transmit(
        header: UnsafeRawBufferPointer, payloads: PayloadSlices, metadata: OffloadMetadata, now: Instant,
        carriesMetadata: Bool
    ) throws(LinkError) {
        var plain = carriesMetadata
        if case .none = metadata { plain = true }
        guard isPerfect, plain else {
            return try transmitImpaired(header: header, payloads: payloads, metadata: metadata, now: now,
                                        carriesMetadata: carriesMetadata)
        }
        if !payloads.isEmpty {
            // A gather list: header and slices copied into the frame's slot, as a wire reads them.
            let length = header.count &+ payloads.byteCount
            guard length <= slotSize else { throw .frameTooLarge(size: length, max: slotSize) }
            guard let at = nextRingSlot(length: length) else { return }
            copyFrame(header: header, payloads: payloads,
                      into: UnsafeMutableRawBufferPointer(start: slab + at &* slotSize, count: length))
            return enqueueInRing(at: at, length: length, metadata: metadata, lent: nil)
        }
        let length = header.count
        guard length <= slotSize else { throw .frameTooLarge(size: length, max: slotSize) }
        guard let at = nextRingSlot(length: length) else { return }
        if let h = header.baseAddress { MemoryWireDirection.copy(from: h, to: slab + at &* slotSize, count: length) }
        enqueueInRing(at: at, length: length, metadata: metadata, lent: nil)
    }

    /// A perfect direction's `transmit` of bytes the wire reads only at delivery (see
    /// `MemoryLink.transmit(lending:)`).
    @inlinable @inline(__always)
    mutating func transmit(lending bytes: UnsafeRawPointer, count length: Int) throws(LinkError) {
        guard length <= slotSize else { throw .frameTooLarge(size: length, max: slotSize) }
        guard let at = nextRingSlot(length: length) else { return }
        enqueueInRing(at: at, length: length, metadata: .none, lent: bytes)
    }

    /// Counts a frame sent on a perfect direction and returns its ring position, or nil
    /// (counted) when the wire already holds its limit of frames.
    @inlinable @inline(__always)
    mutating func nextRingSlot(length: Int) -> Int? {
        counters.transmitted &+= 1
        counters.transmittedBytes &+= UInt64(length)
        guard inFlight < slotCount else {
            counters.queueDrops &+= 1
            return nil
        }
        let at = head &+ inFlight
        return at >= slotCount ? at &- slotCount : at
    }

    @inlinable @inline(__always)
    mutating func enqueueInRing(at: Int, length: Int, metadata: OffloadMetadata, lent: UnsafeRawPointer?) {
        queue[at] = FrameInFlight(deliverAt: .zero, sequence: sequence, slot: Int32(truncatingIfNeeded: at),
                                  length: Int32(truncatingIfNeeded: length), metadata: metadata, lent: lent)
        inFlight &+= 1
        sequence &+= 1
    }

    /// Every other case: gather lists, metadata to finish, impairments.
    @usableFromInline
    mutating func transmitImpaired(
        header: UnsafeRawBufferPointer, payloads: PayloadSlices, metadata: OffloadMetadata, now: Instant,
        carriesMetadata: Bool
    ) throws(LinkError) {
        let length = header.count + payloads.byteCount
        guard length <= slotSize else { throw .frameTooLarge(size: length, max: slotSize) }
        if !carriesMetadata, metadata.isSuperFrame {
            throw .unsupportedOffload("a super-frame (the wire was made without offload metadata)")
        }
        counters.transmitted &+= 1
        counters.transmittedBytes &+= UInt64(length)

        // `now` is zero unless the direction uses time.
        var departure = now
        if let rate = impairments.rateBitsPerSecond {
            let start = serializerFreeAt > now ? serializerFreeAt : now
            departure = Instant(nanoseconds: start.nanoseconds &+ Int64(length) * 8 * 1_000_000_000 / Int64(rate))
            serializerFreeAt = departure
        }
        if random.chance(impairments.loss) {
            counters.lost &+= 1
            return
        }
        let copies = random.chance(impairments.duplication) ? 2 : 1
        if copies == 2 { counters.duplicated &+= 1 }
        for _ in 0..<copies {
            guard inFlight < slotCount else {
                counters.queueDrops &+= 1
                return
            }
            let slot = takeSlot()
            let frame = UnsafeMutableRawBufferPointer(start: slab + Int(slot) * slotSize, count: length)
            copyFrame(header: header, payloads: payloads, into: frame)
            var carried = metadata
            if !carriesMetadata, let (start, offset) = metadata.partialChecksumLocation {
                OffloadMetadata.finishChecksum(in: frame, start: start, offset: offset)
                carried = .none
            }
            if random.chance(impairments.corruption) {
                let bit = Int(random.next() % UInt64(length * 8))
                frame[bit / 8] ^= UInt8(1) << (bit % 8)
                counters.corrupted &+= 1
            }
            var deliverAt = Instant(nanoseconds: departure.nanoseconds &+ delayNanoseconds)
            if jitterNanoseconds > 0 {
                deliverAt.nanoseconds &+= Int64(random.next() % UInt64(jitterNanoseconds + 1))
            }
            if random.chance(impairments.reordering) {
                deliverAt.nanoseconds &+= reorderDelayNanoseconds
                counters.reordered &+= 1
            }
            enqueue(FrameInFlight(deliverAt: deliverAt, sequence: sequence, slot: slot,
                                  length: Int32(length), metadata: carried))
            sequence &+= 1
        }
    }

    /// A free frame slot for the next frame (there is one: fewer than `slotCount` are in flight).
    private mutating func takeSlot() -> Int32 {
        if !reorders {
            let at = head &+ inFlight
            return Int32(truncatingIfNeeded: at >= slotCount ? at &- slotCount : at)
        }
        freeCount &-= 1
        return freeSlots[freeCount]
    }

    @usableFromInline
    mutating func copyFrame(header: UnsafeRawBufferPointer, payloads: PayloadSlices,
                                    into frame: UnsafeMutableRawBufferPointer) {
        var at = frame.baseAddress!
        if let h = header.baseAddress {
            MemoryWireDirection.copy(from: h, to: at, count: header.count)
            at += header.count
        }
        for slice in payloads.slices {
            guard let s = slice.baseAddress else { continue }
            payloadWitness?(slice)
            at.copyMemory(from: s, byteCount: slice.count)
            at += slice.count
            counters.payloadSlices &+= 1
        }
    }

    /// Copies a frame. Most frames are short: up to 64 bytes, four 16-byte moves (the
    /// second pair overlapping the first where the frame is shorter), with no loop; up to 256,
    /// a loop of 16-byte moves (the last one overlapping the one before); longer ones memmove.
    @inlinable @inline(__always)
    static func copy(from source: UnsafeRawPointer, to target: UnsafeMutableRawPointer, count: Int) {
        guard count >= 16, count <= 256 else { return target.copyMemory(from: source, byteCount: count) }
        typealias Chunk = SIMD16<UInt8>
        if count <= 32 {
            let a = source.loadUnaligned(as: Chunk.self)
            let b = source.loadUnaligned(fromByteOffset: count &- 16, as: Chunk.self)
            target.storeBytes(of: a, as: Chunk.self)
            target.storeBytes(of: b, toByteOffset: count &- 16, as: Chunk.self)
            return
        }
        if count <= 64 {
            let a = source.loadUnaligned(as: Chunk.self)
            let b = source.loadUnaligned(fromByteOffset: 16, as: Chunk.self)
            let c = source.loadUnaligned(fromByteOffset: count &- 32, as: Chunk.self)
            let d = source.loadUnaligned(fromByteOffset: count &- 16, as: Chunk.self)
            target.storeBytes(of: a, as: Chunk.self)
            target.storeBytes(of: b, toByteOffset: 16, as: Chunk.self)
            target.storeBytes(of: c, toByteOffset: count &- 32, as: Chunk.self)
            target.storeBytes(of: d, toByteOffset: count &- 16, as: Chunk.self)
            return
        }
        var i = 0
        while i &+ 16 < count {
            target.storeBytes(of: source.loadUnaligned(fromByteOffset: i, as: Chunk.self),
                              toByteOffset: i, as: Chunk.self)
            i &+= 16
        }
        target.storeBytes(of: source.loadUnaligned(fromByteOffset: count &- 16, as: Chunk.self),
                          toByteOffset: count &- 16, as: Chunk.self)
    }

    /// Receives into `burst` (see `Link.receive(into:max:burst:)`).
    @inlinable
    mutating func receive(into pool: BufferPool, max: Int, now: Instant,
                          burst: UnsafeMutablePointer<PacketBuffer>) -> Int {
        if !usesTime && !reorders { return receiveFromRing(into: pool, max: max, burst: burst) }
        return receiveArrived(into: pool, max: max, now: now, burst: burst)
    }

    /// A ring whose frames have all arrived, in order (no time, no reordering): the ring's
    /// place and count are kept in locals for the burst, with no arrival test.
    @inlinable
    mutating func receiveFromRing(into pool: BufferPool, max: Int, burst: UnsafeMutablePointer<PacketBuffer>) -> Int {
        let queue = self.queue, slab = self.slab, slotSize = self.slotSize, slotCount = self.slotCount
        // `max` bounds the frames taken off the wire, dropped ones included (see below).
        var at = head, left = inFlight, taken = 0, bytes = 0, tooLarge = 0
        let received = pool.fill(burst, upTo: Swift.min(max, left)) { space in
            while left > 0, taken < max {
                let frame = queue + at
                let length = Int(frame.pointee.length)
                at &+= 1
                if at == slotCount { at = 0 }
                left &-= 1
                taken &+= 1
                guard length <= space.count else {
                    // Counted, and its buffer takes the next frame, as in `receiveArrived`.
                    tooLarge &+= 1
                    continue
                }
                let source = frame.pointee.lent ?? UnsafeRawPointer(slab + Int(frame.pointee.slot) &* slotSize)
                MemoryWireDirection.copy(from: source, to: space.baseAddress.unsafelyUnwrapped, count: length)
                bytes &+= length
                return (length, frame.pointee.metadata)
            }
            return nil
        }
        inFlight = left
        // As `dequeue` does: an empty ring starts over at slot 0.
        head = left == 0 ? 0 : at
        counters.delivered &+= UInt64(truncatingIfNeeded: received)
        counters.deliveredBytes &+= UInt64(truncatingIfNeeded: bytes)
        counters.queueDrops &+= UInt64(truncatingIfNeeded: tooLarge)
        return received
    }

    /// Receives frame by frame, through bursts of at most `scratchCount` (`body` must not
    /// receive from this direction itself).
    @inlinable
    mutating func receive(
        into pool: BufferPool, max: Int, now: Instant, _ body: (consuming PacketBuffer) -> Void
    ) -> Int {
        // `max` bounds the frames taken off the wire, as in a burst: `inFlight` counts them.
        var received = 0, taken = 0
        while taken < max {
            let before = inFlight
            let n = receive(into: pool, max: Swift.min(max &- taken, MemoryWireDirection.scratchCount), now: now,
                            burst: scratch)
            taken &+= before &- inFlight
            // Each buffer goes back to the pool as `body` lets it go, for the next burst.
            for i in 0..<n { body((scratch + i).move()) }
            received &+= n
            guard n > 0 else { break }
        }
        return received
    }

    @inlinable static var scratchCount: Int { 32 }

    /// Every other direction: the frames that have arrived by `now`, from the ring or the
    /// heap. Not inlined: only a perfect direction's receive is on a fast path.
    @usableFromInline
    mutating func receiveArrived(into pool: BufferPool, max: Int, now: Instant,
                                 burst: UnsafeMutablePointer<PacketBuffer>) -> Int {
        // `max` bounds the frames taken off the wire, dropped ones included: bounded work.
        // Each descriptor is read in place; the counters are added once per burst.
        var taken = 0, bytes = 0, tooLarge = 0
        let received = pool.fill(burst, upTo: Swift.min(max, inFlight)) { space in
            while taken < max, inFlight > 0 {
                let frame = queue + (reorders ? 0 : head)
                guard !usesTime || frame.pointee.deliverAt <= now else { return nil }
                let length = Int(frame.pointee.length)
                let source = frame.pointee.lent ?? UnsafeRawPointer(slab + Int(frame.pointee.slot) &* slotSize)
                let metadata = frame.pointee.metadata
                dequeue()
                taken &+= 1
                guard length <= space.count else {
                    // The pool's buffers are smaller than this wire's frames: the frame cannot
                    // be received into this pool. Counted as dropped at the queue, not
                    // silently; its buffer takes the next frame.
                    tooLarge &+= 1
                    continue
                }
                MemoryWireDirection.copy(from: source, to: space.baseAddress.unsafelyUnwrapped, count: length)
                bytes &+= length
                return (length, metadata)
            }
            return nil
        }
        counters.delivered &+= UInt64(truncatingIfNeeded: received)
        counters.deliveredBytes &+= UInt64(truncatingIfNeeded: bytes)
        counters.queueDrops &+= UInt64(truncatingIfNeeded: tooLarge)
        return received
    }

    /// Takes up to `max` frames that have arrived and drops them unread, counted as
    /// delivered: a receiver that drops what it gets, with no copy into a pool buffer.
    @inlinable
    mutating func discard(max: Int, now: Instant) -> Int {
        if usesTime || reorders {
            var discarded = 0
            while discarded < max, inFlight > 0 {
                let frame = reorders ? queue[0] : queue[head]
                guard frame.deliverAt <= now || !usesTime else { break }
                dequeue()
                counters.delivered &+= 1
                counters.deliveredBytes &+= UInt64(frame.length)
                discarded &+= 1
            }
            return discarded
        }
        // Every frame in the ring has arrived: count their bytes, then take them in one go.
        let discarded = Swift.min(Swift.max(max, 0), inFlight)
        var bytes: UInt64 = 0
        var at = head
        for _ in 0..<discarded {
            bytes &+= UInt64(truncatingIfNeeded: queue[at].length)
            at &+= 1
            if at == slotCount { at = 0 }
        }
        counters.delivered &+= UInt64(discarded)
        counters.deliveredBytes &+= bytes
        inFlight &-= discarded
        // As `dequeue` does: an empty ring starts over at slot 0.
        head = inFlight == 0 ? 0 : at
        return discarded
    }

    private mutating func enqueue(_ frame: FrameInFlight) {
        if reorders {
            var i = inFlight
            queue[i] = frame
            inFlight &+= 1
            while i > 0 {
                let parent = (i - 1) / 2
                guard queue[i].arrivesBefore(queue[parent]) else { break }
                queue.swapAt(i, parent)
                i = parent
            }
        } else {
            // No division per frame: the ring index wraps by one subtraction.
            var at = head &+ inFlight
            if at >= slotCount { at &-= slotCount }
            queue[at] = frame
            inFlight &+= 1
        }
    }

    /// Removes the first frame to arrive and frees its slot.
    @inlinable
    mutating func dequeue() {
        if reorders { return dequeueFromHeap() }
        head &+= 1
        inFlight &-= 1
        // An empty ring starts over at slot 0: bursts then reuse the same few warm slots
        // instead of walking through all of them.
        if head == slotCount || inFlight == 0 { head = 0 }
    }

    @usableFromInline
    mutating func dequeueFromHeap() {
        freeSlots[freeCount] = queue[0].slot
        freeCount &+= 1
        inFlight &-= 1
        queue[0] = queue[inFlight]
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var first = i
            if l < inFlight, queue[l].arrivesBefore(queue[first]) { first = l }
            if r < inFlight, queue[r].arrivesBefore(queue[first]) { first = r }
            if first == i { break }
            queue.swapAt(i, first)
            i = first
        }
    }
}

extension UnsafeMutablePointer {
    /// Exchanges two elements.
    fileprivate func swapAt(_ i: Int, _ j: Int) {
        let t = self[i]
        self[i] = self[j]
        self[j] = t
    }
}
