import OffloadCore
import OffloadWire

extension TCPConnection {
    /// Takes in one segment for this connection (RFC 9293 section 3.10.7).
    package func receive(_ segment: TCPRepr, payload: UnsafeRawBufferPointer, now: Instant) {
        counters.segmentsReceived &+= 1
        needsPoll = true
        switch state {
        case .closed, .listen:
            return
        case .synSent:
            receiveInSYNSent(segment, now: now)
        default:
            receiveSynchronized(segment, payload: payload, now: now)
        }
    }

    // MARK: SYN-SENT

    private func receiveInSYNSent(_ segment: TCPRepr, now: Instant) {
        let flags = segment.flags
        let iss = block.constant.initialSendSequence
        let ack = SequenceNumber(segment.acknowledgmentNumber)
        if flags.contains(.ack) && (ack <= iss || ack > block.delegated.sendMax) {
            if !flags.contains(.rst) { reset(answering: segment) }
            return
        }
        if flags.contains(.rst) {
            // Acceptable only when it acknowledges our SYN (RFC 5961 3.2 adds nothing here).
            if flags.contains(.ack) {
                counters.resetsReceived &+= 1
                enterClosed(error: .connectionRefused)
            }
            return
        }
        guard flags.contains(.syn) else { return }
        takeSYN(segment, now: now)
        startCongestionControl()
        if flags.contains(.ack) {
            handshakeAcknowledged(segment, now: now)
            enterSynchronized()
            // The window is the SYN-ACK's, unscaled (`takeSYN`, RFC 7323 2.2); this is its update.
            block.delegated.sendWL2 = ack
            ackNow = true
        } else {
            // Simultaneous open: our SYN again, now with an ACK.
            state = .synReceived
            block.delegated.sendNext = iss
            synDue = true
        }
    }

    /// Our SYN (or SYN-ACK) was acknowledged.
    private func handshakeAcknowledged(_ segment: TCPRepr, now: Instant) {
        let d = block.delegated
        let ack = SequenceNumber(segment.acknowledgmentNumber)
        block.delegated.sendUnacknowledged = ack
        if d.sendNext < ack { block.delegated.sendNext = ack }
        if d.retransmission.backoffCount > 0 {
            block.delegated.retransmission.handshakeCompletedAfterSYNRetransmission()
        } else if let ts = segment.timestamp, block.constant.timestamps, ts.echoReply != 0 {
            recordTimestampEcho(ts.echoReply, now: now)
        } else if let timed = timedSegment, ack > timed.sequence {
            block.delegated.retransmission.record(.timedSegment(sentAt: timed.sentAt, acknowledgedAt: now,
                                                                retransmitted: false))
        }
        timedSegment = nil
        block.delegated.retransmission.newDataAcknowledged(at: now, allAcknowledged: ack == block.delegated.sendMax)
        block.delegated.consecutiveTimeouts = 0
        synDue = false
        scoreboard = SACKScoreboard(configuration: scoreboard.configuration, unacknowledged: ack)
        scoreboard.sent(upTo: block.delegated.sendMax)
    }

    // MARK: Synchronized states (and SYN-RECEIVED)

