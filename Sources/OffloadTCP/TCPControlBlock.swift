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
    /// The MSS we advertised, and the one the peer advertised (536 when it did not, RFC 9293
    /// 3.7.1): 16 bits, as the option has.
    @Narrow<UInt16> public var localMSS: Int
    @Narrow<UInt16> public var remoteMSS: Int
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
    /// The peer's window, scaled, in bytes, and the largest it offered (at most 2^30 bytes
    /// scaled, RFC 7323).
    @Narrow<UInt32> public var sendWindow: Int
    @Narrow<UInt32> public var maxSendWindow: Int
    public var sendWL1: SequenceNumber
    public var sendWL2: SequenceNumber
    /// cwnd and ssthresh.
    public var congestion: CongestionControl
    /// srtt, rttvar, rto, the backoff (retransmit count) and the retransmission deadline.
    public var retransmission: RetransmissionTimer
    /// TS.Recent and when it was set (RFC 7323).
    public var timestampRecent: UInt32
    /// Duplicate ACKs in a row (only whether it reached DupThresh matters past a few).
    @Narrow<UInt16> public var duplicateACKs: Int
    /// Retransmission timeouts in a row without progress.
    @Narrow<UInt16> public var consecutiveTimeouts: Int
    /// Zero-window probes in a row: the persist timer's backoff.
    @Narrow<UInt16> public var persistBackoff: Int
    public var timestampRecentAge: Instant
    /// When a delayed ACK is due, and when the zero-window probe is.
    public var delayedACKDeadline: Instant?
    public var persistDeadline: Instant?
    /// The send queue's head and tail are `sendQueue.start` and `sendQueue.end`.
}

/// An `Int` kept in a narrower field: the control block is engine memory, and a field needs
/// only the range TCP gives it. A value past that range stays at the field's top or bottom,
/// never wraps.
@propertyWrapper
public struct Narrow<Field: FixedWidthInteger & Sendable>: Hashable, Sendable {
    @usableFromInline var field: Field

    @inlinable
    public init(wrappedValue: Int) { field = Field(clamping: wrappedValue) }

    @inlinable
    public var wrappedValue: Int {
        get { Int(field) }
        set { field = Field(clamping: newValue) }
    }
}
