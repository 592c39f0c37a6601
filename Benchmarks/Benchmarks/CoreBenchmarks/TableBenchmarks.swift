import Benchmark
import OffloadCore
import OffloadEngine

/// A table and a stream of its keys in random order, built in a benchmark's setup (so that
/// listing or filtering benchmarks does not build a 1M-entry table).
private final class TableFixture: @unchecked Sendable {
    // Unchecked: a benchmark runs its setup, iterations and teardown on one thread at a time.
    var table = ConnectionTable(capacity: 1)
    var keys = UnsafeMutableBufferPointer<FlowKey>.allocate(capacity: 0)
    var handles = UnsafeMutableBufferPointer<EntryHandle?>.allocate(capacity: 32)
    var cursor = 0

    func build(flows: Int) {
        table = ConnectionTable(capacity: flows, hashSeed: 0x1234_5678_9abc_def1)
        keys.deallocate()
        keys = .allocate(capacity: flows)
        var rng = SeededRandom(seed: UInt64(flows))
        var n = 0
        while n < flows {
            let r = rng.next()
            let key = FlowKey(ingressPort: UInt16(r & 3), protocol: r & 4 == 0 ? 6 : 17,
                              source: IPv4Address(rawValue: UInt32(truncatingIfNeeded: r >> 32)),
                              destination: IPv4Address(rawValue: 0xc0a8_0000 | UInt32(truncatingIfNeeded: r >> 8) & 0xffff),
                              sourcePort: UInt16(truncatingIfNeeded: rng.next()), destinationPort: 443)
            let action = FlowAction.forward(FlowAction.Forward(
                outputPort: 1, destinationMAC: .local(2), sourceMAC: .local(1),
                translatedSource: IPv4Address(203, 0, 113, 1), translatedSourcePort: UInt16(truncatingIfNeeded: n)))
            if case .inserted = table.insert(key, action: action, now: .zero) {
                keys[n] = key
                n += 1
            }
        }
        // Visit the keys in random order (Fisher-Yates), so that consecutive lookups share no cache lines.
        for i in stride(from: flows - 1, to: 0, by: -1) {
            keys.swapAt(i, Int(rng.next() % UInt64(i + 1)))
        }
        cursor = 0
    }

    func release() {
        table = ConnectionTable(capacity: 1)
        keys.deallocate()
        keys = .allocate(capacity: 0)
    }

    /// The next 32 keys of the stream.
    @inline(__always)
    func nextBurst() -> UnsafeBufferPointer<FlowKey> {
        if cursor + 32 > keys.count { cursor = 0 }
        defer { cursor += 32 }
        return UnsafeBufferPointer(rebasing: keys[cursor..<(cursor + 32)])
    }
}

/// Connection-table lookups: one op is a burst of 32 lookups of random existing keys
/// (lookups/s = 32 x the throughput). The name gives the table's bytes per entry (slots at
/// load factor at most 0.5, rounded up to a power of two, 64-byte entries + 8 cold bytes).
func tableBenchmarks() {
    let configuration = Benchmark.Configuration(
        metrics: [.throughput, .wallClock, .mallocCountTotal, .instructions],
        scalingFactor: .kilo, maxDuration: .seconds(2), maxIterations: 100_000)

    for flows in [10_000, 1_000_000] {
        let bytesPerEntry = (ConnectionTable.memoryBytes(forCapacity: flows) + flows - 1) / flows
        let label = "\(flows / 1000)k flows, \(bytesPerEntry) B/entry"
        let fixture = TableFixture()
        var setup: Benchmark.BenchmarkSetupHook { { fixture.build(flows: flows) } }
        var teardown: Benchmark.BenchmarkTeardownHook { { fixture.release() } }

        Benchmark("table lookup burst of 32, \(label)", configuration: configuration, closure: { benchmark in
            for _ in benchmark.scaledIterations {
                burstLookup(fixture.table, fixture.nextBurst(), fixture.handles)
            }
        }, setup: setup, teardown: teardown)

        Benchmark("table lookup 32 one by one, \(label)", configuration: configuration, closure: { benchmark in
            for _ in benchmark.scaledIterations {
                lookupOneByOne(fixture.table, fixture.nextBurst(), fixture.handles)
            }
        }, setup: setup, teardown: teardown)

        Benchmark("table lookup + usable + hit, burst of 32, \(label)", configuration: configuration,
                  closure: { benchmark in
            for _ in benchmark.scaledIterations {
                lookupAndHit(fixture.table, fixture.nextBurst(), fixture.handles, now: Instant(nanoseconds: 1 << 30))
            }
        }, setup: setup, teardown: teardown)
    }
}

// The loops take the table borrowed, so the class property is accessed once per burst.

@inline(never)
private func burstLookup(_ table: borrowing ConnectionTable, _ keys: UnsafeBufferPointer<FlowKey>,
                         _ handles: UnsafeMutableBufferPointer<EntryHandle?>) {
    table.lookup(keys, into: handles)
    blackHole(handles[31])
}

@inline(never)
private func lookupOneByOne(_ table: borrowing ConnectionTable, _ keys: UnsafeBufferPointer<FlowKey>,
                            _ handles: UnsafeMutableBufferPointer<EntryHandle?>) {
    for i in 0..<keys.count { handles[i] = table.lookup(keys[i]) }
    blackHole(handles[31])
}

/// What the engine does per burst: look up, check each entry is usable, count the hit.
@inline(never)
private func lookupAndHit(_ table: borrowing ConnectionTable, _ keys: UnsafeBufferPointer<FlowKey>,
                          _ handles: UnsafeMutableBufferPointer<EntryHandle?>, now: Instant) {
    table.lookup(keys, into: handles)
    for i in 0..<keys.count {
        if let h = handles[i], table.isUsable(h) { table.recordHit(h, bytes: 1500, now: now) }
    }
}
