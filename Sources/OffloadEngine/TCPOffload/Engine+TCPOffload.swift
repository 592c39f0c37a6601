import OffloadCore
import OffloadLink
import OffloadTCP
import OffloadWire

/// The engine's side of TCP offload (seed 003): it runs the data transfer of the connections
/// the host offloads. Their segments come to `receiveOffloaded` from the connection table,
/// their timers and output run in `pollOffloadedTCP` on the engine's poll loop, and their
/// segments leave as gather lists: headers from engine memory, payload slices straight from
/// the application's buffers (T4, T5). Completions and uploads go to the host as events.
extension Engine where Port: ~Copyable {
    // MARK: Segments in

    /// A segment of an offloaded connection whose entry is usable (`slot` from the entry).
    func receiveOffloaded(_ buffer: consuming PacketBuffer, slot: UInt32, key: FlowKey, entry h: EntryHandle,
                          port: UInt16, now: Instant) {
        table.recordHit(h, bytes: buffer.count, now: now)
        guard let s = tcp.slots[Int(slot)] else { return drop(.noOffloadedConnection) }
        let policy = ChecksumPolicy(buffer.offload)
        let frame = buffer.bytes
        let header: TCPRepr
        let payload: UnsafeRawBufferPointer
        do {
            let ethernet = try EthernetFrame(checking: frame)
            let packet = try IPv4Packet(checking: ethernet.payload)
            let ip = try IPv4Repr.parse(packet, checksums: policy)
            let segment = try TCPPacket(checking: packet.payload)
            header = try TCPRepr.parse(segment, source: ip.source, destination: ip.destination, checksums: policy)
            payload = segment.payload
        } catch {
            tcp.counters.segmentsDropped &+= 1
            return drop(.badSegment)
        }
        // A RST exactly at RCV.NXT ends the connection (RFC 5961 3.2), and teardown is the
        // host's (an exception): the connection goes back first, then the segment follows it
        // through the exception queue, so the host sees them in order. Any other RST the
        // engine's state machine takes itself, as the host's would: a challenge ACK inside the
        // window, nothing outside it, so that blind resets cost no trip to the host. A SYN the
        // engine answers itself too (a challenge ACK, RFC 5961), and the peer's FIN it takes
        // (the connection goes on sending in CLOSE-WAIT).
        if header.flags.contains(.rst),
           SequenceNumber(header.sequenceNumber) == s.connection.block.delegated.receiveNext {
            // No room for it in the software: dropped, and the connection stays here (the peer
            // resends a RST in answer to what we send next).
            guard exceptions.count < exceptions.capacity else { return drop(.exceptionQueueFull) }
            uploadTCP(slot: slot, reason: .reset, now: now)
            _ = table.incrementInSoftware(h)
            return toSoftware(buffer, port: port, reason: .localDelivery, counted: key, key: key)
        }
        let connection = s.connection
        connection.receive(header, payload: payload, now: now)
        counters.deliveredToTCP &+= 1
        tcp.counters.payloadBytesReceived &+= UInt64(payload.count)
        if !payload.isEmpty || header.flags.contains(.fin) { tcp.counters.segmentsForTheApplication &+= 1 }
        _ = consume buffer
        reportCompletions(slot: slot, connection)
        if !Self.runsInEngine(connection.state) {
            uploadTCP(slot: slot, reason: .stateChanged, now: now)
        } else if s.closing && connection.unacknowledgedBytes == 0 {
            uploadTCP(slot: slot, reason: .closing, now: now)
        } else {
            // An ACK to send, a window that opened, a timer that moved: the next poll sees.
            tcp.schedule.markReady(slot)
        }
    }

    /// The states the engine runs a connection in: data both ways, or only ours after the
    /// peer's FIN. Our FIN, TIME_WAIT and the rest are the host's.
    static func runsInEngine(_ state: TCPState) -> Bool { state == .established || state == .closeWait }

    // MARK: Time and segments out

