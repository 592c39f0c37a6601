import OffloadCore

/// Why the engine dropped a packet. Each is a counter.
public enum EngineDropReason: String, CaseIterable, Sendable, CustomStringConvertible {
    case actionDrop = "action-drop"
    case exceptionQueueFull = "exception-queue-full"
    case softwareDrop = "software-drop"
    case noEntryToComplete = "no-entry-to-complete"
    /// A packet handed back to be completed with its flow's entry that is not a packet of
    /// that flow (the software changed its headers, or gave back another frame): the entry's
    /// rewrite and checksum deltas would be wrong for it.
    case notTheCountedFlow = "not-the-counted-flow"
    case noSuchPort = "no-such-port"
    case transmitFailed = "transmit-failed"
    case auditFailed = "audit-failed"
    /// B10: a new flow's first packet whose source bucket already had its share of the
    /// exception queue (see `SourceFairness`).
    case sourceOverShare = "source-over-share"
    /// A segment for an offloaded connection that is malformed or fails its checksum.
    case badSegment = "bad-segment"
    /// An entry named an offload slot that holds no connection.
    case noOffloadedConnection = "no-offloaded-connection"

    public var description: String { rawValue }
}

/// The engine's counters. At rest: received = fastPath + reinsertedOut + consumedBySoftware
/// + deliveredToTCP + dropped.
public struct EngineCounters: Sendable, Equatable, CounterTable {
    public var received: UInt64 = 0
    /// Packets the fast path sent out (entry usable, action run in the engine).
    public var fastPath: UInt64 = 0
    /// Packets sent to the software, by reason.
    public var toSoftware = ReasonCounters<ExceptionReason>()
    /// Packets the software gave back that the engine then sent out.
    public var reinsertedOut: UInt64 = 0
    /// Of those, completed by the engine with the entry's action (the software's partial processing).
    public var completedByEngine: UInt64 = 0
    public var drops = ReasonCounters<EngineDropReason>()
    /// Packets for the software itself that it took (ARP replies it learned from).
    public var consumedBySoftware: UInt64 = 0
    /// Segments the engine's TCP took for an offloaded connection (seed 003).
    public var deliveredToTCP: UInt64 = 0
    /// Polls in which a port could not be read (it said why; the frames wait in the port).
    public var receiveErrors: UInt64 = 0
    /// Frames the software made itself (ARP requests) that the engine sent; not in `received`.
    public var originated: UInt64 = 0
    /// Of the software's own frames, those the port refused or that named no port.
    public var originatedNotSent: UInt64 = 0
    /// Do-not-use flags cleared because a flow's in-software count reached zero.
    public var flagsCleared: UInt64 = 0
    /// Times the software had every entry made stale (`SoftwareMessage.invalidateAll`).
    public var invalidations: UInt64 = 0
    /// Times a port's MTU was found changed (`Engine.portMTUs`).
    public var mtuChanges: UInt64 = 0
    /// Entries removed for being idle (B9).
    public var expired: UInt64 = 0
    /// Entries ended by a TCP FIN or RST on the fast path (B9): removed at a RST, marked
    /// closing at a FIN (they idle out after the closing timeout).
    public var tornDown: UInt64 = 0
    /// Audit mode: re-inserted packets whose engine mark was valid (they went straight on).
    public var auditValidMarks: UInt64 = 0
    /// Audit mode: packets with a forged, stale or mismatched mark, tested by the engine.
    public var auditInvalidMarks: UInt64 = 0
    /// Audit mode: packets that failed the compatibility test, by reason.
    public var auditFailures = ReasonCounters<CompatibilityFailure>()

    public init() {}

    public subscript(toSoftware reason: ExceptionReason) -> UInt64 {
        get { toSoftware[reason] }
        set { toSoftware[reason] = newValue }
    }

    public subscript(drop reason: EngineDropReason) -> UInt64 {
        get { drops[reason] }
        set { drops[reason] = newValue }
    }

    public var totalDrops: UInt64 { drops.total }
    public var totalToSoftware: UInt64 { toSoftware.total }

    public var rows: [(String, UInt64)] {
        [("received", received), ("fast path", fastPath), ("re-inserted and sent", reinsertedOut),
         ("completed by the engine", completedByEngine), ("consumed by the software", consumedBySoftware),
         ("delivered to the engine's TCP", deliveredToTCP), ("port receive errors", receiveErrors),
         ("originated by the software", originated),
         ("originated, not sent", originatedNotSent),
         ("do-not-use flags cleared", flagsCleared), ("invalidations asked by the software", invalidations),
         ("entries expired", expired), ("entries torn down", tornDown), ("port MTU changes", mtuChanges)]
            + [("audit: valid marks", auditValidMarks), ("audit: invalid marks", auditInvalidMarks)]
            + toSoftware.rows("to software: ") + drops.rows("dropped: ") + auditFailures.rows("audit failed: ")
    }
}
