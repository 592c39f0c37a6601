import OffloadCore
import OffloadWire

/// One TCP connection as a state machine without I/O (RFC 9293): it is handed segments
/// (`receive`) and the time (`poll`), and says what to send through the `emit` closure of
/// `poll` and when to be called again (`nextDeadline`). Data to send is described, never
/// copied: messages in application memory, gathered into segments as slices.
///
/// Its state is a control block split into constant, cached and delegated parts (T2), next
/// to the queues: the send queue (message descriptors), the receive buffer, the reassembly
/// queue and the SACK scoreboard.
public final class TCPConnection {
    /// A segment to send: its header and the payload as slices of application memory (valid
    /// only during the call).
    public typealias Emit = (_ header: TCPRepr, _ payload: UnsafeBufferPointer<UnsafeRawBufferPointer>) -> Void

    public let configuration: TCPConfiguration
    public internal(set) var state: TCPState
    public internal(set) var block: TCPControlBlock
    public internal(set) var sendQueue: TCPSendQueue
    /// Written by the connection's input, read by the application: for an offloaded
    /// connection, the one thing host and engine both touch (see `TCPReceiveBuffer`).
    let receiveBuffer: TCPReceiveBuffer
    var reassembly: ReassemblyQueue
    var scoreboard: SACKScoreboard
    public internal(set) var counters = TCPConnectionCounters()
    /// Why the connection ended, when it did not end by an orderly close.
    public internal(set) var error: TCPError?
    /// Messages acknowledged (or failed) since the stack last took them.
    var completions: [CompletionRange] = []

    /// Our FIN's sequence number, once the application closed.
    var finSequence: SequenceNumber?
    /// The peer's FIN, once seen (it may arrive ahead of data still missing).
    var peerFINSequence: SequenceNumber?
    var ackNow = false
    var lastACKSent: SequenceNumber
    /// A control segment to send before anything else (RST for a bad ACK in the handshake).
    var pendingReset: TCPRepr?
    /// The SYN (or SYN-ACK) is due.
    var synDue = false
    /// A segment to retransmit at once (fast retransmit, a partial ACK, a lost retransmission).
    var retransmitNow: SequenceRange?
    /// The retransmissions of the current SACK recovery, oldest first, each with SND.MAX when
    /// it left: one whose hole stays open while the peer SACKs DupThresh segments sent after
    /// it was lost again (RFC 6675 alone would wait for the RTO; Linux calls this lost
    /// retransmit detection).
    var recoveryRetransmissions: [(range: SequenceRange, sentMax: SequenceNumber)] = []
    /// NewReno recovery without SACK (RFC 6582): RecoveryPoint, and the window inflation.
    var newRenoRecover: SequenceNumber?
    var inNewRenoRecovery = false
    var windowInflation = 0
    /// One segment timed for an RTT sample when timestamps are off (Karn's rule applies).
    var timedSegment: (sequence: SequenceNumber, sentAt: Instant)?
    /// The persist timer fired: one byte goes out past a zero window.
    var probeDue = false
    var timeWaitDeadline: Instant?
    /// Segments the current `poll` may still send.
    var emitBudget = 0
    /// Pure ACKs owed for out-of-order or duplicate segments since the last poll.
    var acksOwed = 0
    /// Duplicate ACKs (1 or 2) that each let one segment out beyond cwnd (RFC 3042).
    var limitedTransmit = 0
    /// The tail loss probe (RFC 8985 section 7): when it fires, whether one is out unanswered,
    /// and whether one is due now.
    var tailLossProbeDeadline: Instant?
    var probeTimeoutOutstanding = false
    var tailLossProbeDue = false
    /// Something happened that the next `poll` must act on (see `hasOutput`).
    var needsPoll = true
    var timestampOffset: UInt32
    /// When a segment last went out (for the restart after idle).
    var lastSend: Instant
    var challengeACKWindowStart = Instant.zero
    var challengeACKsInWindow = 0
    /// When an ACK last answered a segment that was not acceptable (see `answerInvalid`).
    var lastInvalidSegmentACK: Instant?
    static let challengeACKLimitPerSecond = 100
    /// Where `poll` gathers a segment's payload slices.
    let slices: UnsafeMutableBufferPointer<UnsafeRawBufferPointer>
    static let maximumSlicesPerSegment = 48
    /// The smallest MSS we take from a peer.
    public static let minimumRemoteMSS = 88

    /// The largest payload one emitted segment may carry. Up to one MSS it is one MSS; a
    /// sender whose device segments (TSO) sets up to 64 KiB, and new data then leaves in
    /// super-segments of whole MSS-sized pieces (the device cuts them; retransmissions stay
    /// one MSS).
    public var largestSegmentPayload = 0