    private func receiveSynchronized(_ segment: TCPRepr, payload: UnsafeRawBufferPointer, now: Instant) {
        let flags = segment.flags
        let seq = SequenceNumber(segment.sequenceNumber)
        let length = segment.payloadLength + (flags.contains(.syn) ? 1 : 0) + (flags.contains(.fin) ? 1 : 0)

        // PAWS (RFC 7323 5.3): a timestamp older than TS.Recent marks an old duplicate.
        if block.constant.timestamps, !flags.contains(.rst), let ts = segment.timestamp,
           Int32(bitPattern: ts.value &- block.delegated.timestampRecent) < 0,
           now - block.delegated.timestampRecentAge < .seconds(24 * 24 * 3600) {
            counters.pawsDrops &+= 1
            answerInvalid(segment, now: now)
            return
        }

        // Sequence acceptability (RFC 9293 3.10.7.4, first check).
        let d = block.delegated
        let window = max(0, d.receiveAdvertisedEdge - d.receiveNext)
        let acceptable: Bool
        if length == 0 {
            acceptable = window == 0 ? seq == d.receiveNext : seq.isIn(d.receiveNext, d.receiveNext + window)
                || seq == d.receiveNext
        } else if window == 0 {
            acceptable = false
        } else {
            acceptable = seq.isIn(d.receiveNext, d.receiveNext + window)
                || (seq + (length - 1)).isIn(d.receiveNext, d.receiveNext + window)
        }
        if !acceptable {
            if flags.contains(.rst) { return }
            counters.outOfWindowSegments &+= 1
            if state == .synReceived && flags.contains(.syn) && seq == block.constant.initialReceiveSequence {
                let ack = SequenceNumber(segment.acknowledgmentNumber)
                if flags.contains(.ack) && ack > d.sendUnacknowledged && ack <= d.sendMax {
                    // A simultaneous open (RFC 9293 3.5): the peer's SYN-ACK acknowledges our
                    // SYN. Its window, like its SYN's, is not scaled.
                    handshakeAcknowledged(segment, now: now)
                    enterSynchronized()
                    block.delegated.sendWL2 = ack
                    ackNow = true
                    return
                }
                synDue = true // the peer did not hear our SYN-ACK
                return
            }
            // A zero window still takes ACKs (RFC 9293: "special allowance").
            if window == 0 && seq == d.receiveNext && flags.contains(.ack) {
                processACK(segment, now: now, hasData: length > 0)
            }
            answerInvalid(segment, now: now)
            if state == .timeWait { timeWaitDeadline = now + configuration.maximumSegmentLifetime * 2 }
            return
        }

        // RST (RFC 5961 3.2): exactly at RCV.NXT resets, elsewhere in the window is challenged.
        if flags.contains(.rst) {
            if seq == d.receiveNext {
                counters.resetsReceived &+= 1
                enterClosed(error: state == .synReceived ? .connectionRefused : .connectionReset)
            } else {
                challengeACK(now: now)
            }
            return
        }

        // SYN in a synchronized state (RFC 5961 4.2): a challenge ACK, never a reset.
        if flags.contains(.syn) {
            if state == .synReceived && seq == block.constant.initialReceiveSequence {
                synDue = true
            } else {
                challengeACK(now: now)
            }
            return
        }

        guard flags.contains(.ack) else { return }
        if state == .synReceived {
            let ack = SequenceNumber(segment.acknowledgmentNumber)
            guard ack > block.delegated.sendUnacknowledged, ack <= block.delegated.sendMax else {
                reset(answering: segment)
                return
            }
            handshakeAcknowledged(segment, now: now)
            updateSendWindow(segment)
            enterSynchronized()
        }
        guard processACK(segment, now: now, hasData: length > 0) else { return }
        guard state != .closed else { return }
        // TS.Recent (RFC 7323 4.3) only from a segment whose ACK passed (RFC 5961 5), as
        // Linux takes it: a blind segment near RCV.NXT with an implausible ACK could
        // otherwise move it ahead by up to 2^31 and have PAWS drop the peer's real ones.
        if block.constant.timestamps, let ts = segment.timestamp, seq <= lastACKSent,
           Int32(bitPattern: ts.value &- block.delegated.timestampRecent) >= 0 {
            block.delegated.timestampRecent = ts.value
            block.delegated.timestampRecentAge = now
        }

        if segment.payloadLength > 0 { receiveData(segment, payload: payload, at: seq, now: now) }
        if flags.contains(.fin) {
            let fin = seq + segment.payloadLength
            if peerFINSequence == nil && state.receivesData { peerFINSequence = fin }
            ackNow = true
        }
        takeFINIfInOrder(now: now)
        if state == .timeWait && flags.contains(.fin) {
            timeWaitDeadline = now + configuration.maximumSegmentLifetime * 2
        }
    }

    // MARK: ACK

    /// The ACK field (RFC 9293 3.10.7.4, fifth check, with RFC 5961 5.2). Returns false when
    /// the segment is to be dropped.
    @discardableResult
    private func processACK(_ segment: TCPRepr, now: Instant, hasData: Bool) -> Bool {
        let ack = SequenceNumber(segment.acknowledgmentNumber)
        let d = block.delegated
        if ack > d.sendMax {
            answerInvalid(segment, now: now) // acknowledges what was never sent
            return false
        }
        if ack < d.sendUnacknowledged - max(d.maxSendWindow, 1) {
            challengeACK(now: now) // too old to be real: blind injection (RFC 5961 5.2)
            return false
        }
        let windowBefore = d.sendWindow
        if ack > d.sendUnacknowledged {
            newDataAcknowledged(segment, ack: ack, now: now)
        } else if ack == d.sendUnacknowledged {
            let windowField = Int(segment.windowSize) << Int(block.constant.sendWindowShift)
            let sacked = block.constant.sackPermitted
                ? scoreboard.update(cumulativeAcknowledgment: ack, blocks: segment.sackBlocks).newlySACKed : 0
            let isDuplicate = !hasData && !segment.flags.contains(.fin) && windowField == windowBefore
                && d.sendUnacknowledged < d.sendMax && windowField > 0
            if isDuplicate || sacked > 0 { duplicateACK(now: now) }
            if sacked > 0 { detectLostRetransmissions() }
        }
        updateSendWindow(segment)
        if block.delegated.sendWindow > 0 {
            block.delegated.persistDeadline = nil
            block.delegated.persistBackoff = 0
        } else {
            // The peer answers our probes: it is alive, only its window is closed.
            block.delegated.consecutiveTimeouts = 0
        }
        return true
    }

