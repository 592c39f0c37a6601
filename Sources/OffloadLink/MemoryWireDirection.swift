import OffloadCore

/// A frame on the wire: where its bytes are and when it may arrive.
@usableFromInline
struct FrameInFlight {
    var deliverAt: Instant
    /// Transmit order, to break ties between equal delivery times.
    var sequence: UInt64
    var slot: Int32
    var length: Int32
    var metadata: OffloadMetadata

    func arrivesBefore(_ other: FrameInFlight) -> Bool {
        deliverAt != other.deliverAt ? deliverAt < other.deliverAt : sequence < other.sequence
    }
}

/// One direction of a memory wire: preallocated frame slots, and the frames in flight
/// ordered by delivery time (a FIFO ring when frames cannot overtake each other, a binary
/// heap when jitter or reordering lets them). Nothing is allocated after init.
@usableFromInline
struct MemoryWireDirection {
    let impairments: Impairments
    /// Read once from `impairments`: whether delivery depends on the clock, and whether
    /// frames can overtake each other (a heap instead of a ring).
    let usesTime: Bool
    let reorders: Bool
    /// The impairments' durations in nanoseconds, converted once (Duration arithmetic is
    /// 128-bit and too slow for every frame).
    let delayNanoseconds: Int64
    let jitterNanoseconds: Int64
    let reorderDelayNanoseconds: Int64
    var random: SeededRandom
    var counters = MemoryWireCounters()
    let slotSize: Int
    let slab: UnsafeMutableRawPointer
    var freeSlots: [Int32]
    /// Ring (head, count) or heap (count) over `queue`.
    var queue: [FrameInFlight]
    var head = 0
    var inFlight = 0
    var sequence: UInt64 = 0
    /// When the sender's serializer is free again (rate limit).
    var serializerFreeAt = Instant.zero

    init(impairments: Impairments, random: SeededRandom, maxFrameSize: Int, slots: Int) {
        self.impairments = impairments
        usesTime = impairments.usesTime
        reorders = impairments.reorders
        delayNanoseconds = impairments.delay.nanoseconds
        jitterNanoseconds = impairments.jitter.nanoseconds
        reorderDelayNanoseconds = impairments.reorderDelay.nanoseconds
        self.random = random
        slotSize = maxFrameSize
        slab = .allocate(byteCount: maxFrameSize * slots, alignment: 64)
        freeSlots = (0..<Int32(slots)).reversed()
        freeSlots.reserveCapacity(slots)
        queue = Array(repeating: FrameInFlight(deliverAt: .zero, sequence: 0, slot: 0, length: 0, metadata: .none),
                      count: slots)
    }

    /// Frees the frame slots; the wire calls this once, when it goes.
    func deallocate() { slab.deallocate() }

    var nextDelivery: Instant? {
        guard inFlight > 0 else { return nil }
        return reorders ? queue[0].deliverAt : queue[head].deliverAt
    }

    mutating func transmit(
        header: UnsafeRawBufferPointer, payloads: PayloadSlices, metadata: OffloadMetadata,
        clock: any Clock, carriesMetadata: Bool
    ) throws(LinkError) {
        let length = header.count + payloads.byteCount
        guard length <= slotSize else { throw .frameTooLarge(size: length, max: slotSize) }
        if !carriesMetadata, case .tcpSegmentation = metadata {
            throw .unsupportedOffload("TCP segmentation (the wire was made without offload metadata)")
        }
        counters.transmitted &+= 1
        counters.transmittedBytes &+= UInt64(length)

        let now = usesTime ? clock.now : .zero
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
            guard let slot = freeSlots.popLast() else {
                counters.queueDrops &+= 1
                return
            }
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

    private mutating func copyFrame(header: UnsafeRawBufferPointer, payloads: PayloadSlices,
                                    into frame: UnsafeMutableRawBufferPointer) {
        var at = frame.baseAddress!
        if let h = header.baseAddress {
            at.copyMemory(from: h, byteCount: header.count)
            at += header.count
        }
        for slice in payloads.slices {
            guard let s = slice.baseAddress else { continue }
            at.copyMemory(from: s, byteCount: slice.count)
            at += slice.count
            counters.payloadSlices &+= 1
        }
    }

    mutating func receive(
        into pool: BufferPool, max: Int, now: Instant, _ body: (consuming PacketBuffer) -> Void
    ) -> Int {
        var received = 0
        while received < max, inFlight > 0 {
            let frame = reorders ? queue[0] : queue[head]
            guard frame.deliverAt <= now || !usesTime else { break }
            guard var buffer = pool.take() else { break }
            let bytes = UnsafeRawBufferPointer(start: slab + Int(frame.slot) * slotSize, count: Int(frame.length))
            do {
                try buffer.append(contentsOf: bytes)
            } catch {
                // The pool's buffers are smaller than this wire's frames: the frame cannot be
                // received into this pool. Count it as dropped at the queue, not silently.
                counters.queueDrops &+= 1
                dequeue()
                continue
            }
            buffer.offload = frame.metadata
            dequeue()
            counters.delivered &+= 1
            counters.deliveredBytes &+= UInt64(frame.length)
            received &+= 1
            body(buffer)
        }
        return received
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
            if at >= queue.count { at &-= queue.count }
            queue[at] = frame
            inFlight &+= 1
        }
    }

    /// Removes the first frame to arrive and frees its slot.
    private mutating func dequeue() {
        if reorders {
            freeSlots.append(queue[0].slot)
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
        } else {
            freeSlots.append(queue[head].slot)
            head &+= 1
            if head == queue.count { head = 0 }
            inFlight &-= 1
        }
    }
}
