import OffloadWire

/// The sender's record of what the peer has selectively acknowledged above SND.UNA, and
/// the loss recovery queries RFC 6675 defines on it: `IsLost`, `pipe` (`SetPipe`) and
/// `NextSeg`. Sequence numbers are half-open here: where the RFC names the highest byte
/// (HighData, HighRxt), these properties hold the number after it.
///
/// SACK information is advisory (RFC 2018 section 8: the receiver may renege), so the
/// scoreboard may forget it: past `rangeLimit` separate ranges the highest are dropped,
/// and a retransmission timeout clears it all.
public struct SACKScoreboard: Sendable {
    public struct Configuration: Hashable, Sendable {
        /// SMSS.
        public var maximumSegmentSize: Int
        /// DupThresh: 3.
        public var duplicateThreshold: Int
        public var lossCounting: LossCounting
        public var rangeLimit: Int

        public init(maximumSegmentSize: Int, duplicateThreshold: Int = 3, lossCounting: LossCounting = .segmentsOrBytes,
                    rangeLimit: Int = 32) {
            precondition(maximumSegmentSize > 0 && duplicateThreshold > 0 && rangeLimit > 0,
                         "SACKScoreboard: sizes must be positive")
            self.maximumSegmentSize = maximumSegmentSize
            self.duplicateThreshold = duplicateThreshold
            self.lossCounting = lossCounting
            self.rangeLimit = rangeLimit
        }
    }

    /// How `isLost` counts what was SACKed above a byte.
    public enum LossCounting: Hashable, Sendable {
        /// RFC 6675 as written: DupThresh SACKed segments, or more than (DupThresh - 1) * SMSS
        /// SACKed bytes. A range of n bytes holds at least ceil(n / SMSS) segments, which is
        /// the count used (so the byte rule is implied, and small segments count as segments).
        case segmentsOrBytes
        /// Only the byte rule: slower to call small segments lost.
        case bytes
    }

    /// NextSeg's answer (RFC 6675 section 4), by rule.
    public enum NextSegment: Hashable, Sendable {
        /// (1) The first unSACKed range above HighRxt that is lost, up to SMSS (and not into
        /// SACKed data).
        case retransmitLost(SequenceRange)
        /// (2) New data, if the caller has some and the windows allow.
        case newData
        /// (3) The first unSACKed range above HighRxt, not yet deemed lost.
        case retransmitUnSACKed(SequenceRange)
        /// (4) The once-per-recovery rescue retransmission, holding the highest unSACKed byte.
        case rescue(SequenceRange)
        case nothing
    }

    /// What one ACK changed.
    public struct Update: Hashable, Sendable {
        /// Bytes the cumulative ACK newly covered.
        public var newlyAcknowledged = 0
        /// Bytes the SACK blocks newly covered (RFC 6675 counts such an ACK as a duplicate).
        public var newlySACKed = 0
        /// The first block reports a duplicate (RFC 2883): below the cumulative ACK, or
        /// inside the second block.
        public var duplicateSACK = false
        /// Blocks that told nothing: below SND.UNA, reversed, or past what was sent.
        public var ignoredBlocks = 0
        /// Ranges forgotten to stay within `rangeLimit`.
        public var forgottenRanges = 0
        /// The ACK covered RecoveryPoint: loss recovery is over.
        public var recoveryEnded = false
        /// The ACK is for data never sent; nothing was changed (RFC 9293 drops it).
        public var acknowledgesUnsentData = false
        public init() {}
    }

    public let configuration: Configuration
    /// SND.UNA (RFC 6675's HighACK is the byte before).
    public private(set) var unacknowledged: SequenceNumber
    /// SND.MAX: the end of what was sent (HighData + 1).
    public private(set) var sentEnd: SequenceNumber
    /// HighRxt + 1: the end of the highest retransmission this recovery.
    public private(set) var retransmittedEnd: SequenceNumber
    /// RescueRxt + 1, once a rescue was sent (or set on entry to recovery).
    public private(set) var rescueEnd: SequenceNumber?
    /// RecoveryPoint + 1: set on entering recovery and on a timeout, cleared when covered.
    public private(set) var recoveryPoint: SequenceNumber?
    /// In loss recovery (entered by `enterRecovery`, left when RecoveryPoint is acknowledged
    /// or on a timeout).
    public private(set) var isInRecovery = false
    /// SACKed ranges above SND.UNA: sorted, disjoint, not touching.
    var ranges: [SequenceRange]

    public init(configuration: Configuration, unacknowledged: SequenceNumber) {
        self.configuration = configuration
        self.unacknowledged = unacknowledged
        sentEnd = unacknowledged
        retransmittedEnd = unacknowledged
        ranges = []
        ranges.reserveCapacity(configuration.rangeLimit + 1)
    }

