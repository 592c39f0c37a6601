/// (deadline, slot) pairs, earliest first, in a binary heap: the offloaded connections'
/// timers (`TCPOffloadSchedule`).
struct DeadlineHeap {
    struct Entry {
        var deadline: Int64
        var slot: UInt32
    }

    private var entries: [Entry] = []

    init(capacity: Int) { entries.reserveCapacity(capacity) }

    var count: Int { entries.count }
    var min: Entry? { entries.first }

    mutating func push(_ deadline: Int64, _ slot: UInt32) {
        entries.append(Entry(deadline: deadline, slot: slot))
        siftUp(entries.count - 1)
    }

    mutating func popMin() {
        guard !entries.isEmpty else { return }
        entries.swapAt(0, entries.count - 1)
        entries.removeLast()
        siftDown(0)
    }

    /// Removes the entries `shouldRemove` picks and restores the heap order.
    mutating func removeAll(where shouldRemove: (Entry) -> Bool) {
        entries.removeAll(where: shouldRemove)
        for i in stride(from: entries.count / 2 - 1, through: 0, by: -1) { siftDown(i) }
    }

    private mutating func siftUp(_ start: Int) {
        var child = start
        while child > 0 {
            let parent = (child - 1) / 2
            guard entries[child].deadline < entries[parent].deadline else { return }
            entries.swapAt(child, parent)
            child = parent
        }
    }

    private mutating func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < entries.count && entries[left].deadline < entries[smallest].deadline { smallest = left }
            if right < entries.count && entries[right].deadline < entries[smallest].deadline { smallest = right }
            guard smallest != parent else { return }
            entries.swapAt(parent, smallest)
            parent = smallest
        }
    }
}
