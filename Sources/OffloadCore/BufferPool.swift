import Synchronization

/// A fixed number of packet buffers, allocated once, handed out and taken back in O(1).
///
/// The pool is the engine's packet buffer memory: one slab of `count` slots of
/// `bufferSize` bytes, and a stack of free slot numbers. `take()` pops a slot; a buffer's
/// end of life pushes it back. Nothing is allocated after `init`. When every slot is out,
/// `take()` returns nil and counts the failure in `exhaustions`.
public final class BufferPool {
    /// The pool's bookkeeping, at a fixed address so that buffers can reach it without
    /// reference counting.
    public struct State: ~Copyable {
        @usableFromInline var freeSlots: UnsafeMutablePointer<Int32>
        @usableFromInline var freeCount: Int
        @usableFromInline let slotCount: Int
        @usableFromInline var takes: UInt64 = 0
        @usableFromInline var exhaustions: UInt64 = 0
        /// Slots of buffers that ended their life on another thread, waiting for the
        /// owner to take them back (`reclaim()`).
        @usableFromInline let remote: Mutex<RemoteReturns>

        @inlinable
        init(freeSlots: UnsafeMutablePointer<Int32>, slotCount: Int) {
            self.freeSlots = freeSlots
            self.freeCount = slotCount
            self.slotCount = slotCount
            remote = Mutex(RemoteReturns(slots: .allocate(capacity: slotCount)))
        }

        @usableFromInline
        func giveBackFromAway(_ slot: Int32) {
            remote.withLock { r in
                r.slots[r.count] = slot
                r.count &+= 1
            }
        }

        @inlinable
        mutating func giveBack(_ slot: Int32) {
            precondition(freeCount < slotCount, "BufferPool: a slot was given back twice")
            freeSlots[freeCount] = slot
            freeCount &+= 1
        }
    }

    public let count: Int
    public let bufferSize: Int
    public let headroom: Int
    @usableFromInline let slab: UnsafeMutableRawPointer
    /// Bytes from one slot to the next: the buffer size, rounded up to a cache line and, when
    /// that is a multiple of 1 KiB, one line more. With 2 KiB slots every buffer's first line
    /// would fall in the same two sets of a 32 KiB L1 cache, and a burst's headers would
    /// evict each other.
    @usableFromInline let slotStride: Int
    /// `bufferSize` and `headroom` as a buffer stores them, converted once rather than on
    /// every `take()`.
    @usableFromInline let bufferSize32: Int32
    @usableFromInline let headroom32: Int32
    @usableFromInline let state: UnsafeMutablePointer<State>

    /// - Parameters:
    ///   - count: number of buffers.
    ///   - bufferSize: bytes per buffer, headroom included.
    ///   - headroom: bytes kept free in front of the data of a new buffer.
    public init(count: Int, bufferSize: Int = 2048, headroom: Int = 128) {
        precondition(count > 0 && count <= Int(Int32.max), "BufferPool: count out of range")
        precondition(bufferSize > headroom && bufferSize <= Int(Int32.max), "BufferPool: bad buffer size")
        self.count = count
        self.bufferSize = bufferSize
        self.headroom = headroom
        bufferSize32 = Int32(bufferSize)
        headroom32 = Int32(headroom)
        let lines = (bufferSize + 63) & ~63
        slotStride = lines % 1024 == 0 ? lines + 64 : lines
        slab = UnsafeMutableRawPointer.allocate(byteCount: count * slotStride, alignment: 64)
        let free = UnsafeMutablePointer<Int32>.allocate(capacity: count)
        // Lowest slots on top of the stack: a lightly loaded pool keeps reusing a few warm slots.
        for i in 0..<count { free[i] = Int32(count - 1 - i) }
        state = .allocate(capacity: 1)
        state.initialize(to: State(freeSlots: free, slotCount: count))
    }

    deinit {
        reclaim()
        // A buffer still out would point into freed memory: keep the memory instead.
        guard state.pointee.freeCount == count else { return }
        state.pointee.remote.withLock { $0.slots.deallocate() }
        state.pointee.freeSlots.deallocate()
        state.deinitialize(count: 1)
        state.deallocate()
        slab.deallocate()
    }