    init(id: TCPConnectionID, state: TCPState, initialSendSequence iss: SequenceNumber,
         configuration: TCPConfiguration, timestampOffset: UInt32, now: Instant) {
        self.configuration = configuration
        self.state = state
        self.timestampOffset = timestampOffset
        let constant = TCPConstantState(
            id: id, localMSS: configuration.maximumSegmentSize, remoteMSS: 536, windowScaling: false, sendWindowShift: 0,
            receiveWindowShift: 0, sackPermitted: false, timestamps: false, initialSendSequence: iss,
            initialReceiveSequence: SequenceNumber(0))
        let cached = TCPCachedState(timeToLive: configuration.timeToLive, typeOfService: 0,
                                    noDelay: configuration.noDelay)
        let timer: RetransmissionTimer
        do { timer = try RetransmissionTimer(configuration: configuration.retransmission) } catch {
            preconditionFailure("TCPConnection: \(error)")
        }
        let delegated = TCPDelegatedState(
            receiveNext: SequenceNumber(0), receiveAdvertisedEdge: SequenceNumber(0), sendUnacknowledged: iss,
            sendNext: iss, sendMax: iss, sendWindow: 0, maxSendWindow: 0, sendWL1: SequenceNumber(0),
            sendWL2: iss,
            congestion: CongestionControl(algorithm: configuration.congestionControl,
                                          maximumSegmentSize: configuration.maximumSegmentSize),
            retransmission: timer, timestampRecent: 0, duplicateACKs: 0, consecutiveTimeouts: 0, persistBackoff: 0,
            timestampRecentAge: now, delayedACKDeadline: nil, persistDeadline: nil)
        block = TCPControlBlock(constant: constant, cached: cached, delegated: delegated)
        sendQueue = TCPSendQueue(start: iss)
        sendQueue.skip(1) // the SYN
        receiveBuffer = TCPReceiveBuffer(capacity: configuration.receiveBufferSize)
        reassembly = ReassemblyQueue(nextExpected: SequenceNumber(0), capacity: configuration.receiveBufferSize)
        scoreboard = SACKScoreboard(configuration: .init(maximumSegmentSize: configuration.maximumSegmentSize),
                                    unacknowledged: iss)
        lastACKSent = SequenceNumber(0)
        lastSend = now
        slices = .allocate(capacity: Self.maximumSlicesPerSegment)
    }

    deinit { slices.deallocate() }

    /// An active open: the SYN goes out at the next `poll`.
    public convenience init(connecting id: TCPConnectionID, initialSendSequence: SequenceNumber,
                            configuration: TCPConfiguration, timestampOffset: UInt32 = 0, now: Instant) {
        self.init(id: id, state: .synSent, initialSendSequence: initialSendSequence, configuration: configuration,
                  timestampOffset: timestampOffset, now: now)
        synDue = true
    }

    /// A passive open from a listener: the peer's SYN was `syn`; the SYN-ACK goes out at the
    /// next `poll`.
    public convenience init(accepting syn: TCPRepr, id: TCPConnectionID, initialSendSequence: SequenceNumber,
                            configuration: TCPConfiguration, timestampOffset: UInt32 = 0, now: Instant) {
        self.init(id: id, state: .synReceived, initialSendSequence: initialSendSequence, configuration: configuration,
                  timestampOffset: timestampOffset, now: now)
        takeSYN(syn, now: now)
        synDue = true
    }

    /// A connection whose handshake a SYN cookie carried (the listener kept no state): the
    /// ACK `ack` completes it, with the MSS the cookie held and no other options (our SYN-ACK
    /// offered none).
    public convenience init(cookieACK ack: TCPRepr, id: TCPConnectionID, mss: Int, configuration: TCPConfiguration,
                            timestampOffset: UInt32 = 0, now: Instant) {
        let iss = SequenceNumber(ack.acknowledgmentNumber) - 1
        self.init(id: id, state: .established, initialSendSequence: iss, configuration: configuration,
                  timestampOffset: timestampOffset, now: now)
        let irs = SequenceNumber(ack.sequenceNumber) - 1
        block.constant.initialReceiveSequence = irs
        block.constant.remoteMSS = max(mss, Self.minimumRemoteMSS)
        startReceiving(at: irs + 1)
        // The window the cookie's SYN-ACK offered (unscaled, as no option was agreed).
        block.delegated.receiveAdvertisedEdge = irs + 1 + min(receiveBuffer.free, 65_535)
        block.delegated.sendUnacknowledged = iss + 1
        block.delegated.sendNext = iss + 1
        block.delegated.sendMax = iss + 1
        scoreboard = SACKScoreboard(configuration: .init(maximumSegmentSize: max(1, block.constant.segmentSize)),
                                    unacknowledged: iss + 1)
        // The window's last update is the SYN's, as `takeSYN` records it; left at 0, a peer
        // whose ISN lies in the upper half of the sequence space would never update it.
        block.delegated.sendWL1 = irs
        block.delegated.sendWL2 = iss + 1
        updateSendWindow(ack)
        startCongestionControl()
    }

