import OffloadCore
import OffloadWire

extension TCPConnection {
    /// Runs the timers due by `now`, then sends what is due: a reset, the SYN, urgent
    /// retransmissions, data the windows allow (with the FIN after the last byte), and an
    /// ACK if one is owed and no segment carried it; at most `budget` segments (the room
    /// the transmit path has), the rest at a later poll. Returns how many it sent.
    @discardableResult
    package func poll(now: Instant, budget: Int = .max, emit: Emit) -> Int {
        emitBudget = budget
        runTimers(now: now)
        if emitBudget > 0, let rst = pendingReset {
            pendingReset = nil
            emit(rst, UnsafeBufferPointer(start: nil, count: 0))
            counters.segmentsSent &+= 1
            emitBudget -= 1
        }
        sendDue(now: now, emit: emit)
        needsPoll = emitBudget == 0
        return budget - emitBudget
    }

    private func sendDue(now: Instant, emit: Emit) {
        guard emitBudget > 0 else { return }
        switch state {
        case .closed, .listen, .timeWait:
            if state == .timeWait && ackNow { sendACK(now: now, emit: emit) }
            return
        case .synSent, .synReceived:
            if synDue { sendSYN(now: now, emit: emit) }
            if state == .synSent { return }
        default:
            break
        }
        guard state != .synReceived else {
            if ackNow { ackNow = false }
            return
        }
        if let range = retransmitNow, emitBudget > 0 {
            retransmitNow = nil
            if range.lower >= block.delegated.sendUnacknowledged && !range.isEmpty {
                sendSegment(from: range.lower, length: range.count, retransmission: true, now: now, emit: emit)
                if block.constant.sackPermitted { scoreboard.retransmitted(.retransmitLost(range)) }
            }
        }
        if block.constant.sackPermitted && scoreboard.isInRecovery {
            sendInSACKRecovery(now: now, emit: emit)
        } else {
            sendData(now: now, emit: emit)
        }
        if tailLossProbeDue && emitBudget > 0 { sendTailLossProbe(now: now, emit: emit) }
        if probeDue && emitBudget > 0 { sendZeroWindowProbe(now: now, emit: emit) }
        armPersistTimerIfNeeded(now: now)
        if ackNow && emitBudget > 0 { sendACK(now: now, emit: emit) }
        // One pure ACK per out-of-order segment (a data segment does not count as a
        // duplicate ACK), at most a few per poll.
        while acksOwed > 1 && emitBudget > 0 {
            acksOwed -= 1
            sendACK(now: now, emit: emit)
        }
        acksOwed = 0
    }

    /// When `poll` next has something to do on its own (nil: only a segment or a call can
    /// wake it).
    public var nextDeadline: Instant? {
        let d = block.delegated
        func earlier(_ a: Instant?, _ b: Instant?) -> Instant? {
            guard let a else { return b }
            guard let b else { return a }
            return min(a, b)
        }
        return earlier(earlier(timeWaitDeadline, d.retransmission.deadline),
                       earlier(earlier(d.delayedACKDeadline, d.persistDeadline), tailLossProbeDeadline))
    }

    /// Whether `poll` may have something to send now, without waiting for a timer: something
    /// happened since the last poll (a segment, a send, a read, a close), or that poll ran
    /// out of budget.
    public var hasOutput: Bool { needsPoll || pendingReset != nil }

    // MARK: Timers

    private func runTimers(now: Instant) {
        if let t = timeWaitDeadline, t <= now {
            enterClosed(error: nil)
            return
        }
        if let t = block.delegated.delayedACKDeadline, t <= now {
            block.delegated.delayedACKDeadline = nil
            ackNow = true
        }
        if let t = block.delegated.persistDeadline, t <= now {
            block.delegated.persistDeadline = nil
            probeDue = true
        }
        if let t = tailLossProbeDeadline, t <= now {
            tailLossProbeDeadline = nil
            if flightSize > 0 && !probeTimeoutOutstanding && !isRecovering && state.isSynchronized {
                tailLossProbeDue = true
                probeTimeoutOutstanding = true
            }
        }
        if block.delegated.retransmission.expire(at: now) { retransmissionTimeout(now: now) }
    }

