#if canImport(Glibc)
import Glibc
#endif
import OffloadCore
import OffloadEngine
import OffloadWire

/// The software side of seed 000: takes packets from the engine's exception queue in
/// arrival order, builds the entry for a new flow (its policy decides the action), processes
/// each packet completely or partially (B6), and re-inserts it. Packets addressed to the
/// software itself (ARP, ICMP echo) are answered by the policy; packets that cannot be
/// delivered are answered with ICMP errors; packets whose next hop is being resolved are
/// held, in order, until it is.
public final class SlowPath {
    /// B6: who finishes a forwarded packet. Both give byte-identical frames.
    public enum Processing: Sendable {
        /// The software rewrites headers, TTL and checksums; the engine only transmits.
        case complete
        /// The software decides; the engine completes the packet with the entry's action.
        case partial
    }

    public let processing: Processing
    public let policy: any SlowPathPolicy
    private let exceptions: SPSCRing<ExceptionItem>
    private let queue: ReinsertionQueue
    /// Actions decided lately, so later packets of a flow are processed like its first.
    private let actions: FlowActionCache
    /// Flows with held packets: how many, and the hop they wait for. Such a flow's later
    /// packets are held behind them.
    private var heldFlows: [FlowKey: (count: Int, hop: NextHop)] = [:]
    private var held: HeldPackets
    /// Frames the software makes itself (ARP requests) come from its own memory.
    private let ownPool: BufferPool
    public private(set) var processed: UInt64 = 0
    /// Packets the software dropped, by reason (each still goes back to the engine to be
    /// counted out of its flow).
    public private(set) var dropped: [String: UInt64] = [:]
    public private(set) var icmpErrorsSent: UInt64 = 0
    public private(set) var answered: UInt64 = 0
    public private(set) var originated: UInt64 = 0
    /// Packets sent on as fragments (each fragment is also one `originated`).
    public private(set) var fragmented: UInt64 = 0
    private var fragmentBuffers: BufferPool?
    /// The smallest and largest port MTU when `fragmentBuffers` was made.
    private var fragmentBuffersMTUs = (smallest: 0, largest: 0)
    /// The first bytes of a packet the policy answers, as it came (see `answerLocally`):
    /// what "fragmentation needed" quotes.
    private let asReceived: UnsafeMutableRawBufferPointer
    /// A model knob: time the software thread spends on each new flow's decision, as a slower
    /// host or a large rule set would (0 by default). Only for a slow path on its own thread.
    public var decisionDelayMicroseconds: UInt32 = 0

    /// `ownFrames`: the software's own buffers for the frames it makes (a gateway's ARP
    /// requests are small; a host's TCP segments are full frames). `cacheSeed` keys the hash
    /// of the decided actions' cache: draw it at random on real links, as the table's.
    public init(exceptions: SPSCRing<ExceptionItem>, reinsertion: ReinsertionQueue, processing: Processing,
                policy: any SlowPathPolicy, heldCapacity: Int = 256, ownFrames: (count: Int, size: Int) = (64, 256),
                cacheSeed: UInt64 = 0x6163_7469_6f6e_7321) {
        actions = FlowActionCache(buckets: 8 * exceptions.capacity, seed: cacheSeed)
        self.exceptions = exceptions
        self.queue = reinsertion
        self.processing = processing
        self.policy = policy
        held = HeldPackets(capacity: heldCapacity)
        ownPool = BufferPool(count: ownFrames.count, bufferSize: ownFrames.size, headroom: 0)
        asReceived = .allocate(byteCount: EthernetFrame.headerLength + 576, alignment: 16)
        if reinsertion.translationNotices != nil { policy.translationsWillBeAnnounced() }
    }

    /// Where a UDP super-datagram's datagrams are made one at a time before they are cut
    /// into fragments (`sendDatagramsInFragments`), made at the first.
    private var datagramScratch: UnsafeMutableRawBufferPointer?

    deinit {
        asReceived.deallocate()
        datagramScratch?.deallocate()
    }