    /// Runs the offloaded connections' timers and sends what they have due, at most
    /// `tcpPollBudget` segments in all. Returns how many were sent.
    func pollOffloadedTCP(now: Instant) -> Int {
        tcp.flushOverflow()
        // Even with no connection left: the marks of those that left are cleared by a visit.
        tcp.schedule.markDue(now: now)
        // At least one segment: a budget of 0 would leave ready connections waiting for ever.
        var budget = max(1, configuration.tcpPollBudget)
        var sent = 0
        // Each connection ready now once; one that is left with output goes to the back.
        var visits = tcp.schedule.readyCount
        while visits > 0, budget > 0, let slot = tcp.schedule.takeReady() {
            visits -= 1
            guard let s = tcp.slots[Int(slot)] else { continue }
            let connection = s.connection
            // Completions that found no room in the events ring are tried again here too.
            if connection.hasOutput || connection.nextDeadline.map({ $0 <= now }) ?? false
                || connection.pendingCompletionRanges > 0 {
                let n = connection.poll(now: now, budget: budget) { header, payload in
                    transmitSegment(header, payload: payload, slot: s)
                }
                budget -= n
                sent += n
                reportCompletions(slot: slot, connection)
                let reason: TCPUploadReason? = !Self.runsInEngine(connection.state) ? .stateChanged
                    : s.closing && connection.unacknowledgedBytes == 0 ? .closing : nil
                if let reason, uploadTCP(slot: slot, reason: reason, now: now) { continue }
                if connection.hasOutput || connection.pendingCompletionRanges > 0 { tcp.schedule.markReady(slot) }
            }
            tcp.schedule.schedule(slot, at: connection.nextDeadline)
        }
        return sent
    }

    @_specialize(where Port == MemoryLink)
    @_specialize(where Port == SystemLink)
    private func transmitSegment(_ header: TCPRepr, payload: UnsafeBufferPointer<UnsafeRawBufferPointer>,
                                 slot s: TCPOffloadTable.Slot) {
        tcp.identification &+= 1
        // The pieces of a super-segment carry what fits beside this header's options.
        let pieceSize = Int(s.segmentSizeLimit) - (header.headerLength - TCPPacket.minimumHeaderLength)
        let segments = portSegmentsTCP[Int(s.port)] && pieceSize > 0
        let (length, metadata) = s.headers.write(header, payload: payload, identification: tcp.identification,
                                                 partialChecksum: portTakesPartialChecksums[Int(s.port)],
                                                 segmentSize: segments ? pieceSize : .max, into: tcp.headerScratch)
        do {
            try ports[Int(s.port)].transmit(header: UnsafeRawBufferPointer(rebasing: tcp.headerScratch[0..<length]),
                                            payloads: PayloadSlices(payload), metadata: metadata)
            tcp.counters.segmentsSent &+= 1
            tcp.counters.payloadBytesSent &+= UInt64(header.payloadLength)
            if segments && header.payloadLength > pieceSize { tcp.counters.superSegmentsSent &+= 1 }
        } catch {
            // Lost like a frame on a full device: the connection's timers send it again.
            tcp.counters.transmitFailures &+= 1
        }
    }

    /// Tells the host which messages completed, as far as the events ring has room beside
    /// its reserve (the rest wait in the connection for a later poll).
    private func reportCompletions(slot: UInt32, _ connection: TCPConnection) {
        let pending = connection.pendingCompletionRanges
        guard pending > 0, let host = tcp.slots[Int(slot)]?.host else { return }
        let room = tcp.completionRoom
        if room < pending { tcp.counters.completionsDelayed &+= 1 }
        guard room > 0 else { return }
        // The oldest first, as many as fit: the rest wait for a later poll.
        for range in connection.takeCompletions(max: room) {
            tcp.counters.messagesCompleted &+= UInt64(range.count)
            tcp.emit(.completed(host: host, range))
        }
    }

    // MARK: Offload and upload

