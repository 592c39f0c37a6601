import OffloadEngine

/// Packets the software holds while their flow's next hop is resolved, in arrival order,
/// with the hop each waits for. Bounded; allocated once.
struct HeldPackets: ~Copyable {
    private let items: UnsafeMutablePointer<ExceptionItem>
    private let hops: UnsafeMutablePointer<NextHop>
    let capacity: Int
    private(set) var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        items = .allocate(capacity: capacity)
        hops = .allocate(capacity: capacity)
    }

    deinit {
        items.deinitialize(count: count)
        items.deallocate()
        hops.deinitialize(count: count)
        hops.deallocate()
    }

    var isFull: Bool { count == capacity }

    /// Holds `item` behind the others. The caller checked `isFull`.
    mutating func append(_ item: consuming ExceptionItem, waitingFor hop: NextHop) {
        precondition(count < capacity, "HeldPackets: full")
        (items + count).initialize(to: item)
        (hops + count).initialize(to: hop)
        count += 1
    }

    /// Hands over, in order, each held packet for which `release` says yes, as long as
    /// `more()` allows; the others keep their order.
    mutating func release(where release: (NextHop) -> Bool, while more: () -> Bool,
                          _ body: (consuming ExceptionItem, NextHop) -> Void) {
        var kept = 0
        var i = 0
        while i < count {
            let hop = hops[i]
            if more(), release(hop) {
                body((items + i).move(), hop)
                (hops + i).deinitialize(count: 1)
            } else {
                if kept != i {
                    (items + kept).moveInitialize(from: items + i, count: 1)
                    (hops + kept).moveInitialize(from: hops + i, count: 1)
                }
                kept += 1
            }
            i += 1
        }
        count = kept
    }
}