    public var sackedRanges: [SequenceRange] { ranges }
    public var sackedBytes: Int { ranges.reduce(0) { $0 + $1.count } }
    /// The end of the highest SACKed byte.
    public var highestSACKed: SequenceNumber? { ranges.last?.upper }

    public func isSACKed(_ s: SequenceNumber) -> Bool { ranges.contains { $0.contains(s) } }

    /// SACKed bytes from `s` on.
    public func sackedBytes(from s: SequenceNumber) -> Int {
        var n = 0
        for r in ranges.reversed() {
            guard s < r.upper else { break }
            n += SequenceRange(SequenceNumber.later(r.lower, s), r.upper).count
        }
        return n
    }

    /// New data went out up to `end` (HighData, step (C.3)).
    public mutating func sent(upTo end: SequenceNumber) {
        sentEnd = SequenceNumber.later(sentEnd, end)
    }

    /// Takes in an ACK: its cumulative acknowledgment and its SACK blocks.
    public mutating func update(cumulativeAcknowledgment ack: SequenceNumber, blocks: TCPSACKBlocks) -> Update {
        var update = Update()
        guard ack <= sentEnd else {
            update.acknowledgesUnsentData = true
            return update
        }
        if let first = blocks.first.flatMap(SequenceRange.init) {
            let second = blocks.count > 1 ? SequenceRange(blocks[1]) : nil
            update.duplicateSACK = first.upper <= ack
                || second.map { first.lower >= $0.lower && first.upper <= $0.upper } == true
        }
        if unacknowledged < ack {
            update.newlyAcknowledged = ack - unacknowledged
            unacknowledged = ack
            retransmittedEnd = SequenceNumber.later(retransmittedEnd, ack)
            while let r = ranges.first, r.upper <= ack { ranges.removeFirst() }
            if let r = ranges.first, r.lower < ack { ranges[0] = SequenceRange(ack, r.upper) }
        }
        let valid = SequenceRange(unacknowledged, sentEnd)
        for block in blocks {
            guard let r = SequenceRange(block), r.upper <= sentEnd, unacknowledged < r.upper,
                  let inside = r.clamped(to: valid) else {
                update.ignoredBlocks += 1
                continue
            }
            update.newlySACKed += add(inside)
        }
        while ranges.count > configuration.rangeLimit {
            ranges.removeLast()
            update.forgottenRanges += 1
        }
        if let point = recoveryPoint, point <= unacknowledged {
            update.recoveryEnded = isInRecovery
            isInRecovery = false
            recoveryPoint = nil
        }
        return update
    }

    /// Adds a SACKed range, merging what it overlaps or touches; returns the bytes new to it.
    mutating func add(_ r: SequenceRange) -> Int {
        var lower = r.lower, upper = r.upper, known = 0
        var first = ranges.count, last = -1
        for (i, existing) in ranges.enumerated() where existing.lower <= r.upper && r.lower <= existing.upper {
            first = min(first, i)
            last = i
            if let common = existing.clamped(to: r) { known += common.count }
            lower = SequenceNumber.earlier(lower, existing.lower)
            upper = SequenceNumber.later(upper, existing.upper)
        }
        let merged = SequenceRange(lower, upper)
        if last >= first {
            ranges.replaceSubrange(first...last, with: CollectionOfOne(merged))
        } else {
            ranges.insert(merged, at: ranges.firstIndex { r.upper < $0.lower } ?? ranges.count)
        }
        return r.count - known
    }

    /// IsLost(SeqNum) (RFC 6675 section 4): enough was SACKed above `s` that the segment
    /// holding it is deemed lost.
    public func isLost(_ s: SequenceNumber) -> Bool {
        var bytes = 0, segments = 0
        for r in ranges.reversed() {
            guard s < r.upper - 1 else { break }
            let above = SequenceRange(SequenceNumber.later(r.lower, s + 1), r.upper).count
            bytes += above
            segments += (above + configuration.maximumSegmentSize - 1) / configuration.maximumSegmentSize
            if deemsLost(sackedBytes: bytes, sackedSegments: segments) { return true }
        }
        return false
    }

    func deemsLost(sackedBytes: Int, sackedSegments: Int) -> Bool {
        let threshold = configuration.duplicateThreshold
        if sackedBytes > (threshold - 1) * configuration.maximumSegmentSize { return true }
        return configuration.lossCounting == .segmentsOrBytes && sackedSegments >= threshold
    }