    // MARK: The application's side

    public var id: TCPConnectionID { block.constant.id }
    /// Bytes received in order, waiting to be read.
    public var readableBytes: Int { receiveBuffer.count }
    /// The peer has closed its side and every byte before its FIN has been read.
    public var isAtEndOfInput: Bool { receiveBuffer.isAtEnd || state == .closed && receiveBuffer.isEmpty }
    /// Bytes queued and not yet acknowledged.
    public var unacknowledgedBytes: Int { max(0, sendQueue.end - block.delegated.sendUnacknowledged) }
    /// Data may still be sent.
    public var canSend: Bool {
        finSequence == nil && (state == .established || state == .closeWait || state == .synSent
                               || state == .synReceived)
    }

    /// The handshake is done: established, or straight to FIN-WAIT-1 when the application
    /// closed meanwhile.
    func enterSynchronized() {
        state = finSequence == nil ? .established : .finWait1
    }

    /// Queues a message of application memory, which must stay valid and unchanged until
    /// its completion. Returns its id.
    package func send(_ bytes: UnsafeRawBufferPointer) throws(TCPError) -> MessageID {
        guard state != .closed else { throw error ?? .notConnected }
        guard canSend else { throw .sendAfterClose }
        guard !bytes.isEmpty else { throw .emptyMessage }
        guard bytes.count <= TCPConfiguration.largestMessage else {
            throw .messageTooLarge(limit: TCPConfiguration.largestMessage)
        }
        guard unacknowledgedBytes + bytes.count <= configuration.sendLimit || sendQueue.isEmpty else {
            throw .sendQueueFull(limit: configuration.sendLimit)
        }
        needsPoll = true
        return sendQueue.append(bytes)
    }