    private func newDataAcknowledged(_ segment: TCPRepr, ack: SequenceNumber, now: Instant) {
        let before = block.delegated.sendUnacknowledged
        let acked = ack - before
        limitedTransmit = 0
        let flightBefore = block.delegated.sendMax - before
        block.delegated.sendUnacknowledged = ack
        if block.delegated.sendNext < ack { block.delegated.sendNext = ack }
        block.delegated.consecutiveTimeouts = 0

        // RTT: from the echoed timestamp, else from the timed segment (Karn).
        if block.constant.timestamps, let ts = segment.timestamp, ts.echoReply != 0 {
            recordTimestampEcho(ts.echoReply, now: now)
        } else if let timed = timedSegment, ack > timed.sequence {
            block.delegated.retransmission.record(.timedSegment(sentAt: timed.sentAt, acknowledgedAt: now,
                                                                retransmitted: false))
            timedSegment = nil
        }
        block.delegated.retransmission.newDataAcknowledged(at: now, allAcknowledged: ack == block.delegated.sendMax)
        probeTimeoutOutstanding = false
        armTailLossProbe(now: now)

        let dataEnd = sendQueue.end
        if let ids = sendQueue.acknowledge(upTo: SequenceNumber.earlier(ack, dataEnd)) {
            completions.append(CompletionRange(lower: ids.lowerBound, upper: ids.upperBound, status: .acknowledged))
        }

        let update = block.constant.sackPermitted
            ? scoreboard.update(cumulativeAcknowledgment: ack, blocks: segment.sackBlocks)
            : scoreboard.update(cumulativeAcknowledgment: ack, blocks: TCPSACKBlocks())
        let flight = block.delegated.sendMax - ack

        if block.constant.sackPermitted {
            detectLostRetransmissions()
            if update.recoveryEnded {
                recoveryRetransmissions.removeAll()
                block.delegated.congestion.onRecoveryExit(flightSize: flight)
            } else if !scoreboard.isInRecovery {
                block.delegated.congestion.onAcknowledged(bytes: acked, flightSize: flightBefore, now: now,
                                                          smoothedRTT: block.delegated.retransmission.estimator.smoothedRTT)
            }
            if !scoreboard.isInRecovery, scoreboard.mayEnterRecovery, scoreboard.isLost(ack) {
                enterRecovery(now: now)
            }
            block.delegated.duplicateACKs = 0
        } else if inNewRenoRecovery, let recover = newRenoRecover {
            if ack >= recover {
                // Full acknowledgment (RFC 6582 3.2 step 3).
                inNewRenoRecovery = false
                windowInflation = 0
                block.delegated.congestion.onRecoveryExit(flightSize: flight)
                block.delegated.duplicateACKs = 0
            } else {
                // Partial: the next hole goes out now; deflate by what was acknowledged.
                retransmitNow = SequenceRange(ack, SequenceNumber.earlier(ack + block.constant.segmentSize,
                                                                          block.delegated.sendMax))
                windowInflation = max(0, windowInflation - acked) + (acked >= block.constant.segmentSize
                                                                     ? block.constant.segmentSize : 0)
            }
        } else {
            block.delegated.duplicateACKs = 0
            block.delegated.congestion.onAcknowledged(bytes: acked, flightSize: flightBefore, now: now,
                                                      smoothedRTT: block.delegated.retransmission.estimator.smoothedRTT)
        }

        // Past the last recovery's point, that point no longer holds a new recovery back
        // (RFC 6582 3.2 step 2). Kept, it would again once the sequence numbers had gone
        // halfway round (2 GiB later), and every loss for the next 2 GiB would wait for a
        // timeout.
        if !inNewRenoRecovery, let recover = newRenoRecover, ack > recover { newRenoRecover = nil }
        if let fin = finSequence, ack == fin + 1 { ourFINAcknowledged(now: now) }
    }

