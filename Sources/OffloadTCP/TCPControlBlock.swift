import OffloadCore

/// A connection's control block, split as TCP Chimney split it (T2), so that an engine can
/// take over the delegated part while the host keeps the rest.
public struct TCPControlBlock: Sendable {
    public var constant: TCPConstantState
    public var cached: TCPCachedState
    public var delegated: TCPDelegatedState
}

/// Fixed once the handshake is done.
public struct TCPConstantState: Hashable, Sendable {
    public var id: TCPConnectionID
    /// The MSS we advertised.
    public var localMSS: Int
    /// The MSS the peer advertised (536 when it did not, RFC 9293 3.7.1).
    public var remoteMSS: Int
    /// Shift applied to windows the peer advertises, and to ours (0 without scaling).
    /// Both SYNs carried a window scale (RFC 7323 2.2).
    public var windowScaling: Bool
    public var sendWindowShift: UInt8
    public var receiveWindowShift: UInt8
    public var sackPermitted: Bool
    public var timestamps: Bool
    public var initialSendSequence: SequenceNumber
    public var initialReceiveSequence: SequenceNumber

    /// Payload bytes per full segment: the smaller MSS, less the timestamps option when
    /// every segment carries it (RFC 6691).
    public var segmentSize: Int { min(localMSS, remoteMSS) - (timestamps ? 12 : 0) }
}

/// Values the host owns and may change with update calls.
public struct TCPCachedState: Hashable, Sendable {
    public var timeToLive: UInt8
    public var typeOfService: UInt8
    public var noDelay: Bool
}

/// Owned by whoever runs the connection: host software now, the engine once offloaded.
public struct TCPDelegatedState: Sendable {
    // Receive side.
    public var receiveNext: SequenceNumber
    /// The right edge of the window last advertised (RCV.NXT + RCV.WND then): never moved left.
    public var receiveAdvertisedEdge: SequenceNumber
    // Send side.
    public var sendUnacknowledged: SequenceNumber
    public var sendNext: SequenceNumber
    /// The highest sequence number sent, plus one (SND.MAX).
    public var sendMax: SequenceNumber
    /// The peer's window, scaled, in bytes.
    public var sendWindow: Int
    public var maxSendWindow: Int
    public var sendWL1: SequenceNumber
    public var sendWL2: SequenceNumber
    /// cwnd and ssthresh.
    public var congestion: CongestionControl
    /// srtt, rttvar, rto, the backoff (retransmit count) and the retransmission deadline.
    public var retransmission: RetransmissionTimer
    /// TS.Recent and when it was set (RFC 7323).
    public var timestampRecent: UInt32
    public var timestampRecentAge: Instant
    public var duplicateACKs: Int
    /// Retransmission timeouts in a row without progress.
    public var consecutiveTimeouts: Int
    /// When a delayed ACK is due, and when the zero-window probe is.
    public var delayedACKDeadline: Instant?
    public var persistDeadline: Instant?
    public var persistBackoff: Int
    /// The send queue's head and tail are `sendQueue.start` and `sendQueue.end`.
}
