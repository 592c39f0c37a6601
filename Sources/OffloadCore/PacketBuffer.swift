/// One packet in one pool slot, with exactly one owner.
///
/// The bytes live in the pool's preallocated slab: `[headroom][data][tailroom]`. Headers are
/// prepended in place by moving the data start into the headroom. When the buffer's owner
/// lets it go (it is consumed or goes out of scope), its slot returns to the pool: a buffer
/// cannot leak and cannot be used after it was given back, because it cannot be copied.
///
/// A pool belongs to one thread (the engine's). A buffer handed to another thread (the host
/// software's) is marked `isAway` first; if it ends there, its slot goes back through the
/// pool's locked side list, which the owner drains. Unmarked buffers return with no lock.
public struct PacketBuffer: ~Copyable {
    @usableFromInline let base: UnsafeMutableRawPointer
    @usableFromInline let pool: UnsafeMutablePointer<BufferPool.State>
    @usableFromInline let slot: Int32
    @usableFromInline let capacity: Int32
    @usableFromInline var start: Int32
    @usableFromInline var end: Int32
    /// Offload work that travels with the frame (partial checksum, TSO).
    public var offload: OffloadMetadata
    /// Set while the buffer is on a thread other than its pool's: its end of life then
    /// returns the slot under the pool's lock instead of on the owner's free stack.
    public var isAway = false

    @inlinable
    init(base: UnsafeMutableRawPointer, pool: UnsafeMutablePointer<BufferPool.State>, slot: Int32,
         capacity: Int32, headroom: Int32, count: Int32 = 0, offload: OffloadMetadata = .none) {
        self.base = base
        self.pool = pool
        self.slot = slot
        self.capacity = capacity
        self.start = headroom
        self.end = headroom &+ count
        self.offload = offload
    }

    @inlinable
    deinit {
        if isAway { pool.pointee.giveBackFromAway(slot) } else { pool.pointee.giveBack(slot) }
    }

    /// Number of data bytes.
    @inlinable public var count: Int { Int(end &- start) }
    /// Bytes free in front of the data, for headers to be prepended.
    @inlinable public var headroom: Int { Int(start) }
    /// Bytes free after the data.
    @inlinable public var tailroom: Int { Int(capacity &- end) }

    /// The data bytes. Valid while this buffer is alive and its count unchanged.
    @inlinable
    public var bytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + Int(start), count: count)
    }

    /// The data bytes, writable. Valid while this buffer is alive and its count unchanged.
    @inlinable
    public var mutableBytes: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: base + Int(start), count: count)
    }

    /// Everything from the data start to the end of the slot: where a receive writes a frame
    /// before `setCount` says how long it is.
    @inlinable
    public var writableSpace: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: base + Int(start), count: Int(capacity &- start))
    }

    /// Sets the data length, measured from the data start (after a receive into `writableSpace`).
    @inlinable
    public mutating func setCount(_ newCount: Int) throws(BufferError) {
        guard newCount >= 0, newCount <= Int(capacity &- start) else {
            throw .outOfRange(requested: newCount, available: Int(capacity &- start))
        }
        end = start &+ Int32(newCount)
    }

    /// Grows the data at the front by `n` bytes and returns them, for a header to be written.
    @inlinable
    @discardableResult
    public mutating func prepend(_ n: Int) throws(BufferError) -> UnsafeMutableRawBufferPointer {
        guard n >= 0, n <= headroom else { throw .noHeadroom(requested: n, available: headroom) }
        start &-= Int32(n)
        return UnsafeMutableRawBufferPointer(start: base + Int(start), count: n)
    }

    /// Grows the data at the back by `n` bytes and returns them.
    @inlinable
    @discardableResult
    public mutating func append(_ n: Int) throws(BufferError) -> UnsafeMutableRawBufferPointer {
        guard n >= 0, n <= tailroom else { throw .noTailroom(requested: n, available: tailroom) }
        let added = UnsafeMutableRawBufferPointer(start: base + Int(end), count: n)
        end &+= Int32(n)
        return added
    }

    /// Appends a copy of `source`.
    @inlinable
    public mutating func append(contentsOf source: UnsafeRawBufferPointer) throws(BufferError) {
        let space = try append(source.count)
        if let from = source.baseAddress { space.baseAddress!.copyMemory(from: from, byteCount: source.count) }
    }

    /// Drops `n` bytes from the front (a header that has been consumed).
    @inlinable
    public mutating func removeFront(_ n: Int) throws(BufferError) {
        guard n >= 0, n <= count else { throw .outOfRange(requested: n, available: count) }
        start &+= Int32(n)
    }

    /// Drops `n` bytes from the back (padding, a trailer).
    @inlinable
    public mutating func removeBack(_ n: Int) throws(BufferError) {
        guard n >= 0, n <= count else { throw .outOfRange(requested: n, available: count) }
        end &-= Int32(n)
    }

    /// Empties the buffer and puts the data start `headroom` bytes into the slot.
    @inlinable
    public mutating func reset(headroom: Int) throws(BufferError) {
        guard headroom >= 0, headroom <= Int(capacity) else {
            throw .outOfRange(requested: headroom, available: Int(capacity))
        }
        start = Int32(headroom)
        end = start
        offload = .none
    }

    /// The pool slot this buffer occupies (stable for the buffer's life; useful in traces).
    @inlinable public var slotIndex: Int { Int(slot) }
}

/// A request a packet buffer cannot satisfy.
public enum BufferError: Error, Equatable, Sendable, CustomStringConvertible {
    case noHeadroom(requested: Int, available: Int)
    case noTailroom(requested: Int, available: Int)
    case outOfRange(requested: Int, available: Int)

    public var description: String {
        switch self {
        case .noHeadroom(let r, let a): return "no headroom: \(r) bytes requested, \(a) available"
        case .noTailroom(let r, let a): return "no tailroom: \(r) bytes requested, \(a) available"
        case .outOfRange(let r, let a): return "out of range: \(r) bytes requested, \(a) available"
        }
    }
}