    /// SetPipe (RFC 6675 section 4), in bytes: of the bytes not SACKed, those not lost, plus
    /// those retransmitted (up to HighRxt).
    public var pipe: Int {
        var inFlight = max(0, retransmittedEnd - unacknowledged)
        // SACKed bytes below HighRxt were not sent again: they are not in flight.
        for r in ranges {
            guard r.lower < retransmittedEnd else { break }
            inFlight -= SequenceNumber.earlier(r.upper, retransmittedEnd) - r.lower
        }
        // Walk down from the top: a hole is lost or not as a whole, since nothing SACKed
        // lies inside it.
        var holeUpper = sentEnd, bytes = 0, segments = 0
        for i in stride(from: ranges.count, through: 0, by: -1) {
            let holeLower = i > 0 ? ranges[i - 1].upper : unacknowledged
            if !deemsLost(sackedBytes: bytes, sackedSegments: segments) { inFlight += holeUpper - holeLower }
            guard i > 0 else { break }
            let r = ranges[i - 1]
            bytes += r.count
            segments += (r.count + configuration.maximumSegmentSize - 1) / configuration.maximumSegmentSize
            holeUpper = r.lower
        }
        return inFlight
    }

    /// NextSeg (RFC 6675 section 4). `newDataAvailable`: the caller has unsent data and the
    /// receive and congestion windows allow a segment of it.
    public func nextSegment(newDataAvailable: Bool) -> NextSegment {
        let smss = configuration.maximumSegmentSize
        // The smallest unSACKed byte at or above HighRxt + 1. IsLost only gets truer lower
        // down, so if it is not lost, nothing above it is.
        var candidate = SequenceNumber.later(retransmittedEnd, unacknowledged)
        var holeEnd = sentEnd
        for r in ranges {
            if r.upper <= candidate { continue }
            if r.lower <= candidate { candidate = r.upper; continue }
            holeEnd = r.lower
            break
        }
        if let top = highestSACKed, candidate < top {
            let range = SequenceRange(candidate, SequenceNumber.earlier(candidate + smss, holeEnd))
            if isLost(candidate) { return .retransmitLost(range) }
            if newDataAvailable { return .newData }
            return .retransmitUnSACKed(range)
        }
        if newDataAvailable { return .newData }
        // (4): once per recovery, after the first retransmission was acknowledged.
        guard isInRecovery, rescueEnd.map({ $0 < unacknowledged }) ?? true else { return .nothing }
        let hole: SequenceRange
        if let top = ranges.last, top.upper == sentEnd {
            hole = SequenceRange(ranges.count > 1 ? ranges[ranges.count - 2].upper : unacknowledged, top.lower)
        } else {
            hole = SequenceRange(highestSACKed ?? unacknowledged, sentEnd)
        }
        guard !hole.isEmpty else { return .nothing }
        return .rescue(SequenceRange(SequenceNumber.later(hole.lower, hole.upper - smss), hole.upper))
    }

    /// A segment NextSeg chose was sent: a retransmission moves HighRxt (C.2); the rescue
    /// sets RescueRxt to RecoveryPoint and leaves HighRxt alone.
    public mutating func retransmitted(_ choice: NextSegment) {
        switch choice {
        case .retransmitLost(let r), .retransmitUnSACKed(let r):
            retransmittedEnd = SequenceNumber.later(retransmittedEnd, r.upper)
        case .rescue:
            rescueEnd = recoveryPoint
        case .newData, .nothing:
            break
        }
    }

    /// Whether a new recovery may start: after a timeout, not before RecoveryPoint is
    /// acknowledged (RFC 6675 section 5.1).
    public var mayEnterRecovery: Bool { !isInRecovery && recoveryPoint == nil }

    /// Enters loss recovery (RFC 6675 section 5, step 4): RecoveryPoint = HighData, and the
    /// first segment to retransmit, from SND.UNA up to SMSS (and not into SACKed data),
    /// which sets HighRxt and RescueRxt. Nil when nothing is outstanding or a recovery
    /// may not start.
    public mutating func enterRecovery() -> SequenceRange? {
        guard mayEnterRecovery, unacknowledged < sentEnd else { return nil }
        isInRecovery = true
        recoveryPoint = sentEnd
        var end = SequenceNumber.earlier(unacknowledged + configuration.maximumSegmentSize, sentEnd)
        if let r = ranges.first, unacknowledged < r.lower { end = SequenceNumber.earlier(end, r.lower) }
        let first = SequenceRange(unacknowledged, end)
        retransmittedEnd = first.upper
        rescueEnd = first.upper
        return first
    }

    /// The retransmission timer fired (RFC 6675 section 5.1): recovery ends, RecoveryPoint
    /// becomes HighData and no new recovery starts until it is acknowledged; the SACK
    /// information is dropped (RFC 2018 section 8).
    public mutating func retransmissionTimeout() {
        isInRecovery = false
        recoveryPoint = unacknowledged < sentEnd ? sentEnd : nil
        ranges.removeAll(keepingCapacity: true)
        retransmittedEnd = unacknowledged
        rescueEnd = nil
    }
}