    /// Frames the software can originate now: room in the queue (beyond what a packet in
    /// hand may need) and buffers of its own (taking back those the engine has sent).
    private func originateRoom() -> Int {
        if ownPool.available < ownPool.count / 2 { _ = ownPool.reclaim() }
        return max(0, min(queue.room - SlowPath.messagesPerPacket, ownPool.available))
    }

    /// A slow path whose policy is a function from a flow to its action (nil drops the flow).
    public convenience init(exceptions: SPSCRing<ExceptionItem>, reinsertion: ReinsertionQueue, processing: Processing,
                            policy: @escaping (FlowKey) -> FlowAction?) {
        self.init(exceptions: exceptions, reinsertion: reinsertion, processing: processing,
                  policy: FunctionPolicy(policy))
    }

    /// Packets held until their next hop is resolved.
    public var heldCount: Int { held.count }

    /// Whether the engine has handed over packets (or translation notices) not yet taken.
    public var hasWork: Bool { exceptions.count > 0 || (queue.translationNotices?.count ?? 0) > 0 }

    /// How many packets ahead of the one in hand the action cache's bucket is prefetched.
    static let prefetchDistance = 2

    /// The most a packet may send: the entries of its flow and of the flow's replies, and itself.
    static let messagesPerPacket = 3

    /// Handles up to `max` packets: first the held ones whose next hop has been resolved (or
    /// has failed), then new ones from the engine. Returns how many (0 when there was nothing
    /// to do or the re-insertion queue is full). A packet is taken only when the queue has
    /// room for what it may send (`messagesPerPacket`), so nothing is ever held back or lost
    /// between the two.
    @discardableResult
    public func step(max: Int = 32) -> Int {
        // Read before any install is sent: the engine sizes the notices' ring on that.
        if let notices = queue.translationNotices {
            _ = notices.pop(max: notices.capacity) { policy.noteTranslation($0) }
        }
        let room = originateRoom()
        withOriginate { policy.poll(send: $0, room: room) }
        var done = releaseHeld(max: max)
        while done < max, queue.room >= SlowPath.messagesPerPacket, let item = exceptions.pop() {
            // A flow the table missed is decided when its turn comes, and its action cached:
            // the bucket of a flow a few packets on is loaded meanwhile. (The ring's oldest
            // is now the packet after this one.)
            exceptions.peek(at: SlowPath.prefetchDistance - 1) { next in
                if let key = next.key { actions.prefetch(key) }
            }
            handle(item, released: false)
            done += 1
        }
        // An ARP reply taken here may have resolved the hop that held packets wait for: they
        // leave in this step. The next one may be 10 ms away, when the engine's thread ran
        // this step because the software's thread sleeps. Later packets of their flows taken
        // in this step are held behind them.
        done += releaseHeld(max: max - done)
        return done
    }

    /// Sends on, in order, the held packets whose next hop is no longer pending (or answers
    /// them as unreachable if it failed); up to `max`. Returns how many.
    private func releaseHeld(max: Int) -> Int {
        guard held.count > 0 else { return 0 }
        var done = 0
        held.release(where: { policy.resolution(of: $0) != .pending },
                     while: { done < max && queue.room >= SlowPath.messagesPerPacket }) { item, hop in
            let key = item.key!
            if let flow = heldFlows[key] { heldFlows[key] = flow.count > 1 ? (flow.count - 1, hop) : nil }
            if policy.resolution(of: hop) == .failed {
                reject(item, code: ICMPv4Packet.UnreachableCode.host, reason: "unresolved")
            } else {
                handle(item, released: true)
            }
            done += 1
        }
        return done
    }

    private func send(_ message: consuming SoftwareMessage) {
        // Room was checked before the packet was taken; only this thread adds.
        queue.send(message)
    }

    /// Runs a policy call with `originate` as its `send`: a closure that refers to the slow
    /// path without retaining it (it cannot outlive the call). Handing over the method
    /// itself would retain and release the slow path around every call, for every new flow.
    private func withOriginate<R>(_ body: (Originate) -> R) -> R {
        body { [unowned(unsafe) self] in self.originate(port: $0, fill: $1) }
    }