    var isRecovering: Bool { inNewRenoRecovery || scoreboard.isInRecovery }

    /// Arms the tail loss probe for the data in flight: two smoothed RTTs (plus the peer's
    /// delayed-ACK time when only one segment is out), never past the RTO. Without an RTT
    /// sample yet, the RTO alone covers the tail.
    func armTailLossProbe(now: Instant) {
        guard flightSize > 0, !isRecovering, !probeTimeoutOutstanding,
              let srtt = block.delegated.retransmission.estimator.smoothedRTT else {
            tailLossProbeDeadline = nil
            return
        }
        var timeout = srtt * 2
        if flightSize <= block.constant.segmentSize { timeout += .milliseconds(200) }
        timeout = max(timeout, .milliseconds(10))
        tailLossProbeDeadline = now + min(timeout, block.delegated.retransmission.currentRTO)
    }

    /// The probe: a new segment if the windows allow one, else the last segment again, so
    /// that an ACK (with SACK blocks) tells of a lost tail before the RTO would.
    private func sendTailLossProbe(now: Instant, emit: Emit) {
        tailLossProbeDue = false
        let d = block.delegated
        guard d.sendUnacknowledged < d.sendMax else { return }
        let mss = block.constant.segmentSize
        if d.sendNext == d.sendMax, d.sendNext < sendQueue.end, d.sendWindow - flightSize >= min(mss, sendQueue.end - d.sendNext) {
            sendSegment(from: d.sendNext, length: min(mss, sendQueue.end - d.sendNext), retransmission: false, now: now,
                        emit: emit)
        } else {
            let end = finSequence.map { d.sendMax == $0 + 1 ? $0 : d.sendMax } ?? d.sendMax
            let start = SequenceNumber.later(d.sendUnacknowledged, end - mss)
            sendSegment(from: start, length: end - start, retransmission: true, now: now, emit: emit)
        }
        counters.tailLossProbes &+= 1
    }

    /// RFC 1191: the path to the peer takes packets of at most `mtu` bytes, as an ICMP
    /// "fragmentation needed" for a segment of ours said (it quoted `quotedSequence`).
    /// Segments from now on fit it, and the flight, lost at the hop that said so, is sent
    /// again at the new size, with the congestion window started again in segments of it.
    /// Ignored: a message that quotes no sequence number in flight (RFC 5927 4.1: one an
    /// off-path sender made up), an MTU below IPv4's 68, and one that would not lower the
    /// segment size. Returns whether it changed.
    package func pathMTUDecreased(to mtu: Int, quotedSequence: SequenceNumber) -> Bool {
        let d = block.delegated
        guard d.sendUnacknowledged <= quotedSequence, quotedSequence < d.sendMax else { return false }
        return segmentsMustFit(mtu: mtu)
    }

    /// The same for the host's own link, whose MTU shrank (`ip link set … mtu`): no
    /// message to check.
    package func linkMTUDecreased(to mtu: Int) -> Bool { segmentsMustFit(mtu: mtu) }

    private func segmentsMustFit(mtu: Int) -> Bool {
        guard state.isSynchronized, mtu >= 68 else { return false }
        // The MSS counts no TCP options (RFC 6691); at least 88 bytes, as Linux's TCP_MIN_MSS.
        let mss = max(88, mtu - 40)
        guard mss < min(block.constant.localMSS, block.constant.remoteMSS) else { return false }
        block.constant.remoteMSS = mss
        counters.pathMTUDecreases &+= 1
        startCongestionControl()
        timedSegment = nil
        tailLossProbeDeadline = nil
        tailLossProbeDue = false
        recoveryRetransmissions.removeAll()
        sendAgainFromUnacknowledged()
        needsPoll = true
        return true
    }

