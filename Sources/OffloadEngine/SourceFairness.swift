import OffloadCore

/// B10: per-source fairness for new flows on their way to the software.
///
/// Why: the exception queue is bounded so that a flood of new flows costs the fast path
/// nothing, but a bound alone is first come, first served. One source that sends new flows
/// faster than the software sets them up keeps the queue full, and every other source's new
/// flows are then dropped at its entrance: the upcall storm starves everyone's flow setup.
///
/// The rule: sources are hashed (source address and ingress port, keyed by `seed`) into
/// `buckets`. A new-flow miss goes to the software only while its bucket has fewer packets in
/// the exception queue than the larger of `floorShare` of the queue and the queue's free room
/// (the free-room term is the dynamic threshold of shared switch buffers, Choudhury and Hahne
/// 1998, with alpha 1). So a source alone may fill about half the queue, a source with
/// nothing queued gets in while there is any room at all, and a flood from one bucket leaves
/// the rest of the queue to the others. A miss over its bucket's limit is dropped and
/// counted (`source-over-share`), as one that finds the queue full would be: no entry is
/// made, and the sender's retransmission tries again.
///
/// Only new misses are limited. A packet that holds a count on its flow's entry
/// (do-not-use) always follows the flow's earlier packets, so no flow is ever reordered.
/// The work per miss is a hash, a compare and a few array updates; nothing is allocated.
public struct SourceFairness: Sendable, Equatable {
    /// How many buckets sources are hashed into (at most 65,535).
    public var buckets = 64
    /// The share of the exception queue a bucket may always have in flight when there is
    /// room, however full the queue is.
    public var floorShare = 1.0 / 8
    /// Keys the hash, so that senders cannot aim their sources at another's bucket.
    public var seed: UInt64 = 0x6661_6972_6e65_7373

    public init() {}

    /// The bucket of new flows from `source` on `ingressPort`.
    @inlinable
    public func bucket(source: IPv4Address, ingressPort: UInt16) -> Int {
        var x = (UInt64(source.rawValue) << 16 | UInt64(ingressPort)) ^ seed
        // The splitmix64 finalizer: every input bit moves every output bit.
        x = (x ^ (x >> 30)) &* 0xbf58_476d_1ce4_e5b9
        x = (x ^ (x >> 27)) &* 0x94d0_49bb_1331_11eb
        x ^= x >> 31
        return Int(truncatingIfNeeded: x.multipliedFullWidth(by: UInt64(buckets)).high)
    }

    /// The bucket of a flow's new-flow misses.
    @inlinable
    public func bucket(of key: FlowKey) -> Int { bucket(source: key.source, ingressPort: key.ingressPort) }
}

/// The engine's bookkeeping for `SourceFairness`: per bucket, how many of its new-flow misses
/// are in the exception queue. The queue is first in, first out, and the engine is its only
/// producer, so the packets the software has taken since the last look are the oldest ones:
/// a shadow of the ring records each position's bucket, and `pushed - queued` says how far
/// the software has got. Preallocated: two bytes per queue slot and four per bucket.
final class SourceFairnessBook {
    static let untracked = UInt16.max

    let settings: SourceFairness
    /// A bucket may always have this many in flight (when the queue has room).
    let floor: Int
    private let inFlight: UnsafeMutablePointer<Int32>
    /// The bucket of the packet at each ring position (`untracked` for packets not limited).
    private let shadow: UnsafeMutablePointer<UInt16>
    private let mask: Int
    /// Packets the engine has pushed into the queue, and of those, how many have been counted
    /// out as taken by the software.
    private var pushed = 0
    private var retired = 0

    init(_ settings: SourceFairness, queueCapacity: Int) {
        precondition(settings.buckets >= 1 && settings.buckets < Int(UInt16.max),
                     "SourceFairness: 1 to 65,534 buckets")
        precondition(queueCapacity & (queueCapacity - 1) == 0, "SourceFairness: the queue's capacity is a power of two")
        self.settings = settings
        floor = max(1, Int(settings.floorShare * Double(queueCapacity)))
        inFlight = .allocate(capacity: settings.buckets)
        inFlight.initialize(repeating: 0, count: settings.buckets)
        shadow = .allocate(capacity: queueCapacity)
        shadow.initialize(repeating: SourceFairnessBook.untracked, count: queueCapacity)
        mask = queueCapacity - 1
    }

    deinit {
        inFlight.deallocate()
        shadow.deallocate()
    }

    /// Packets of `bucket` in the exception queue as of the last push or admission check.
    func inFlight(_ bucket: Int) -> Int { Int(inFlight[bucket]) }

    /// Counts out what the software has taken: with `queued` packets in the queue, all but
    /// the newest `queued` of those pushed have left it.
    @inline(__always)
    private func retire(queued: Int) {
        let taken = pushed &- queued
        while retired < taken {
            let b = shadow[retired & mask]
            if b != SourceFairnessBook.untracked { inFlight[Int(b)] &-= 1 }
            retired &+= 1
        }
    }

    /// Whether a new-flow miss of `bucket` may go to the software, with `queued` packets in a
    /// queue of `capacity`.
    func admits(_ bucket: Int, queued: Int, capacity: Int) -> Bool {
        retire(queued: queued)
        return Int(inFlight[bucket]) < max(floor, capacity - queued)
    }

    /// Records a packet the engine has just pushed (`queued` in the queue now, itself
    /// included), for `bucket` or `untracked`.
    func didPush(bucket: UInt16, queued: Int) {
        pushed &+= 1
        // The slot this packet took was freed by the software: retire its old occupant first.
        retire(queued: queued)
        shadow[(pushed &- 1) & mask] = bucket
        if bucket != SourceFairnessBook.untracked { inFlight[Int(bucket)] &+= 1 }
    }
}