    /// Sends a frame of the software's own, if there is room and memory for it (an ARP
    /// request that finds neither is sent again by the policy's retry).
    private func originate(port: UInt16, from pool: BufferPool? = nil, fill: (UnsafeMutableRawBufferPointer) -> Int) {
        guard queue.room >= 3, var buffer = (pool ?? ownPool).take() else {
            dropped["no-room-to-originate", default: 0] += 1
            return
        }
        let length = fill(buffer.writableSpace)
        guard length > 0, (try? buffer.setCount(length)) != nil else {
            dropped["originate-too-large", default: 0] += 1
            return
        }
        // The engine transmits it on its thread; the buffer comes back here through the pool's side list.
        buffer.isAway = true
        originated &+= 1
        send(.originate(buffer, port: port))
    }

    private func handle(_ item: consuming ExceptionItem, released: Bool) {
        processed &+= 1
        let reason = item.reason
        guard let key = item.key else {
            return answerLocally(item)
        }
        switch reason {
        case .miss, .doNotUse, .tableFull, .tooBig:
            break
        case .localDelivery:
            return answerLocally(item)
        case .timeToLiveExceeded:
            return timeExceeded(item)
        case .notAFlow:
            return reinsertDrop(item, "not-a-flow")
        }
        if !released, let flow = heldFlows[key] {
            return hold(item, hop: flow.hop)
        }
        let action: FlowAction
        var decidedNow = false
        // A flow the table had no room for is decided again for each packet: the policy
        // sees that it is still in use (a NAT keeps its mapping).
        if reason == .doNotUse || reason == .tooBig, let known = actions[key] {
            action = known
        } else {
            decidedNow = true
            // A miss is a new entry: the policy decides afresh (it may have changed). The
            // cache only serves the flow's later packets that reach the software meanwhile.
            if decisionDelayMicroseconds > 0 { usleep(decisionDelayMicroseconds) }
            switch withOriginate({ policy.decide(key, send: $0) }) {
            case .install(var decided):
                // B8: a UDP flow whose first packet is RTP gets its statistics kept by the engine.
                if key.protocol == 17, case .forward(var forward) = decided, SlowPath.carriesRTP(item.buffer.bytes) {
                    forward.carriesRTP = true
                    decided = .forward(forward)
                }
                action = decided
            case .wait(let hop):
                guard !released else { return reinsertDrop(item, "unresolved") }
                return hold(item, hop: hop)
            case .local:
                return answerLocally(item)
            case .unreachable(let code, let why, let transient):
                if transient {
                    // No drop entry, which the flow's retries would keep alive for good: its
                    // next packet is decided again (not served an action cached earlier).
                    actions.forget(key)
                } else {
                    dropFlow(key, reason: reason)
                }
                return reject(item, code: code, reason: why)
            case .drop(let why):
                dropFlow(key, reason: reason)
                return reinsertDrop(item, why)
            }
            actions.record(action, for: key)
        }
        // The packet the action was decided for (the flow's first) carries it to the
        // engine's entry, ahead of itself.
        if decidedNow, reason != .tableFull {
            send(.install(key, action))
            if reason == .miss, case .forward(let forward) = action,
               let (replyKey, replyAction) = withOriginate({ policy.replyFlow(of: key, forward: forward, send: $0) }) {
                send(.install(replyKey, replyAction))
            }
        }
        process(item, key: key, action)
    }

    /// A flow refused for good: its entry in the engine drops its later packets, and its
    /// cached action those already on their way to the software.
    private func dropFlow(_ key: FlowKey, reason: ExceptionReason) {
        actions.record(.drop, for: key)
        if reason != .tableFull { send(.install(key, .drop)) }
    }

    /// Has the engine make every entry stale and forgets the actions decided so far: each
    /// flow's next packet is decided again, and installs its entry again, in its order.
    private func invalidateAll() {
        actions.removeAll()
        send(.invalidateAll)
    }

    /// Holds a packet, behind the held packets of its flow, until `hop` is resolved.
    private func hold(_ item: consuming ExceptionItem, hop: NextHop) {
        let key = item.key!
        guard !held.isFull else { return reinsertDrop(item, "resolution-queue-full") }
        heldFlows[key, default: (0, hop)].count += 1
        held.append(item, waitingFor: hop)
    }