    /// RFC 1122 4.2.3.9: an ICMP protocol or port unreachable (code 2 or 3) that quotes our
    /// SYN ends a connection still in SYN-SENT as refused, as Linux does. Net and host
    /// unreachable are soft errors, which never abort (RFC 1122), and in the synchronized
    /// states a hard error is taken as soft (RFC 5927 4.2: anyone may forge one). Returns
    /// whether the connection ended.
    package func destinationUnreachable(code: UInt8, quotedSequence: SequenceNumber) -> Bool {
        guard state == .synSent, code == 2 || code == 3,
              quotedSequence == block.constant.initialSendSequence else { return false }
        enterClosed(error: .connectionRefused)
        needsPoll = true
        return true
    }

    /// RFC 6298 5.4 to 5.7, RFC 5681 eq. 4, RFC 6675 5.1: back to SND.UNA with a window of one.
    private func retransmissionTimeout(now: Instant) {
        block.delegated.consecutiveTimeouts += 1
        counters.retransmissionTimeouts &+= 1
        let limit = state.isSynchronized ? configuration.dataRetries : configuration.synRetries
        guard block.delegated.consecutiveTimeouts <= limit else {
            if state.isSynchronized {
                pendingReset = TCPRepr(sourcePort: id.localPort, destinationPort: id.remotePort,
                                       sequenceNumber: block.delegated.sendMax.rawValue, flags: .rst, windowSize: 0)
                counters.resetsSent &+= 1
            }
            enterClosed(error: .timedOut)
            return
        }
        timedSegment = nil
        tailLossProbeDeadline = nil
        tailLossProbeDue = false
        probeTimeoutOutstanding = false
        if state == .synSent || state == .synReceived {
            synDue = true
            return
        }
        if block.delegated.sendWindow == 0 && sendQueue.end > block.delegated.sendUnacknowledged {
            // Data sent before the window closed went unacknowledged: probe, with the
            // backoff, and send it again once the window opens; a closed window is no sign
            // of congestion.
            block.delegated.sendNext = block.delegated.sendUnacknowledged
            probeDue = true
            return
        }
        recoveryRetransmissions.removeAll()
        block.delegated.congestion.onRetransmissionTimeout(
            flightSize: flightSize, now: now, firstInSeries: block.delegated.consecutiveTimeouts == 1)
        scoreboard.retransmissionTimeout()
        sendAgainFromUnacknowledged()
    }

    /// Every segment in flight is to be sent again, from SND.UNA, and any recovery under
    /// way ends (after a timeout, or a smaller path MTU).
    private func sendAgainFromUnacknowledged() {
        inNewRenoRecovery = false
        windowInflation = 0
        newRenoRecover = block.delegated.sendMax
        block.delegated.duplicateACKs = 0
        retransmitNow = nil
        block.delegated.sendNext = block.delegated.sendUnacknowledged
    }

    private func armPersistTimerIfNeeded(now: Instant) {
        let d = block.delegated
        guard d.sendWindow == 0, d.sendUnacknowledged == d.sendMax, d.sendNext < sendQueue.end,
              d.persistDeadline == nil, !probeDue else { return }
        let rto = d.retransmission.currentRTO
        let backoff = min(d.persistBackoff, 6)
        block.delegated.persistDeadline = now + rto * (1 << backoff)
        block.delegated.persistBackoff += 1
    }

    // MARK: Segments

