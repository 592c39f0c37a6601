import OffloadCore

/// A reference to an entry in a `ConnectionTable`: its slot.
///
/// Valid until the next call that inserts or removes (`insert`, `remove`, `expireIdle`,
/// `removeAll`): backward-shift deletion moves entries to other slots. Reading or updating
/// through a handle never touches memory outside the table (the slot index is checked against
/// the table's size), but a handle kept across a removal may name another flow's entry.
public struct EntryHandle: Hashable, Sendable {
    @usableFromInline let slot: UInt32

    @inlinable init(slot: Int) { self.slot = UInt32(truncatingIfNeeded: slot) }

    @inlinable var index: Int { Int(slot) }
}

/// What `ConnectionTable.insert` did.
public enum InsertOutcome: Hashable, Sendable {
    /// A new entry.
    case inserted(EntryHandle)
    /// The key had an entry (current or stale): its action, epoch, do-not-use flag and
    /// last-used time are replaced; its counters and in-software count carry over.
    case replaced(EntryHandle)
    /// The table was full: `victim` was evicted (its last counters in `stats`), then the new
    /// entry inserted.
    case evicted(victim: FlowKey, stats: FlowEntryStats, EntryHandle)
    /// The table was full and every eviction candidate had packets in the software: nothing
    /// changed, and the software keeps handling the flow on the slow path (B9).
    case full

    /// The entry's handle, nil when the table was full.
    @inlinable
    public var handle: EntryHandle? {
        switch self {
        case .inserted(let h), .replaced(let h), .evicted(_, _, let h): return h
        case .full: return nil
        }
    }
}

/// Idle timeouts by protocol, in `ConnectionTable.tick(_:)` units (about a millisecond).
public struct IdleTimeouts: Hashable, Sendable {
    public var tcpTicks: UInt32
    public var udpTicks: UInt32
    public var otherTicks: UInt32
    /// For a TCP flow that has sent a FIN (`ConnectionTable.markClosing`).
    public var tcpClosingTicks: UInt32

    /// Linux conntrack's defaults are 5 days for established TCP and 30 s / 120 s for UDP;
    /// a gateway that evicts under pressure can afford shorter ones. A closing TCP flow's
    /// last ACKs come within a round trip or two, and a straggler after that goes through
    /// the software, which can build the entry again.
    public init(tcp: Duration = .seconds(300), udp: Duration = .seconds(30), other: Duration = .seconds(30),
                tcpClosing: Duration = .seconds(10)) {
        tcpTicks = ConnectionTable.ticks(tcp)
        udpTicks = ConnectionTable.ticks(udp)
        otherTicks = ConnectionTable.ticks(other)
        tcpClosingTicks = ConnectionTable.ticks(tcpClosing)
    }

    /// The timeout for a key's protocol.
    @inlinable
    public func ticks(forProtocol proto: UInt8) -> UInt32 {
        proto == 6 ? tcpTicks : proto == 17 ? udpTicks : otherTicks
    }
}

/// What the table did since it was made: plain integers, read as a snapshot.
public struct ConnectionTableCounters: Hashable, Sendable, CounterTable {
    public var inserted: UInt64 = 0
    public var replaced: UInt64 = 0
    /// Entries pushed out by an insert into a full table (flow thrash when it climbs).
    public var evicted: UInt64 = 0
    /// Inserts refused because every eviction candidate had packets in the software.
    public var rejectedFull: UInt64 = 0
    public var removed: UInt64 = 0
    /// Entries removed by `expireIdle` for being idle or stale.
    public var expired: UInt64 = 0
    /// Slots `expireIdle` examined (the idle sweep's work).
    public var swept: UInt64 = 0
    /// Calls of `invalidateAll`.
    public var invalidations: UInt64 = 0
    /// Inserts refused because the translation notices had no room for what they would announce.
    public var rejectedNoticeRoom: UInt64 = 0
    /// Translation notices that found their ring full (only a forced `remove` can): the
    /// software never hears that those entries went.
    public var noticesLost: UInt64 = 0

    public init() {}

    public var rows: [(String, UInt64)] {
        [("table inserted", inserted), ("table replaced", replaced), ("table evicted", evicted),
         ("table rejected full", rejectedFull), ("table removed", removed), ("table expired", expired),
         ("table slots swept", swept), ("table invalidations", invalidations),
         ("table rejected: notice room", rejectedNoticeRoom), ("table notices lost", noticesLost)]
    }
}

/// A translating entry (one that rewrites an address or a port: a NAT's) came to be for
/// `key`, or went (removed, expired, evicted, or replaced by an entry that does not
/// translate). The table announces each such change, in order, to the software that
/// allocated what the entry translates to, so it knows when nothing uses it any more.
public struct TranslationNotice: Hashable, Sendable {
    public var key: FlowKey
    /// True when the translating entry came to be, false when it went.
    public var began: Bool

    public init(key: FlowKey, began: Bool) {
        self.key = key
        self.began = began
    }
}