    private func process(_ item: consuming ExceptionItem, key: FlowKey, _ action: FlowAction) {
        let forward: FlowAction.Forward
        switch action {
        case .forward(let f): forward = f
        case .deliver, .offloadedTCP: return answerLocally(item)
        case .drop, .toSoftware: return reinsertDrop(item, "policy")
        }
        let frame = item.buffer.bytes
        if frame.count > 22, frame[12] == 0x08, frame[13] == 0x00, frame[22] <= 1 {
            // RFC 1812: a packet whose TTL would reach 0 is not forwarded.
            return timeExceeded(item)
        }
        if let mtu = exceededMTU(&item.buffer, port: forward.outputPort) {
            return tooBig(item, key: key, forward, mtu: mtu)
        }
        let origin = Origin(item)
        if processing == .partial, origin.countedFlow != nil {
            return send(origin.reinsertion(item.buffer, .complete))
        }
        guard SlowPath.rewrite(item.buffer.mutableBytes, forward, key: key,
                               partialL4: item.buffer.offload.hasPartialChecksum) else {
            return reinsertDrop(item, "not-rewritable")
        }
        send(origin.reinsertion(item.buffer, .transmit(port: forward.outputPort)))
    }

    /// A packet larger than its output port's MTU (RFC 1812 §4.2.2.7 and §5.2.6), which the
    /// entry for `key` forwards: with DF set, answered with "fragmentation needed" and the
    /// next hop's MTU (RFC 1191), which is how its sender learns the path's MTU; without,
    /// rewritten as any packet of the flow and sent on in fragments.
    private func tooBig(_ item: consuming ExceptionItem, key: FlowKey, _ forward: FlowAction.Forward, mtu: Int) {
        if item.buffer.bytes[20] & 0x40 != 0 { return fragmentationNeeded(item, mtu: mtu) }
        if case .udpSegmentation(let size, _, _, _) = item.buffer.offload {
            return sendDatagramsInFragments(item, key: key, forward, segmentSize: Int(size), mtu: mtu)
        }
        // A TCP super-frame comes with DF set from the stacks that make them (Linux's TCP
        // always): one without is dropped by name rather than segmented here.
        if item.buffer.offload.isSuperFrame { return reinsertDrop(item, "too-big-super-frame") }
        // Fragments carry a whole transport checksum.
        if let (start, offset) = item.buffer.offload.partialChecksumLocation {
            OffloadMetadata.finishChecksum(in: item.buffer.mutableBytes, start: start, offset: offset)
            item.buffer.offload = .none
        }
        guard SlowPath.rewrite(item.buffer.mutableBytes, forward, key: key, partialL4: false) else {
            return reinsertDrop(item, "not-rewritable")
        }
        sendFragments(item, port: forward.outputPort, mtu: mtu)
    }