    private func sendSYN(now: Instant, emit: Emit) {
        synDue = false
        let iss = block.constant.initialSendSequence
        var header = TCPRepr(sourcePort: id.localPort, destinationPort: id.remotePort, sequenceNumber: iss.rawValue,
                             flags: .syn, windowSize: UInt16(min(receiveBuffer.free, 65_535)),
                             maxSegmentSize: UInt16(clamping: configuration.maximumSegmentSize))
        if state == .synSent {
            if configuration.windowScaling { header.windowScale = configuration.receiveWindowShift }
            header.sackPermitted = configuration.selectiveAcknowledgments
            if configuration.timestamps { header.timestamp = TCPTimestamp(value: timestampNow(now), echoReply: 0) }
        } else {
            header.flags = [.syn, .ack]
            header.acknowledgmentNumber = block.delegated.receiveNext.rawValue
            if block.constant.windowScaling { header.windowScale = block.constant.receiveWindowShift }
            header.sackPermitted = block.constant.sackPermitted
            if block.constant.timestamps {
                header.timestamp = TCPTimestamp(value: timestampNow(now), echoReply: block.delegated.timestampRecent)
            }
            lastACKSent = block.delegated.receiveNext
            block.delegated.receiveAdvertisedEdge = block.delegated.receiveNext + Int(header.windowSize)
        }
        if block.delegated.sendMax == iss {
            block.delegated.sendMax = iss + 1
            block.delegated.sendNext = iss + 1
            if !block.constant.timestamps { timedSegment = (iss, now) }
        } else {
            counters.segmentsRetransmitted &+= 1
        }
        block.delegated.retransmission.segmentSent(at: now)
        emit(header, UnsafeBufferPointer(start: nil, count: 0))
        counters.segmentsSent &+= 1
        emitBudget -= 1
        lastSend = now
    }

    /// Sends what the windows allow, from SND.NXT (after a timeout that resends what was
    /// sent before, skipping what the peer SACKed), with silly window avoidance and Nagle.
    private func sendData(now: Instant, emit: Emit) {
        let mss = block.constant.segmentSize
        // Back from idle for longer than an RTO: the window restarts (RFC 5681 4.1), since
        // what it knew of the path is stale.
        if flightSize == 0, block.delegated.sendNext < sendQueue.end,
           now - lastSend > block.delegated.retransmission.currentRTO {
            block.delegated.congestion.onIdleRestart()
        }
        while emitBudget > 0 {
            let d = block.delegated
            var next = d.sendNext
            // Resending after a timeout: skip what the peer holds already.
            if next < d.sendMax, block.constant.sackPermitted,
               let held = scoreboard.sackedRanges.first(where: { $0.contains(next) }) {
                block.delegated.sendNext = SequenceNumber.earlier(held.upper, d.sendMax)
                next = block.delegated.sendNext
                continue
            }
            let extra = windowInflation + (next == d.sendMax ? limitedTransmit * mss : 0)
            let window = min(d.sendWindow, d.congestion.congestionWindow + extra)
            // What the peer holds above a hole (SACKed) is no longer in the network.
            let held = block.constant.sackPermitted && next == d.sendMax ? scoreboard.sackedBytes : 0
            let usable = min(window - (next - d.sendUnacknowledged) + held, d.sendWindow - (next - d.sendUnacknowledged))
            let dataEnd = sendQueue.end
            let available = dataEnd - next
            var length = min(max(mss, largestSegmentPayload), available, max(0, usable))
            if next < d.sendMax {
                // Resending: only up to what was sent before, in one piece.
                length = min(length, d.sendMax - next, mss)
            } else if length > mss && length < available {
                length -= length % mss // a super-segment cuts into whole segments only
            }
            let finDue = finSequence.map { next + length == $0 && next <= $0 } ?? false
            if length <= 0 && !finDue { return }
            if length < mss && length < available {
                // A window-limited runt (RFC 9293 3.8.6.2.1): wait for more window, unless the
                // peer's window is small or nothing is in flight to bring an ACK.
                if length < d.maxSendWindow / 2 && next != d.sendUnacknowledged { return }
            } else if length < mss && !finDue && next >= d.sendMax && !block.cached.noDelay
                        && d.sendUnacknowledged != d.sendMax {
                return // Nagle: a small last piece waits for the ACK of what is in flight
            }
            sendSegment(from: next, length: length, retransmission: next < d.sendMax, now: now, emit: emit)
            if length == 0 && !finDue { return }
        }
    }

