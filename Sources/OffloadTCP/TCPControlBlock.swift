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
    // The MSS in the 16 bits its option has: the block is engine memory (a narrower field
    // than the `Int` the arithmetic uses).
    private var localMSS16: UInt16
    private var remoteMSS16: UInt16
    /// Shift applied to windows the peer advertises, and to ours (0 without scaling).
    /// Both SYNs carried a window scale (RFC 7323 2.2).
    public var windowScaling: Bool
    public var sendWindowShift: UInt8
    public var receiveWindowShift: UInt8
    public var sackPermitted: Bool
    public var timestamps: Bool
    public var initialSendSequence: SequenceNumber
    public var initialReceiveSequence: SequenceNumber

    public init(id: TCPConnectionID, localMSS: Int, remoteMSS: Int, windowScaling: Bool, sendWindowShift: UInt8,
                receiveWindowShift: UInt8, sackPermitted: Bool, timestamps: Bool,
                initialSendSequence: SequenceNumber, initialReceiveSequence: SequenceNumber) {
        self.id = id
        localMSS16 = UInt16(clamping: localMSS)
        remoteMSS16 = UInt16(clamping: remoteMSS)
        self.windowScaling = windowScaling
        self.sendWindowShift = sendWindowShift
        self.receiveWindowShift = receiveWindowShift
        self.sackPermitted = sackPermitted
        self.timestamps = timestamps
        self.initialSendSequence = initialSendSequence
        self.initialReceiveSequence = initialReceiveSequence
    }

    /// The MSS we advertised.
    public var localMSS: Int {
        get { Int(localMSS16) }
        set { localMSS16 = UInt16(clamping: newValue) }
    }

    /// The MSS the peer advertised (536 when it did not, RFC 9293 3.7.1).
    public var remoteMSS: Int {
        get { Int(remoteMSS16) }
        set { remoteMSS16 = UInt16(clamping: newValue) }
    }

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
    // The peer's window and the largest it offered, in 32 bits (a scaled window is at most
    // 2^30 bytes; see `sendWindow`).
    private var sendWindow32: UInt32
    private var maxSendWindow32: UInt32
    public var sendWL1: SequenceNumber
    public var sendWL2: SequenceNumber
    /// cwnd and ssthresh.
    public var congestion: CongestionControl
    /// srtt, rttvar, rto, the backoff (retransmit count) and the retransmission deadline.
    public var retransmission: RetransmissionTimer
    /// TS.Recent and when it was set (RFC 7323).
    public var timestampRecent: UInt32
    // Small counts in 16 bits (see their accessors).
    private var duplicateACKs16: UInt16
    private var consecutiveTimeouts16: UInt16
    private var persistBackoff16: UInt16
    public var timestampRecentAge: Instant
    /// When a delayed ACK is due, and when the zero-window probe is.
    public var delayedACKDeadline: Instant?
    public var persistDeadline: Instant?
    /// The send queue's head and tail are `sendQueue.start` and `sendQueue.end`.

    public init(receiveNext: SequenceNumber, receiveAdvertisedEdge: SequenceNumber, sendUnacknowledged: SequenceNumber,
                sendNext: SequenceNumber, sendMax: SequenceNumber, sendWindow: Int, maxSendWindow: Int,
                sendWL1: SequenceNumber, sendWL2: SequenceNumber, congestion: CongestionControl,
                retransmission: RetransmissionTimer, timestampRecent: UInt32, timestampRecentAge: Instant,
                duplicateACKs: Int, consecutiveTimeouts: Int, delayedACKDeadline: Instant?, persistDeadline: Instant?,
                persistBackoff: Int) {
        self.receiveNext = receiveNext
        self.receiveAdvertisedEdge = receiveAdvertisedEdge
        self.sendUnacknowledged = sendUnacknowledged
        self.sendNext = sendNext
        self.sendMax = sendMax
        sendWindow32 = UInt32(clamping: sendWindow)
        maxSendWindow32 = UInt32(clamping: maxSendWindow)
        self.sendWL1 = sendWL1
        self.sendWL2 = sendWL2
        self.congestion = congestion
        self.retransmission = retransmission
        self.timestampRecent = timestampRecent
        duplicateACKs16 = UInt16(clamping: duplicateACKs)
        consecutiveTimeouts16 = UInt16(clamping: consecutiveTimeouts)
        persistBackoff16 = UInt16(clamping: persistBackoff)
        self.timestampRecentAge = timestampRecentAge
        self.delayedACKDeadline = delayedACKDeadline
        self.persistDeadline = persistDeadline
    }

    /// The peer's window, scaled, in bytes.
    public var sendWindow: Int {
        get { Int(sendWindow32) }
        set { sendWindow32 = UInt32(clamping: newValue) }
    }

    public var maxSendWindow: Int {
        get { Int(maxSendWindow32) }
        set { maxSendWindow32 = UInt32(clamping: newValue) }
    }

    /// Duplicate ACKs in a row (only whether it reached DupThresh matters past a few).
    public var duplicateACKs: Int {
        get { Int(duplicateACKs16) }
        set { duplicateACKs16 = UInt16(clamping: newValue) }
    }

    /// Retransmission timeouts in a row without progress.
    public var consecutiveTimeouts: Int {
        get { Int(consecutiveTimeouts16) }
        set { consecutiveTimeouts16 = UInt16(clamping: newValue) }
    }

    /// Zero-window probes in a row: the persist timer's backoff.
    public var persistBackoff: Int {
        get { Int(persistBackoff16) }
        set { persistBackoff16 = UInt16(clamping: newValue) }
    }
}