    /// A UDP super-datagram whose datagrams do not fit the next hop, DF clear (Linux clears
    /// it on a super-datagram longer than the MTU unless the socket asks for path MTU
    /// discovery): cut into its datagrams, each rewritten as any packet of the flow and sent
    /// on in fragments, as Linux's own forwarding does. Every piece leaves as a frame of the
    /// software's own but the last, written over the packet itself, which goes back with the
    /// flow's count: the flow's later packets follow them all. All go, or none.
    private func sendDatagramsInFragments(_ item: consuming ExceptionItem, key: FlowKey, _ forward: FlowAction.Forward,
                                          segmentSize: Int, mtu: Int) {
        guard !queue.audit.isOn else { return reinsertDrop(item, "fragmenting-under-audit") }
        guard let datagrams = UDPSegmentation(frame: item.buffer.bytes, segmentSize: segmentSize) else {
            return reinsertDrop(item, "not-segmentable")
        }
        let scratch = datagramScratch ?? .allocate(byteCount: EthernetFrame.headerLength + 65_535, alignment: 16)
        datagramScratch = scratch
        // Datagram `i`, made and rewritten in the scratch buffer, and its fragments.
        func datagram(_ i: Int) -> IPv4Fragmentation? {
            let length = datagrams.write(i, into: scratch)
            let frame = UnsafeMutableRawBufferPointer(rebasing: scratch[..<length])
            guard length > 0, SlowPath.rewrite(frame, forward, key: key, partialL4: false) else { return nil }
            return IPv4Fragmentation(frame: UnsafeRawBufferPointer(frame), mtu: mtu)
        }
        var pieces = 0
        for i in 0..<datagrams.count {
            guard let fragments = datagram(i) else { return reinsertDrop(item, "not-fragmentable") }
            pieces += fragments.pieces.count
        }
        guard let pool = fragmentPool(for: mtu) else { return reinsertDrop(item, "no-room-to-fragment") }
        if pool.available < pieces { _ = pool.reclaim() }
        guard pieces - 1 <= min(queue.room - SlowPath.messagesPerPacket, pool.available) else {
            return reinsertDrop(item, "no-room-to-fragment")
        }
        var last = 0
        for i in 0..<datagrams.count {
            let fragments = datagram(i)!
            for piece in fragments.pieces.indices {
                if i == datagrams.count - 1, piece == fragments.pieces.count - 1 {
                    last = fragments.write(piece, into: item.buffer.mutableBytes)
                } else {
                    originate(port: forward.outputPort, from: pool) { fragments.write(piece, into: $0) }
                }
            }
        }
        guard last > 0, (try? item.buffer.setCount(last)) != nil else { return reinsertDrop(item, "not-fragmentable") }
        item.buffer.offload = .none
        fragmented &+= 1
        let origin = Origin(item)
        send(origin.reinsertion(item.buffer, .transmit(port: forward.outputPort)))
    }

    private func fragmentationNeeded(_ item: consuming ExceptionItem, mtu: Int) {
        sendICMPError(item, type: ICMPv4Packet.MessageType.destinationUnreachable, code: 4,
                      reason: "fragmentation-needed", nextHopMTU: UInt16(clamping: mtu))
    }

    /// Sends the packet in hand (whole, rewritten for its next hop) as RFC 791 fragments:
    /// the later ones as frames of the software's own, then the first, made in the packet's
    /// own buffer, which goes back with the count. The flow's later packets follow them, and
    /// the engine sees the first fragment's transport header as it sees any packet's it
    /// sends (a TCP FIN or RST ends the entry; RTP is counted).
    private func sendFragments(_ item: consuming ExceptionItem, port: UInt16, mtu: Int) {
        // B7's test refuses fragments: in audit mode each would be dropped at the queue's
        // entrance, after the packet was counted as sent on. It is dropped here, by name.
        guard !queue.audit.isOn else { return reinsertDrop(item, "fragmenting-under-audit") }
        guard let fragments = IPv4Fragmentation(frame: item.buffer.bytes, mtu: mtu) else {
            return reinsertDrop(item, "not-fragmentable")
        }
        guard let pool = fragmentPool(for: mtu) else { return reinsertDrop(item, "no-room-to-fragment") }
        if pool.available < fragments.pieces.count { _ = pool.reclaim() }
        guard fragments.pieces.count - 1 <= min(queue.room - SlowPath.messagesPerPacket, pool.available) else {
            return reinsertDrop(item, "no-room-to-fragment")
        }
        for i in fragments.pieces.indices.dropFirst() {
            originate(port: port, from: pool) { fragments.write(i, into: $0) }
        }
        // The first fragment is the packet's own start: written over it, in place.
        let first = fragments.write(0, into: item.buffer.mutableBytes)
        guard first > 0, (try? item.buffer.setCount(first)) != nil else { return reinsertDrop(item, "not-fragmentable") }
        fragmented &+= 1
        let origin = Origin(item)
        send(origin.reinsertion(item.buffer, .transmit(port: port)))
    }

