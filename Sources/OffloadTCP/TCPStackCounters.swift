/// What a stack did beyond its connections, and how many it holds.
public struct TCPStackCounters: Hashable, Sendable {
    public var connectionsOpened: UInt64 = 0
    public var connectionsAccepted: UInt64 = 0
    public var connectionsClosed: UInt64 = 0
    /// Connections that ended by a reset, a timeout or an abort.
    public var connectionsFailed: UInt64 = 0
    /// Segments for no connection and no listener (answered with a RST unless one).
    public var segmentsWithoutSocket: UInt64 = 0
    public var resetsSent: UInt64 = 0
    /// SYNs dropped: the accept queue was full.
    public var synsDroppedBacklogFull: UInt64 = 0
    public var synCookiesSent: UInt64 = 0
    public var synCookiesAccepted: UInt64 = 0
    /// ACKs to a listener that carried no valid cookie (answered with a RST).
    public var synCookiesRejected: UInt64 = 0
    /// Control segments (RSTs, cookie SYN-ACKs) dropped because their queue was full.
    public var controlQueueDrops: UInt64 = 0
    /// Connections offered to the engine (T1; one it has no room for comes straight back and
    /// counts in both), and handed back.
    public var connectionsOffloaded: UInt64 = 0
    public var connectionsUploaded: UInt64 = 0
    /// Segments of an offloaded connection that reached the stack (its glue should have
    /// passed them to the engine); dropped.
    public var segmentsForOffloaded: UInt64 = 0
    public init() {}
}