    private func duplicateACK(now: Instant) {
        block.delegated.duplicateACKs += 1
        let threshold = 3
        // Limited transmit (RFC 3042): the first two duplicate ACKs each let one new segment
        // out beyond cwnd, so a small window still produces the third.
        if block.delegated.duplicateACKs < threshold { limitedTransmit = block.delegated.duplicateACKs }
        if block.constant.sackPermitted {
            if !scoreboard.isInRecovery, scoreboard.mayEnterRecovery,
               block.delegated.duplicateACKs >= threshold || scoreboard.isLost(block.delegated.sendUnacknowledged) {
                enterRecovery(now: now)
            }
        } else if inNewRenoRecovery {
            windowInflation += block.constant.segmentSize
        } else if block.delegated.duplicateACKs == threshold,
                  newRenoRecover.map({ block.delegated.sendUnacknowledged > $0 }) ?? true {
            // RFC 6582 3.2 step 2: a new recovery only once the last one's point is passed.
            newRenoRecover = block.delegated.sendMax
            inNewRenoRecovery = true
            limitedTransmit = 0
            tailLossProbeDeadline = nil
            counters.fastRetransmits &+= 1
            block.delegated.congestion.onLossDetected(flightSize: flightSize, now: now)
            windowInflation = 3 * block.constant.segmentSize
            retransmitNow = SequenceRange(block.delegated.sendUnacknowledged,
                                          SequenceNumber.earlier(block.delegated.sendUnacknowledged
                                                                 + block.constant.segmentSize, block.delegated.sendMax))
        }
    }

    /// In SACK recovery: the oldest retransmission whose hole is still open although the peer
    /// has SACKed DupThresh segments' worth sent after it is lost; it goes out again at once.
    private func detectLostRetransmissions() {
        guard scoreboard.isInRecovery, retransmitNow == nil else { return }
        let unacknowledged = block.delegated.sendUnacknowledged
        recoveryRetransmissions.removeAll { $0.range.upper <= unacknowledged || scoreboard.isSACKed($0.range.lower) }
        guard let oldest = recoveryRetransmissions.first,
              scoreboard.sackedBytes(from: oldest.sentMax) >= 3 * block.constant.segmentSize else { return }
        recoveryRetransmissions.removeFirst()
        retransmitNow = SequenceRange(SequenceNumber.later(oldest.range.lower, unacknowledged), oldest.range.upper)
        counters.lostRetransmissions &+= 1
    }

    /// RFC 6675 section 5, step 4.
    private func enterRecovery(now: Instant) {
        limitedTransmit = 0
        tailLossProbeDeadline = nil
        block.delegated.congestion.onLossDetected(flightSize: flightSize, now: now)
        if let first = scoreboard.enterRecovery() {
            counters.fastRetransmits &+= 1
            retransmitNow = first
        }
    }

    var flightSize: Int { block.delegated.sendMax - block.delegated.sendUnacknowledged }

    func updateSendWindow(_ segment: TCPRepr) {
        let seq = SequenceNumber(segment.sequenceNumber), ack = SequenceNumber(segment.acknowledgmentNumber)
        let d = block.delegated
        guard d.sendWL1 < seq || (d.sendWL1 == seq && d.sendWL2 <= ack) else { return }
        let window = Int(segment.windowSize) << Int(block.constant.sendWindowShift)
        block.delegated.sendWindow = window
        block.delegated.maxSendWindow = max(d.maxSendWindow, window)
        block.delegated.sendWL1 = seq
        block.delegated.sendWL2 = ack
    }

    private func recordTimestampEcho(_ echo: UInt32, now: Instant) {
        let elapsed = timestampNow(now) &- echo
        guard elapsed < 1 << 31 else { return }
        let sentAt = Instant(nanoseconds: now.nanoseconds - Int64(elapsed) * 1_000_000)
        block.delegated.retransmission.record(.timestampEcho(sentAt: sentAt, acknowledgedAt: now))
    }

    private func ourFINAcknowledged(now: Instant) {
        switch state {
        case .finWait1: state = .finWait2
        case .closing: enterTimeWait(now: now)
        case .lastAck: enterClosed(error: nil)
        default: break
        }
    }

    func enterTimeWait(now: Instant) {
        state = .timeWait
        block.delegated.retransmission.stop()
        block.delegated.persistDeadline = nil
        timeWaitDeadline = now + configuration.maximumSegmentLifetime * 2
    }