    /// The MTU of `port` when the packet in `buffer` does not fit it (nil: it fits, or the
    /// port is unknown). Bytes after the IP packet are cut off first: they are not the
    /// packet's, and would make it look too big.
    private func exceededMTU(_ buffer: inout PacketBuffer, port: UInt16) -> Int? {
        guard Int(port) < queue.portMTU.count else { return nil }
        let mtu = queue.portMTU[Int(port)]
        if buffer.offload.fits(buffer.bytes, mtu: mtu) { return nil }
        let frame = buffer.bytes
        let total = Int(frame[16]) << 8 | Int(frame[17])
        guard total >= IPv4Packet.minimumHeaderLength, EthernetFrame.headerLength + total < frame.count,
              (try? buffer.setCount(EthernetFrame.headerLength + total)) != nil else { return mtu }
        return buffer.offload.fits(buffer.bytes, mtu: mtu) ? nil : mtu
    }

    /// Buffers for fragments, made at the first packet that needs them, and again after a
    /// port's MTU changed: as large as the largest MTU of the engine's ports, and as many as
    /// the largest packet makes into the smallest (each piece at least 8 bytes less than the
    /// MTU, for IP options; at most 1024). Nil while buffers of the old pool are still out
    /// (the engine returns them as it sends them).
    private func fragmentPool(for mtu: Int) -> BufferPool? {
        // The MTU the packet is cut for counts too: the engine may have stored another since.
        let mtus = (smallest: min(queue.portMTU.smallest, mtu), largest: max(queue.portMTU.largest, mtu))
        if let pool = fragmentBuffers {
            if mtus == fragmentBuffersMTUs { return pool }
            _ = pool.reclaim()
            guard pool.inUse == 0 else { return nil }
        }
        let size = EthernetFrame.headerLength + min(mtus.largest, 65_535)
        let piece = max(8, (mtus.smallest - 60) & ~7)
        let pool = BufferPool(count: min(1024, (65_535 + piece - 1) / piece), bufferSize: size, headroom: 0)
        fragmentBuffers = pool
        fragmentBuffersMTUs = mtus
        return pool
    }

    // MARK: Answers and errors

    private func answerLocally(_ item: consuming ExceptionItem) {
        // The software reads frames whole: a checksum the device left partial is finished.
        if let (start, offset) = item.buffer.offload.partialChecksumLocation {
            OffloadMetadata.finishChecksum(in: item.buffer.mutableBytes, start: start, offset: offset)
            item.buffer.offload = .none
        }
        let frame = item.buffer.mutableBytes, ingressPort = item.ingressPort
        // The policy translates what it forwards in place (NAT of ICMP queries, fragments):
        // a packet that may be too big for where it goes is kept as it came, for the quote of
        // "fragmentation needed" to its sender.
        // (A frame within the smallest MTU fits any port.)
        let mayBeTooBig = frame.count - EthernetFrame.headerLength > queue.portMTU.smallest
        let kept = min(frame.count, asReceived.count)
        if mayBeTooBig { asReceived.copyMemory(from: UnsafeRawBufferPointer(rebasing: frame[..<kept])) }
        let answer = withOriginate { policy.answer(frame, ingressPort: ingressPort, send: $0) }
        // Asked here, where an ARP packet may have moved a neighbour, so the packets after it
        // already use the new address (and the packet in hand left room for the message).
        if policy.takeNeighborChange() { invalidateAll() }
        switch answer {
        case .send(let port):
            answered &+= 1
            item.buffer.offload = .none
            if mayBeTooBig, let mtu = exceededMTU(&item.buffer, port: port) {
                guard item.buffer.bytes[20] & 0x40 != 0 else { return sendFragments(item, port: port, mtu: mtu) }
                item.buffer.mutableBytes.copyMemory(from: UnsafeRawBufferPointer(rebasing: asReceived[..<kept]))
                return fragmentationNeeded(item, mtu: mtu)
            }
            let origin = Origin(item)
            send(origin.reinsertion(item.buffer, .transmit(port: port)))
        case .consumed:
            answered &+= 1
            let origin = Origin(item)
            send(origin.reinsertion(item.buffer, .consumed))
        case .drop(let reason):
            reinsertDrop(item, reason)
        case .timeExceeded:
            timeExceeded(item)
        case .toEngine:
            // Only a packet that holds its flow's count can be completed by the engine.
            guard item.countedFlow != nil else { return reinsertDrop(item, "no-entry-to-complete") }
            let origin = Origin(item)
            send(origin.reinsertion(item.buffer, .complete))
        }
    }