    func handleTCP(_ command: TCPOffloadCommand, now: Instant) {
        switch command {
        case .offload(let request):
            guard let slot = tcp.adopt(request) else {
                tcp.counters.uploads[.noResources] &+= 1
                tcp.emit(.uploaded(host: request.host, request.connection, .noResources))
                return
            }
            // Segments of the flow still in the software keep do-not-use set: they come back
            // (in order) to be completed with the new action before the engine takes new ones.
            let waiting = table.lookup(request.key).map { table.inSoftwareCount($0) } ?? 0
            if case .full = table.insert(request.key, action: .offloadedTCP(slot: slot), now: now,
                                         doNotUse: configuration.orderGuard && waiting > 0) {
                // No entry, no segments: the connection stays with the host.
                _ = tcp.release(slot)
                tcp.counters.uploads[.noResources] &+= 1
                tcp.emit(.uploaded(host: request.host, request.connection, .noResources))
                return
            }
            // A port that segments takes super-segments (TSO): up to 64 KiB of IPv4 packet.
            if portSegmentsTCP[Int(request.port)] {
                request.connection.largestSegmentPayload = 65_535 - IPv4Packet.minimumHeaderLength
                    - TCPPacket.maximumHeaderLength
            }
            tcp.counters.offloaded &+= 1
            tcp.emit(.offloaded(host: request.host))
        case .post(let host, let bytes):
            // A post that crossed an upload is sent again by the host, which has the buffer.
            guard let slot = tcp.byHost[host], let connection = tcp.slots[Int(slot)]?.connection else { return }
            guard (try? connection.send(bytes)) != nil else {
                // Only a connection that has ended refuses (the host checks the limits first):
                // it goes back to the host, which fails the message with the others, in order.
                tcp.counters.postsRefused &+= 1
                return
            }
            tcp.counters.messagesPosted &+= 1
            tcp.schedule.markReady(slot)
        case .windowOpened(let host):
            guard let slot = tcp.byHost[host] else { return }
            tcp.slots[Int(slot)]?.connection.applicationRead()
            tcp.schedule.markReady(slot)
        case .upload(let host):
            guard let slot = tcp.byHost[host] else { return }
            uploadTCP(slot: slot, reason: .requested, now: now)
        case .nextHop(let host, let mac):
            guard let slot = tcp.byHost[host] else { return }
            tcp.slots[Int(slot)]?.headers.destinationMAC = mac
        case .pathMTU(let host, let mtu, let sequence):
            guard let slot = tcp.byHost[host], let connection = tcp.slots[Int(slot)]?.connection,
                  sequence.map({ connection.pathMTUDecreased(to: mtu, quotedSequence: SequenceNumber($0)) })
                    ?? connection.linkMTUDecreased(to: mtu) else { return }
            tcp.schedule.markReady(slot)
        case .close(let host):
            guard let slot = tcp.byHost[host], let connection = tcp.slots[Int(slot)]?.connection else { return }
            tcp.slots[Int(slot)]!.closing = true
            if connection.unacknowledgedBytes == 0 {
                uploadTCP(slot: slot, reason: .closing, now: now)
            } else {
                tcp.schedule.markReady(slot)
            }
        }
    }

    /// Hands a connection back to the host: its entry delivers to the host again, and the
    /// event (with the connection and its untaken completions) goes ahead of every later
    /// segment of the flow. False when the slot held no connection.
    @discardableResult
    func uploadTCP(slot: UInt32, reason: TCPUploadReason, now: Instant) -> Bool {
        guard let s = tcp.release(slot) else { return false }
        // The host's own path sends one MSS a segment.
        s.connection.largestSegmentPayload = 0
        _ = table.insert(s.key, action: .deliver(connection: s.host & ~FlowEntry.offloadedBit), now: now,
                         doNotUse: false)
        tcp.counters.uploads[reason] &+= 1
        tcp.emit(.uploaded(host: s.host, s.connection, reason))
        return true
    }

    /// Entries that idled out while their connections are still offloaded are put back:
    /// the connections' segments must keep reaching them. (Collected during the expiry scan,
    /// put back after it: the table cannot be changed inside its own scan.)
    func restoreOffloadedEntries(_ expired: inout [(key: FlowKey, slot: UInt32)], now: Instant) {
        for (key, slot) in expired where tcp.slots[Int(slot)]?.key == key {
            _ = table.insert(key, action: .offloadedTCP(slot: slot), now: now)
        }
        expired.removeAll(keepingCapacity: true)
    }
}
