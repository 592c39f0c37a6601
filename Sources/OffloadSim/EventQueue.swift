import OffloadCore

struct TimedEvent {
    let at: Instant
    let id: EventID
    let action: () -> Void

    /// Earlier time first; at equal times, the one scheduled first.
    func precedes(_ other: TimedEvent) -> Bool {
        at != other.at ? at < other.at : id.value < other.id.value
    }
}

/// A binary min-heap of timed events with lazy cancellation.
struct EventQueue {
    private var heap: [TimedEvent] = []
    private var cancelled: Set<EventID> = []

    var nextTime: Instant? {
        mutating get {
            dropCancelled()
            return heap.first?.at
        }
    }

    var count: Int { heap.count - cancelled.count }

    mutating func push(_ event: TimedEvent) {
        heap.append(event)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[i].precedes(heap[parent]) else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    mutating func cancel(_ id: EventID) {
        if heap.contains(where: { $0.id == id }) { cancelled.insert(id) }
    }

    /// Removes and returns the first event; call only when `nextTime` is not nil.
    mutating func pop() -> TimedEvent {
        dropCancelled()
        return removeFirst()
    }

    private mutating func dropCancelled() {
        while let first = heap.first, cancelled.contains(first.id) {
            cancelled.remove(first.id)
            _ = removeFirst()
        }
    }

    private mutating func removeFirst() -> TimedEvent {
        let first = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count, heap[l].precedes(heap[m]) { m = l }
                if r < heap.count, heap[r].precedes(heap[m]) { m = r }
                if m == i { break }
                heap.swapAt(i, m)
                i = m
            }
        }
        return first
    }
}