    private func timeExceeded(_ item: consuming ExceptionItem) {
        sendICMPError(item, type: ICMPv4Packet.MessageType.timeExceeded, code: 0, reason: "ttl-exceeded")
    }

    private func reject(_ item: consuming ExceptionItem, code: UInt8, reason: String) {
        sendICMPError(item, type: ICMPv4Packet.MessageType.destinationUnreachable, code: code, reason: reason)
    }

    /// Turns the packet into an ICMP error back to its sender (the packet itself is dropped,
    /// under `reason`), or just drops it where no error may be sent.
    private func sendICMPError(_ item: consuming ExceptionItem, type: UInt8, code: UInt8, reason: String,
                               nextHopMTU: UInt16 = 0) {
        dropped[reason, default: 0] += 1
        let port = item.ingressPort
        guard let interface = policy.icmpErrorSource(port: port),
              ICMPErrorFrame.rewrite(&item.buffer, type: type, code: code, nextHopMTU: nextHopMTU, from: interface) else {
            let origin = Origin(item)
            return send(origin.reinsertion(item.buffer, .drop))
        }
        icmpErrorsSent &+= 1
        let origin = Origin(item)
        send(origin.reinsertion(item.buffer, .transmit(port: port)))
    }

    /// What a re-inserted packet carries back from its exception item.
    struct Origin {
        let countedFlow: FlowKey?
        let mark: AuditMark?
        let ingressPort: UInt16

        init(_ item: borrowing ExceptionItem) {
            countedFlow = item.countedFlow
            mark = item.mark
            ingressPort = item.ingressPort
        }

        func reinsertion(_ buffer: consuming PacketBuffer, _ verdict: Reinsertion.Verdict) -> SoftwareMessage {
            .reinsert(Reinsertion(buffer: buffer, verdict: verdict, countedFlow: countedFlow, mark: mark,
                                  ingressPort: ingressPort))
        }
    }

    private func reinsertDrop(_ item: consuming ExceptionItem, _ reason: String) {
        dropped[reason, default: 0] += 1
        let origin = Origin(item)
        send(origin.reinsertion(item.buffer, .drop))
    }

    // MARK: Frames

    /// Whether the payload of an Ethernet + IPv4 + UDP frame whose flow key the engine read
    /// (so IPv4 with its whole header, and no fragment) looks like RTP. The UDP header follows
    /// the IPv4 header; its length field bounds the payload (a short frame may be padded).
    /// Offsets, as the engine's RTP statistics read them, rather than the checking parsers:
    /// this runs for every new UDP flow.
    static func carriesRTP(_ frame: UnsafeRawBufferPointer) -> Bool {
        guard frame.count > 14 else { return false }
        let udp = 14 + Int(frame[14] & 0x0f) * 4
        guard frame.count >= udp + 8 else { return false }
        let length = Int(frame[udp + 4]) << 8 | Int(frame[udp + 5])
        guard length >= 8, udp + length <= frame.count else { return false }
        return RTPFlowStatistics.looksLikeRTP(UnsafeRawBufferPointer(rebasing: frame[(udp + 8)..<(udp + length)]))
    }

    /// Complete processing in software: MACs, NAT addresses and ports, TTL, and the
    /// checksums, by the rewrite the engine's entry for `key` applies (`FlowEntry`), so the
    /// two processing splits give the same bytes for every frame (B6). That includes frames
    /// whose checksums were already wrong: updated incrementally (RFC 1624), they stay wrong
    /// and the receiver drops them. Recomputed from scratch, as they were, they left with
    /// valid checksums over damaged bytes. False when TTL would reach 0, or when the frame
    /// is not one the rewrite applies to.
    static func rewrite(_ frame: UnsafeMutableRawBufferPointer, _ forward: FlowAction.Forward, key: FlowKey,
                        partialL4: Bool) -> Bool {
        FlowEntry(key: key, action: .forward(forward)).applyRewrite(to: frame, partialL4: partialL4) == .rewritten
    }
}
