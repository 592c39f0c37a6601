import Synchronization

/// A bounded single-producer single-consumer ring: the queues between the engine and the
/// host software (exception queue, re-insertion queue, completions) when they run on two
/// threads.
///
/// One thread pushes, one thread pops; each keeps a cached copy of the other's index so that
/// most operations touch no shared cache line. Elements may be `~Copyable` (packet buffers):
/// a push that finds the ring full hands the element back. Capacity is a power of two.
public final class SPSCRing<Element: ~Copyable>: @unchecked Sendable {
    // Unchecked: safe under the one-producer, one-consumer rule; the indices are atomics and
    // a slot is written by exactly one side before the index release that publishes it.
    @usableFromInline let slots: UnsafeMutablePointer<Element>
    @usableFromInline let mask: Int
    /// Next slot to pop (written by the consumer).
    @usableFromInline let head = Atomic<Int>(0)
    @usableFromInline var headPadding: (Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0)
    /// Next slot to push (written by the producer).
    @usableFromInline let tail = Atomic<Int>(0)
    @usableFromInline var tailPadding: (Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0)
    /// The producer's last view of `head`, and the consumer's of `tail`.
    @usableFromInline var producerCachedHead = 0
    @usableFromInline var consumerCachedTail = 0

    public init(capacity: Int) {
        precondition(capacity >= 2 && capacity & (capacity - 1) == 0, "SPSCRing: capacity must be a power of two")
        slots = .allocate(capacity: capacity)
        mask = capacity - 1
    }

    deinit {
        var h = head.load(ordering: .relaxed)
        let t = tail.load(ordering: .relaxed)
        while h != t {
            (slots + (h & mask)).deinitialize(count: 1)
            h &+= 1
        }
        slots.deallocate()
    }

    @inlinable public var capacity: Int { mask + 1 }

    /// Elements in the ring right now (exact on either side when the other is idle).
    @inlinable
    public var count: Int { tail.load(ordering: .acquiring) &- head.load(ordering: .acquiring) }

    @inlinable public var isEmpty: Bool { count == 0 }

    /// Producer: adds `element`, or returns it when the ring is full.
    @inlinable
    public func push(_ element: consuming Element) -> Element? {
        let t = tail.load(ordering: .relaxed)
        if t &- producerCachedHead > mask {
            producerCachedHead = head.load(ordering: .acquiring)
            if t &- producerCachedHead > mask { return element }
        }
        (slots + (t & mask)).initialize(to: element)
        tail.store(t &+ 1, ordering: .releasing)
        return nil
    }

    /// Consumer: removes the oldest element, or nil when the ring is empty.
    @inlinable
    public func pop() -> Element? {
        let h = head.load(ordering: .relaxed)
        if h == consumerCachedTail {
            consumerCachedTail = tail.load(ordering: .acquiring)
            if h == consumerCachedTail { return nil }
        }
        let element = (slots + (h & mask)).move()
        head.store(h &+ 1, ordering: .releasing)
        return element
    }

    /// Consumer: lets `body` look at the element `offset` places behind the oldest, without
    /// taking it (to prefetch what it will need); nil when there is none.
    @inlinable
    public func peek<R>(at offset: Int, _ body: (borrowing Element) -> R) -> R? {
        // Behind the oldest lie slots already taken: never those.
        precondition(offset >= 0, "SPSCRing.peek: a negative offset")
        let h = head.load(ordering: .relaxed)
        if offset >= consumerCachedTail &- h {
            consumerCachedTail = tail.load(ordering: .acquiring)
            if offset >= consumerCachedTail &- h { return nil }
        }
        return body((slots + ((h &+ offset) & mask)).pointee)
    }

    /// Consumer: removes up to `max` elements, oldest first, handing each to `body`; publishes
    /// the new head once. Returns how many.
    @inlinable
    @discardableResult
    public func pop(max: Int, _ body: (consuming Element) -> Void) -> Int {
        let h = head.load(ordering: .relaxed)
        consumerCachedTail = tail.load(ordering: .acquiring)
        let n = Swift.min(max, consumerCachedTail &- h)
        guard n > 0 else { return 0 }
        for i in 0..<n { body((slots + ((h &+ i) & mask)).move()) }
        head.store(h &+ n, ordering: .releasing)
        return n
    }
}