    /// A free buffer with the pool's headroom, or nil (counted) when every buffer is out.
    @inlinable
    public func take() -> PacketBuffer? {
        if state.pointee.freeCount == 0 && reclaim() == 0 {
            state.pointee.exhaustions &+= 1
            return nil
        }
        state.pointee.freeCount &-= 1
        state.pointee.takes &+= 1
        let slot = state.pointee.freeSlots[state.pointee.freeCount]
        return PacketBuffer(
            base: slab + Int(slot) &* slotStride, pool: state, slot: slot,
            capacity: bufferSize32, headroom: headroom32)
    }

    /// Fills `burst[0..<n]` with buffers written by `write`, and returns n: up to `wanted`,
    /// fewer when the pool runs short (counted as an exhaustion when it had none at all) or
    /// `write` returns nil. `write` gets each buffer's space after the headroom, puts a frame
    /// there and returns its length (at most the space) and offload metadata. A receive's
    /// burst in one pass: the free stack is read once, not per buffer. `write` must not take
    /// buffers from this pool or give any back.
    @inlinable @inline(__always)
    public func fill(
        _ burst: UnsafeMutablePointer<PacketBuffer>, upTo wanted: Int,
        _ write: (UnsafeMutableRawBufferPointer) -> (count: Int, offload: OffloadMetadata)?
    ) -> Int {
        if state.pointee.freeCount < wanted { reclaim() }
        let top = state.pointee.freeCount, free = state.pointee.freeSlots
        let available = Swift.min(wanted, top)
        let space = Int(bufferSize32 &- headroom32)
        var n = 0
        while n < available {
            // Taken from the top of the free stack, as `take` would, one after another.
            let slot = free[top &- 1 &- n]
            let base = slab + Int(slot) &* slotStride
            guard let (count, offload) = write(UnsafeMutableRawBufferPointer(start: base + Int(headroom32),
                                                                            count: space))
            else { break }
            precondition(count >= 0 && count <= space, "BufferPool.fill: a frame larger than its buffer")
            (burst + n).initialize(to: PacketBuffer(
                base: base, pool: state, slot: slot, capacity: bufferSize32, headroom: headroom32,
                count: Int32(truncatingIfNeeded: count), offload: offload))
            n &+= 1
        }
        state.pointee.freeCount = top &- n
        state.pointee.takes &+= UInt64(truncatingIfNeeded: n)
        // As for `take`: an exhaustion is a frame waiting with no buffer at all for it.
        if available == 0 && wanted > 0 { state.pointee.exhaustions &+= 1 }
        return n
    }

    /// Takes back the slots of buffers that ended on another thread (see
    /// `PacketBuffer.isAway`). `take()` does this when the pool looks empty; the owner may
    /// call it at any time. Returns how many came back.
    @discardableResult
    public func reclaim() -> Int {
        state.pointee.remote.withLock { r in
            for i in 0..<r.count {
                state.pointee.freeSlots[state.pointee.freeCount] = r.slots[i]
                state.pointee.freeCount &+= 1
            }
            defer { r.count = 0 }
            return r.count
        }
    }

    /// Buffers handed out and not yet back: the engine's buffered-packet counter.
    @inlinable public var inUse: Int { count - state.pointee.freeCount }
    /// Buffers free to take.
    @inlinable public var available: Int { state.pointee.freeCount }
    /// Successful `take()` calls.
    @inlinable public var takes: UInt64 { state.pointee.takes }
    /// `take()` calls that found the pool empty.
    @inlinable public var exhaustions: UInt64 { state.pointee.exhaustions }
}

/// Slots returned from other threads: a preallocated list behind the pool's mutex.
public struct RemoteReturns: @unchecked Sendable {
    // Unchecked: only ever touched inside the pool's mutex.
    @usableFromInline let slots: UnsafeMutablePointer<Int32>
    @usableFromInline var count = 0

    @usableFromInline init(slots: UnsafeMutablePointer<Int32>) { self.slots = slots }
}