    /// Copies out up to `buffer.count` received bytes; returns how many.
    package func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let n = receiveBuffer.read(into: buffer)
        if n > 0 { windowOpened() }
        return n
    }

    /// Hands up to `max` received bytes to `body` (in one or two pieces); returns how many.
    @discardableResult
    package func read(max: Int, _ body: (UnsafeRawBufferPointer) -> Void) -> Int {
        let n = receiveBuffer.read(max: max, body)
        if n > 0 { windowOpened() }
        return n
    }

    /// Hands up to `max` received bytes to `body` like `read`, without touching the rest of
    /// the connection's state: the host reads an offloaded connection's receive buffer this
    /// way and tells the engine, which calls `applicationRead()`.
    @discardableResult
    package func readReceived(max: Int, _ body: (UnsafeRawBufferPointer) -> Void) -> Int {
        receiveBuffer.read(max: max, body)
    }

    /// The application has read: a window update goes out if the window grew enough.
    package func applicationRead() { windowOpened() }

    /// Completion ranges waiting to be taken.
    public var pendingCompletionRanges: Int { completions.count }

    /// Closes the sending side: a FIN follows the data already queued (RFC 9293 3.10.4).
    package func close() {
        needsPoll = true
        switch state {
        case .listen, .closed:
            enterClosed(error: nil)
        case .synSent where sendQueue.isEmpty:
            enterClosed(error: nil)
        case .synSent, .synReceived:
            // The FIN follows the queued data once the handshake is done: RFC 9293 3.10.4 for
            // SYN-RECEIVED. In SYN-SENT the RFC deletes the connection and fails the queued
            // sends; here messages sent before the handshake (a zero-copy API queues them)
            // are delivered, as the application asked, and the close waits for them.
            finSequence = sendQueue.end
        case .established:
            finSequence = sendQueue.end
            state = .finWait1
        case .closeWait:
            finSequence = sendQueue.end
            state = .lastAck
        default:
            break
        }
    }

    /// Ends the connection at once: a RST to the peer, queued messages fail (RFC 9293 3.10.5).
    package func abort() {
        needsPoll = true
        if state.isSynchronized || state == .synReceived {
            pendingReset = TCPRepr(sourcePort: id.localPort, destinationPort: id.remotePort,
                                   sequenceNumber: block.delegated.sendMax.rawValue, flags: .rst, windowSize: 0)
            counters.resetsSent &+= 1
        }
        enterClosed(error: .aborted)
    }

    /// Takes the completions since the last call, oldest first.
    package func takeCompletions() -> [CompletionRange] {
        defer { completions.removeAll(keepingCapacity: true) }
        return completions
    }

    /// Takes at most `max` of the oldest completions; the rest stay for a later call.
    package func takeCompletions(max: Int) -> [CompletionRange] {
        guard max < completions.count else { return takeCompletions() }
        let taken = Array(completions.prefix(Swift.max(0, max)))
        completions.removeFirst(taken.count)
        return taken
    }

    /// Whether everything is back at rest: no message, no held data, no timer but TIME_WAIT's.
    public var isQuiescent: Bool {
        sendQueue.isEmpty && reassembly.isEmpty && block.delegated.retransmission.deadline == nil
            && block.delegated.persistDeadline == nil && completions.isEmpty
    }

    // MARK: Shared steps

    func enterClosed(error: TCPError?) {
        if self.error == nil { self.error = error }
        state = .closed
        if let ids = sendQueue.removeAll() {
            completions.append(CompletionRange(lower: ids.lowerBound, upper: ids.upperBound,
                                               status: .failed(self.error ?? .notConnected)))
        }
        block.delegated.retransmission.stop()
        block.delegated.delayedACKDeadline = nil
        block.delegated.persistDeadline = nil
        timeWaitDeadline = nil
        synDue = false
        retransmitNow = nil
        ackNow = false
    }

    /// The peer's SYN: its ISN and the options both sides will use (RFC 7323, RFC 2018).
    func takeSYN(_ syn: TCPRepr, now: Instant) {
        let irs = SequenceNumber(syn.sequenceNumber)
        block.constant.initialReceiveSequence = irs
        startReceiving(at: irs + 1)
        // A floor, as Linux keeps one (tcp_min_snd_mss): a segment must have room for data
        // beside 40 bytes of options, and a tiny MSS would only multiply our segments.
        block.constant.remoteMSS = max(Int(syn.maxSegmentSize ?? 536), Self.minimumRemoteMSS)
        if configuration.windowScaling, let shift = syn.windowScale {
            block.constant.windowScaling = true
            block.constant.sendWindowShift = min(shift, 14)
            block.constant.receiveWindowShift = configuration.receiveWindowShift
        }
        block.constant.sackPermitted = configuration.selectiveAcknowledgments && syn.sackPermitted
        if configuration.timestamps, let ts = syn.timestamp {
            block.constant.timestamps = true
            block.delegated.timestampRecent = ts.value
            block.delegated.timestampRecentAge = now
        }
        // The SYN's window is never scaled (RFC 7323 2.2).
        block.delegated.sendWindow = Int(syn.windowSize)
        block.delegated.maxSendWindow = Int(syn.windowSize)
        block.delegated.sendWL1 = irs
    }

    func startReceiving(at next: SequenceNumber) {
        block.delegated.receiveNext = next
        block.delegated.receiveAdvertisedEdge = next
        lastACKSent = next
        reassembly = ReassemblyQueue(nextExpected: next, capacity: configuration.receiveBufferSize)
    }

    /// Once the MSS is known: the congestion window and scoreboard in segments of it.
    func startCongestionControl() {
        let mss = max(1, block.constant.segmentSize)
        block.delegated.congestion = CongestionControl(algorithm: configuration.congestionControl,
                                                       maximumSegmentSize: mss)
        scoreboard = SACKScoreboard(configuration: .init(maximumSegmentSize: mss),
                                    unacknowledged: block.delegated.sendUnacknowledged)
    }

    /// The window field to advertise now, and the right edge it sets.
    func windowToAdvertise() -> UInt16 {
        let shift = Int(block.constant.receiveWindowShift)
        let field = min(receiveBuffer.free >> shift, 65_535)
        return UInt16(field)
    }

    /// The application read: say so when the window grew by a good part (RFC 9293 3.8.6.2.2,
    /// receiver-side silly window avoidance).
    func windowOpened() {
        needsPoll = true
        guard state.isSynchronized, state.receivesData else { return }
        let d = block.delegated
        let edge = d.receiveNext + receiveBuffer.free
        let growth = edge - d.receiveAdvertisedEdge
        if growth >= min(configuration.receiveBufferSize / 2, 2 * max(1, block.constant.localMSS)) {
            ackNow = true
        }
    }

    func timestampNow(_ now: Instant) -> UInt32 {
        UInt32(truncatingIfNeeded: now.nanoseconds / 1_000_000) &+ timestampOffset
    }
}