    /// RFC 6675 section 5 (C): while cwnd - pipe allows a segment, NextSeg decides which.
    private func sendInSACKRecovery(now: Instant, emit: Emit) {
        let mss = block.constant.segmentSize
        while emitBudget > 0 {
            let d = block.delegated
            guard d.congestion.congestionWindow - scoreboard.pipe >= mss else { return }
            let newData = d.sendNext < sendQueue.end
                && d.sendWindow - (d.sendNext - d.sendUnacknowledged) >= min(mss, sendQueue.end - d.sendNext)
            let choice = scoreboard.nextSegment(newDataAvailable: newData)
            switch choice {
            case .retransmitLost(let r), .retransmitUnSACKed(let r), .rescue(let r):
                sendSegment(from: r.lower, length: r.count, retransmission: true, now: now, emit: emit)
                scoreboard.retransmitted(choice)
            case .newData:
                let length = min(mss, sendQueue.end - d.sendNext)
                sendSegment(from: d.sendNext, length: length, retransmission: false, now: now, emit: emit)
            case .nothing:
                if let fin = finSequence, d.sendNext == fin, sendQueue.end == fin {
                    sendSegment(from: fin, length: 0, retransmission: false, now: now, emit: emit)
                }
                return
            }
        }
    }

    /// A zero window's probe (RFC 9293 3.8.6.1): a segment the peer answers with an ACK that
    /// carries its window. As Linux sends it (tcp_xmit_probe_skb): no data, at SND.UNA - 1, a
    /// sequence number the peer has passed. It takes no sequence space. A probe of one new
    /// byte moved SND.NXT and SND.MAX past the peer's closed window: our ACKs then lay
    /// outside it and were dropped, and the data resumed after a one-byte hole.
    private func sendZeroWindowProbe(now: Instant, emit: Emit) {
        probeDue = false
        let d = block.delegated
        guard d.sendWindow == 0, d.sendNext < sendQueue.end else { return }
        counters.zeroWindowProbes &+= 1
        var header = ackHeader(now: now)
        header.sequenceNumber = (d.sendUnacknowledged - 1).rawValue
        emit(header, UnsafeBufferPointer(start: nil, count: 0))
        counters.segmentsSent &+= 1
        emitBudget -= 1
    }