    // MARK: Data and FIN

    private func receiveData(_ segment: TCPRepr, payload: UnsafeRawBufferPointer, at seq: SequenceNumber,
                             now: Instant) {
        guard state.receivesData else { return }
        let inOrder = seq == block.delegated.receiveNext && reassembly.isEmpty
        let hadHeld = !reassembly.isEmpty
        let outcome: ReassemblyQueue.Outcome
        do {
            outcome = try reassembly.insert(payload, at: seq, window: receiveBuffer.free) { piece in
                receiveBuffer.append(piece)
            }
        } catch {
            counters.outOfOrderSegments &+= 1
            ackNow = true
            return
        }
        block.delegated.receiveNext = reassembly.nextExpected
        counters.bytesReceived &+= UInt64(outcome.delivered)
        counters.duplicateBytesReceived &+= UInt64(outcome.duplicate)
        if inOrder && outcome.delivered == payload.count {
            // RFC 5681 4.2: an ACK for at least every second full-sized segment, else delayed.
            // Counted in bytes, as Linux counts (more than one MSS unacknowledged): a
            // super-segment that GRO or a TSO link delivers whole is many segments, and a
            // peer whose segments are a little under our MSS is still answered every second.
            let unacknowledged = block.delegated.receiveNext - lastACKSent
            let mss = block.constant.segmentSize
            if unacknowledged > mss || segment.flags.contains(.psh) && unacknowledged >= mss {
                ackNow = true
            } else if block.delegated.delayedACKDeadline == nil {
                block.delegated.delayedACKDeadline = now + configuration.delayedACKTimeout
            }
        } else {
            // Out of order, a duplicate, or filling a hole: ACK at once (RFC 5681 4.2), one ACK
            // per such segment, so that the sender counts its duplicate ACKs even when a
            // burst of segments is taken in before the next poll.
            if !inOrder && !hadHeld || outcome.delivered == 0 { counters.outOfOrderSegments &+= 1 }
            ackNow = true
            acksOwed += 1
        }
    }

    private func takeFINIfInOrder(now: Instant) {
        guard let fin = peerFINSequence, block.delegated.receiveNext == fin, state.receivesData else { return }
        block.delegated.receiveNext = fin + 1
        receiveBuffer.markEnd()
        ackNow = true
        switch state {
        case .established:
            state = .closeWait
        case .finWait1:
            if let ours = finSequence, block.delegated.sendUnacknowledged == ours + 1 {
                enterTimeWait(now: now)
            } else {
                state = .closing
            }
        case .finWait2:
            enterTimeWait(now: now)
        default:
            break
        }
    }

    // MARK: Answers

    /// A challenge ACK (RFC 5961), at most `challengeACKLimitPerSecond` a second.
    private func challengeACK(now: Instant) {
        if now - challengeACKWindowStart >= .seconds(1) {
            challengeACKWindowStart = now
            challengeACKsInWindow = 0
        }
        guard challengeACKsInWindow < Self.challengeACKLimitPerSecond else { return }
        challengeACKsInWindow += 1
        counters.challengeACKs &+= 1
        ackNow = true
    }

    /// The ACK RFC 9293 sends for a segment that was not acceptable. For one that takes no
    /// sequence space (or carries a SYN), at most one per `invalidSegmentACKInterval`: two
    /// ends that a middlebox desynchronised would otherwise answer each other's ACKs for
    /// ever, an ACK loop (Linux's `tcp_oow_rate_limited`). Data or a FIN is always answered:
    /// its sender learns from the duplicate ACK.
    private func answerInvalid(_ segment: TCPRepr, now: Instant) {
        let flags = segment.flags
        if (segment.payloadLength == 0 && !flags.contains(.fin)) || flags.contains(.syn) {
            if let last = lastInvalidSegmentACK, now - last < configuration.invalidSegmentACKInterval {
                counters.invalidSegmentACKsLimited &+= 1
                return
            }
            lastInvalidSegmentACK = now
        }
        ackNow = true
    }

    /// A RST for an unacceptable ACK during the handshake (RFC 9293 3.10.7.3/4).
    private func reset(answering segment: TCPRepr) {
        pendingReset = TCPRepr(sourcePort: id.localPort, destinationPort: id.remotePort,
                               sequenceNumber: segment.acknowledgmentNumber, flags: .rst, windowSize: 0)
        counters.resetsSent &+= 1
    }
}
