import COffloadShim
import OffloadCore
import OffloadEngine

/// Bytes of connection-table memory per entry. The table allocates, once: the slot array
/// (64-byte `FlowEntry` lines, a power of two at least twice the capacity, so its load
/// factor never exceeds 0.5), a parallel array of 8-byte `FlowEntryCold` (the counters' high
/// halves, the closing mark), and 256 epoch counters. Nothing else per entry: RTP statistics are
/// kept only for RTP flows, and the slow path's action cache is the software's.
///
/// The table holds at most `capacity` entries, so its maximum load is `capacity / slots`
/// (0.5 when the capacity is a power of two, less otherwise), and the bytes per entry at that
/// load are the bytes per entry of capacity. The benchmark fills a table to capacity to show
/// the count, divides the computed allocation by it, and checks the computation against what
/// malloc says it handed out for the table (glibc's `mallinfo2`). Every slot is written when
/// the table is made, so all of the computed bytes are resident; malloc's figure adds the
/// slack of aligning a slot array of 2 MiB or more to 2 MiB for huge pages, up to 2 MiB of
/// address space that is mapped but never touched (it doubles the 10k table's). The reference is the bytes of one slot, so
/// the ratio is slots per entry: what the 0.5 load factor and the rounding up to a power of
/// two cost.
enum TableMemoryBenchmark {
    static func run(capacity: Int) -> BenchResult {
        let computed = ConnectionTable.memoryBytes(forCapacity: capacity)
        let before = Int(offload_malloc_bytes())
        var table = ConnectionTable(capacity: capacity)
        let now = Instant(nanoseconds: 0)
        var key = FlowKey(ingressPort: 0, protocol: 17, source: IPv4Address(10, 0, 0, 0),
                          destination: IPv4Address(10, 200, 0, 1), sourcePort: 0, destinationPort: 4000)
        for i in 0..<capacity {
            key.source = IPv4Address(rawValue: 0x0a00_0000 | UInt32(i >> 16))
            key.sourcePort = UInt16(truncatingIfNeeded: i)
            _ = table.insert(key, action: .drop, now: now)
        }
        precondition(table.count == capacity, "the table holds its capacity")
        let measured = Int(offload_malloc_bytes()) - before
        let slots = table.slotCount
        let perEntry = Double(computed) / Double(table.count)
        let load = Double(table.count) / Double(slots)
        let mib = { (bytes: Int) in format(Double(bytes) / 1_048_576) }
        // Full, the table is at its maximum load: per entry of capacity = per entry held.
        let detail = "full: \(table.count) entries in \(slots) slots, load \(format(load)); \(mib(computed)) MiB "
            + "allocated; malloc mapped \(mib(measured)) MiB, \(format(Double(measured) / Double(table.count))) B per entry"
            + (ConnectionTable.slotCount(forCapacity: capacity) * 64 >= 2 << 20
                ? " (with the slot array's 2 MiB alignment slack, never touched)" : "")
        return BenchResult(name: "table memory, \(capacity / 1000)k", value: perEntry, unit: "B/entry",
                           reference: ("one slot", Double(ConnectionTable.bytesPerSlot)),
                           target: "-", detail: detail)
    }
}
