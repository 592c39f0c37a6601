import COffloadShim
#if canImport(Glibc)
import Glibc
#endif
import OffloadEngine

/// The actions the software decided lately, by flow: for a flow's later packets that reach
/// the software before its entry is usable, so that they are processed like its first.
///
/// A fixed set-associative array, allocated once: each flow has a bucket of two ways, picked
/// by the table's keyed hash (`FlowKey.tableHash`, a few multiplications where a `Dictionary`
/// would run SipHash for every new flow). A decision takes the way that holds its flow, else
/// the one written longer ago. A flow that lost its way is decided again if another of its
/// packets comes, which a policy must allow anyway: it decides again whenever the flow's
/// entry is gone. The flows being set up at once are at most an exception queue's worth; with
/// eight buckets for each of its places (`SlowPath`'s choice), a flow loses its way to two
/// later ones in its bucket about once in 140.
struct FlowActionCache: ~Copyable {
    /// One way: the key's two words (the second with `occupied` set, as no key uses that
    /// bit; both 0 when empty) and the action; in a bucket's first way, also which of the two
    /// was written longer ago. One cache line, so a bucket is two lines side by side.
    struct Way {
        var keyHigh: UInt64
        var keyLow: UInt64
        var action: FlowAction
        /// The bucket's older way, 0 or 1 (read in its first way only).
        var older: UInt16
    }

    private let ways: UnsafeMutablePointer<Way>
    private let byteCount: Int
    private let bucketMask: Int
    private let seed: UInt64

    private static var occupied: UInt64 { 0x100 }

    /// `buckets` is rounded up to a power of two; each takes 128 bytes of address space, and
    /// of memory only once a flow has used it: the ways are mapped anonymous memory, whose
    /// pages the kernel gives out zeroed when first touched, and all-zero bytes are an empty
    /// way (a `Way` holds plain values only). A slow path made for a short simulation so
    /// costs a few pages, not megabytes written at its start.
    init(buckets: Int, seed: UInt64) {
        var n = 1
        while n < buckets { n <<= 1 }
        bucketMask = n - 1
        self.seed = seed
        byteCount = 2 * n * MemoryLayout<Way>.stride
        let raw = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let raw, raw != MAP_FAILED else { fatalError("FlowActionCache: cannot map \(byteCount) bytes") }
        ways = raw.bindMemory(to: Way.self, capacity: 2 * n)
    }

    deinit {
        munmap(ways, byteCount)
    }

    /// The first of the two ways of the key's bucket.
    private func bucket(of a: UInt64, _ b: UInt64) -> UnsafeMutablePointer<Way> {
        ways + ((Int(truncatingIfNeeded: FlowKey.tableHash(a, b, seed: seed)) & bucketMask) &<< 1)
    }

    /// Starts loading the key's bucket, for a lookup or a decision soon after.
    func prefetch(_ key: FlowKey) {
        let (a, b) = key.packed
        let first = bucket(of: a, b)
        offload_prefetch(first)
        offload_prefetch(first + 1)
    }

    /// Which of the bucket's two ways holds the key (`stored` is its second word marked
    /// occupied), if either.
    private func way(holding a: UInt64, _ stored: UInt64, from first: UnsafeMutablePointer<Way>) -> Int? {
        if first[0].keyLow == stored && first[0].keyHigh == a { return 0 }
        if first[1].keyLow == stored && first[1].keyHigh == a { return 1 }
        return nil
    }

    subscript(key: FlowKey) -> FlowAction? {
        let (a, b) = key.packed
        let first = bucket(of: a, b)
        return way(holding: a, b | Self.occupied, from: first).map { first[$0].action }
    }

    /// Writes through the array only, so the cache can be a `let`.
    func record(_ action: FlowAction, for key: FlowKey) {
        let (a, b) = key.packed
        let first = bucket(of: a, b), stored = b | Self.occupied
        let index = way(holding: a, stored, from: first) ?? Int(first.pointee.older)
        first[index].keyHigh = a
        first[index].keyLow = stored
        first[index].action = action
        // The way written now is the newer one.
        first.pointee.older = UInt16(1 &- index)
    }

    /// Forgets every action: the pages go back to the kernel, which gives them out zeroed
    /// (empty ways) when next touched, so the cost is that of the buckets used.
    func removeAll() {
        guard madvise(ways, byteCount, MADV_DONTNEED) == 0 else { fatalError("FlowActionCache: cannot clear") }
    }

    /// Forgets the key's action, if held: its flow's next packet is decided again.
    func forget(_ key: FlowKey) {
        let (a, b) = key.packed
        let first = bucket(of: a, b)
        guard let index = way(holding: a, b | Self.occupied, from: first) else { return }
        first[index].keyHigh = 0
        first[index].keyLow = 0
        // The emptied way is the one to write next.
        first.pointee.older = UInt16(index)
    }
}
