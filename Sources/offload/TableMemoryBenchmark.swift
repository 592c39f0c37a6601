import OffloadCore
import OffloadEngine
#if canImport(Glibc)
import Glibc
#endif

/// Bytes of connection-table memory per entry. The table allocates, once: the slot array
/// (64-byte `FlowEntry` lines, a power of two at least twice the capacity, so its load
/// factor never exceeds 0.5), a parallel array of 8-byte `FlowEntryCold` (in-software count,
/// high packet counter), and 256 epoch counters. Nothing else per entry: RTP statistics are
/// kept only for RTP flows, and the slow path's action cache is the software's.
///
/// The table holds at most `capacity` entries, so its maximum load is `capacity / slots`
/// (0.5 when the capacity is a power of two, less otherwise), and the bytes per entry at that
/// load are the bytes per entry of capacity. The benchmark fills a table to capacity to show
/// the count, divides the computed allocation by it, and checks the computation against the
/// process's resident memory before the table was made and after it was filled (the table
/// writes every slot when it is made, so all of it is resident; with huge pages the figure
/// moves in 2 MiB steps). The reference is the bytes of one slot, so the ratio is slots per
/// entry: what the 0.5 load factor and the rounding up to a power of two cost.
enum TableMemoryBenchmark {
    static func run(capacity: Int) -> BenchResult {
        let computed = ConnectionTable.memoryBytes(forCapacity: capacity)
        let before = residentBytes()
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
        let measured = residentBytes() - before
        let slots = table.slotCount
        let perEntry = Double(computed) / Double(table.count)
        let load = Double(table.count) / Double(slots)
        let mib = { (bytes: Int) in format(Double(bytes) / 1_048_576) }
        // Full, the table is at its maximum load: per entry of capacity = per entry held.
        let detail = "full: \(table.count) entries in \(slots) slots, load \(format(load)); \(mib(computed)) MiB "
            + "allocated; resident memory grew \(mib(measured)) MiB, \(format(Double(measured) / Double(table.count))) B per entry"
        return BenchResult(name: "table memory, \(capacity / 1000)k", value: perEntry, unit: "B/entry",
                           reference: ("one slot", Double(ConnectionTable.bytesPerSlot)),
                           target: "-", detail: detail)
    }

    /// The process's resident memory, from /proc/self/statm (0 where there is none).
    static func residentBytes() -> Int {
        #if canImport(Glibc)
        let fd = open("/proc/self/statm", O_RDONLY)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var text = [UInt8](repeating: 0, count: 128)
        let n = text.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return 0 }
        // "size resident shared ...", in pages.
        let fields = text[0..<n].split(separator: UInt8(ascii: " "))
        guard fields.count > 1, let pages = Int(String(decoding: fields[1], as: UTF8.self)) else { return 0 }
        return pages * sysconf(Int32(_SC_PAGESIZE))
        #else
        return 0
        #endif
    }
}