    /// Builds and emits one segment of `length` payload bytes from `sequence` (gathered from
    /// the send queue), with the FIN when it ends where our FIN goes, and moves SND.NXT and
    /// SND.MAX when it is the next in line.
    func sendSegment(from sequence: SequenceNumber, length: Int, retransmission: Bool, now: Instant, emit: Emit) {
        var header = ackHeader(now: now)
        header.sequenceNumber = sequence.rawValue
        let sackBytes = header.sackBlocks.isEmpty ? 0 : 4 + 8 * header.sackBlocks.count
        let perSegment = max(1, block.constant.segmentSize - sackBytes)
        var length = min(length, max(perSegment, largestSegmentPayload), sendQueue.end - sequence)
        var gathered = 0
        if length > 0 {
            let (n, bytes) = sendQueue.gather(from: sequence, length: length, into: slices)
            length = bytes
            gathered = n
            if length > perSegment && sequence + length < sendQueue.end && length % perSegment != 0 {
                // A super-segment ends on a whole segment unless it ends the data.
                length -= length % perSegment
                gathered = sendQueue.gather(from: sequence, length: length, into: slices).slices
            }
        }
        if let fin = finSequence, sequence + length == fin {
            header.flags.insert(.fin)
        }
        if length > 0 && sequence + length == sendQueue.end { header.flags.insert(.psh) }
        header.payloadLength = length
        emit(header, UnsafeBufferPointer(rebasing: slices[0..<gathered]))
        counters.segmentsSent &+= 1
        emitBudget -= 1
        lastSend = now
        let end = sequence + length + (header.flags.contains(.fin) ? 1 : 0)
        if retransmission || sequence < block.delegated.sendMax {
            counters.segmentsRetransmitted &+= 1
            if scoreboard.isInRecovery && length > 0 {
                if recoveryRetransmissions.count == 64 { recoveryRetransmissions.removeFirst() }
                recoveryRetransmissions.append((SequenceRange(sequence, sequence + length), block.delegated.sendMax))
            }
            counters.bytesRetransmitted &+= UInt64(min(length, max(0, block.delegated.sendMax - sequence)))
            if let timed = timedSegment, timed.sequence >= sequence && timed.sequence < end { timedSegment = nil }
        } else if !block.constant.timestamps && timedSegment == nil && length > 0 {
            timedSegment = (sequence, now)
        }
        counters.bytesSent &+= UInt64(length)
        if sequence == block.delegated.sendNext || end > block.delegated.sendNext && sequence <= block.delegated.sendNext {
            block.delegated.sendNext = end
        }
        if end > block.delegated.sendMax {
            let flightBefore = flightSize
            block.delegated.sendMax = end
            scoreboard.sent(upTo: end)
            // New data starts the tail loss probe when it is not running, and restarts it
            // when the flight grows past one segment (whose probe waits for a delayed ACK).
            // RFC 8985 7.2 restarts it on all new data; each ACK of new data restarts it here,
            // which costs less per segment and moves it as far.
            if tailLossProbeDeadline == nil || flightBefore <= block.constant.segmentSize { armTailLossProbe(now: now) }
        }
        if end != sequence { block.delegated.retransmission.segmentSent(at: now) }
    }

    private func sendACK(now: Instant, emit: Emit) {
        var header = ackHeader(now: now)
        // SND.MAX, not SND.NXT: after a timeout SND.NXT steps back to resend, and an ACK with
        // a sequence number the peer has passed would be out of its window and dropped
        // unread (Linux likewise never moves snd_nxt back). Where SND.MAX lies past the
        // window the peer last offered (data sent before it closed), the window's edge, as
        // Linux's tcp_acceptable_seq.
        let d = block.delegated
        let edge = d.sendUnacknowledged + d.sendWindow
        header.sequenceNumber = (d.sendMax > edge ? edge : d.sendMax).rawValue
        emit(header, UnsafeBufferPointer(start: nil, count: 0))
        counters.segmentsSent &+= 1
        emitBudget -= 1
    }

    /// The fields every segment after the handshake carries: ACK, window, timestamps, SACK
    /// blocks. Sending it settles any ACK owed.
    private func ackHeader(now: Instant) -> TCPRepr {
        let window = windowToAdvertise()
        var header = TCPRepr(sourcePort: id.localPort, destinationPort: id.remotePort, sequenceNumber: 0,
                             acknowledgmentNumber: block.delegated.receiveNext.rawValue, flags: .ack,
                             windowSize: window)
        if block.constant.timestamps {
            header.timestamp = TCPTimestamp(value: timestampNow(now), echoReply: block.delegated.timestampRecent)
        }
        if block.constant.sackPermitted && !reassembly.isEmpty {
            header.sackBlocks = reassembly.sackBlocks(limit: block.constant.timestamps ? 3 : 4)
        }
        let edge = block.delegated.receiveNext + (Int(window) << Int(block.constant.receiveWindowShift))
        if edge > block.delegated.receiveAdvertisedEdge || receiveBuffer.free == 0 {
            block.delegated.receiveAdvertisedEdge = edge
        }
        lastACKSent = block.delegated.receiveNext
        ackNow = false
        block.delegated.delayedACKDeadline = nil
        return header
    }
}
