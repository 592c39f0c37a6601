import OffloadCore
import OffloadLink
import Synchronization

/// The circuitry of seed 000: bursts into the engine's own buffer pool (whose `inUse` is the
/// buffered-packet counter), a connection-table lookup per packet, the fast path for flows
/// with a usable entry, and the exception queue to the software for the rest. Packets come
/// back through the re-insertion queue; each entry counts its packets in the software and
/// keeps its do-not-use flag until that count is zero (the total count signal), so a flow
/// never overtakes itself across the slow-to-fast handoff (B1 to B6).
///
/// The engine talks to the software only through the two rings. It runs one `poll` at a
/// time on one thread; the software may run on the same thread (simulation) or another.
public final class Engine<Port: Link & ~Copyable> {
    public struct Configuration: Sendable {
        public var burstSize = 32
        /// B5: keep do-not-use set until every earlier packet of the flow has cycled out of
        /// the software. Off, the flag clears as soon as the software installs the action,
        /// and the reordering this prevents becomes visible.
        public var orderGuard = true
        public var tableCapacity = 65_536
        public var bufferCount = 4096
        /// Bytes per buffer, `headroom` included.
        public var bufferSize = 2048
        public var queueCapacity = 1024
        /// Audit mode (B7), switchable at run time; shared with the host's audit stage.
        public var audit = AuditSwitch()
        /// Seeds the unpredictable part of audit marks.
        public var markSeed: UInt64 = 0x6d61_726b
        /// Keys the connection table's hash. The fixed defaults of this and the other seeds
        /// keep simulations reproducible; on real links use `randomizingSecrets()`, or a
        /// sender who knows the key can aim new flows at one probe chain.
        public var tableHashSeed: UInt64 = 0x6f66_666c_6f61_6421
        /// How long an entry may sit unused before it is removed (B9).
        public var idleTimeouts = IdleTimeouts()
        /// The idle sweep examines the whole table once per `expirySweep`, a slice at each
        /// poll in proportion to the time since the last, and at most `expiryBudget` slots in
        /// one poll: bounded work, never a stall. An entry goes at most a sweep after its timeout.
        public var expiryBudget = 64
        public var expirySweep = Duration.seconds(1)
        /// B10: per-source fairness of new flows in the exception queue (nil turns it off).
        /// The queue's bound keeps a flood of new flows off the fast path; this keeps one
        /// source's flood from taking the whole queue and starving other sources' new flows.
        public var sourceFairness: SourceFairness? = SourceFairness()
        /// TCP connections the engine can run at once (seed 003).
        public var tcpOffloadSlots = 4096
        /// Room for the engine's TCP events to the host (completions, uploads).
        public var tcpEventCapacity = 8192
        /// Segments the offloaded connections may send per poll, in all.
        public var tcpPollBudget = 64
        /// Announce translating entries as they come and go (`translationNotices`), for a
        /// NAT in the software to know when a mapping is no longer used. The slow path on
        /// `reinsertion` reads them and tells its policy they come.
        public var announcesTranslations = false

        public init() {}

        /// This configuration with every seed a sender could exploit drawn from the system's
        /// random source: the table's hash key, the audit marks', and source fairness's
        /// bucket key (a sender who knew it could crowd another source's bucket).
        public func randomizingSecrets() -> Configuration {
            var c = self
            c.tableHashSeed = .random(in: .min ... .max)
            c.markSeed = .random(in: .min ... .max)
            c.sourceFairness?.seed = .random(in: .min ... .max)
            return c
        }
    }

    public let configuration: Configuration
    public let pool: BufferPool
    public internal(set) var table: ConnectionTable
    /// Packets for the software, in arrival order (engine to software).
    public let exceptions: SPSCRing<ExceptionItem>
    /// The software's way back, through the audit stage (software to engine).
    public let reinsertion: ReinsertionQueue
    /// Translating entries that came and went, in order (engine to software); nil unless
    /// `announcesTranslations`. Eight times the message ring, so that it never refuses: the
    /// software reads it before each step, so between two reads the engine processes at
    /// most the message ring's installs and one step's more, each taking two notices at
    /// most, and expiry and teardown take at most a quarter of the ring.
    public let translationNotices: SPSCRing<TranslationNotice>?
    private let messages: SPSCRing<SoftwareMessage>
    public internal(set) var counters = EngineCounters()
    /// RFC 3550 statistics of the flows whose entries carry RTP (B8), by flow; dropped with
    /// the entry when it idles out.
    public private(set) var rtpStatistics: [FlowKey: RTPFlowStatistics] = [:]
    let ports: UnsafeMutablePointer<Port>
    /// Per port: whether it takes frames whose TCP checksum the device finishes, and TCP
    /// super-segments it cuts up itself (TSO).
    let portTakesPartialChecksums: [Bool]
    let portSegmentsTCP: [Bool]
    /// Per port: the largest IPv4 packet it sends as one frame, shared with the software
    /// (`reinsertion.portMTU`), and refreshed each second (`refreshPortMTUs`).
    public var portMTUs: PortMTUs { reinsertion.portMTU }
    /// `portMTUs`' memory (kept by `reinsertion`): the fast path reads it with no bounds
    /// check or reference count.
    private let portMTU: UnsafeMutablePointer<Atomic<Int>>
    /// When the ports' MTUs are next asked for.
    private var nextMTURefresh = Instant.zero
    private var expiryPacer: ExpiryPacer
    /// The offloaded TCP connections (seed 003), and their events to the host.
    public let tcp: TCPOffloadTable
    /// Offloaded connections' entries (and their slots) that idled out in this poll's expiry scan.
    var expiredOffloaded: [(key: FlowKey, slot: UInt32)] = []
    public let portCount: Int
    private var marks: AuditMarkBook
    private let compatibility: CompatibilityTest
    /// B10: new-flow misses in the exception queue per source bucket (nil when off).
    private let fairness: SourceFairnessBook?
    /// One burst at a time: its buffers, their keys and their keys' home slots in the table
    /// (-1 for a packet that is not a flow packet, whose key is not used).
    private let burst: UnsafeMutablePointer<PacketBuffer>
    private let burstKeys: UnsafeMutablePointer<FlowKey>
    private let burstHomes: UnsafeMutablePointer<Int>

    /// - Parameters:
    ///   - clock: for the audit stage's rate-limited log;
    ///   - log: where audit failures are reported (one line per reason per second);
    ///   - makePort: builds port `i` (0 ..< portCount).
    public init(configuration: Configuration, portCount: Int, clock: any Clock,
                log: @escaping (String) -> Void = { print($0) }, makePort: (Int) throws -> Port) rethrows {
        // The ports first: when one cannot be made, those made before it close again (a TAP
        // device goes with its descriptor), and nothing else was allocated yet.
        let ports = UnsafeMutablePointer<Port>.allocate(capacity: portCount)
        for i in 0..<portCount {
            do {
                (ports + i).initialize(to: try makePort(i))
            } catch {
                ports.deinitialize(count: i)
                ports.deallocate()
                throw error
            }
        }
        self.ports = ports
        self.configuration = configuration
        pool = BufferPool(count: configuration.bufferCount, bufferSize: configuration.bufferSize,
                          headroom: Self.headroom)
        exceptions = SPSCRing(capacity: configuration.queueCapacity)
        messages = SPSCRing(capacity: configuration.queueCapacity)
        let notices = configuration.announcesTranslations
            ? SPSCRing<TranslationNotice>(capacity: 8 * messages.capacity) : nil
        translationNotices = notices
        table = ConnectionTable(capacity: configuration.tableCapacity, hashSeed: configuration.tableHashSeed,
                                translationNotices: notices)
        expiryPacer = ExpiryPacer(sweep: configuration.expirySweep, slotCount: table.slotCount, now: clock.now)
        let mtus = PortMTUs((0..<portCount).map { ports[$0].capabilities.mtu })
        reinsertion = ReinsertionQueue(ring: messages, audit: configuration.audit, portMTU: mtus, clock: clock,
                                       translationNotices: notices, log: log)
        marks = AuditMarkBook(capacity: 4 * configuration.queueCapacity, seed: configuration.markSeed)
        compatibility = CompatibilityTest()
        let queueCapacity = exceptions.capacity
        fairness = configuration.sourceFairness.map { SourceFairnessBook($0, queueCapacity: queueCapacity) }
        burst = .allocate(capacity: configuration.burstSize)
        burstKeys = .allocate(capacity: configuration.burstSize)
        burstHomes = .allocate(capacity: configuration.burstSize)
        tcp = TCPOffloadTable(capacity: configuration.tcpOffloadSlots, eventCapacity: configuration.tcpEventCapacity)
        self.portCount = 0 + portCount
        portTakesPartialChecksums = (0..<portCount).map { ports[$0].capabilities.partialChecksums }
        portSegmentsTCP = (0..<portCount).map { ports[$0].capabilities.tcpSegmentation }
        portMTU = mtus.values
    }

    deinit {
        ports.deinitialize(count: portCount)
        ports.deallocate()
        burst.deallocate()
        burstKeys.deallocate()
        burstHomes.deallocate()
    }

    /// Bytes each buffer keeps free in front of a received frame.
    public static var headroom: Int { 64 }

    /// Packets buffered in the engine's memory right now (0 at rest).
    public var buffered: Int { pool.inUse }

    /// Whether the software has sent messages the engine has not read yet.
    public var hasSoftwareMessages: Bool { messages.count > 0 }

    /// Runs a port's link directly (to read its counters, say).
    public func withPort<R>(_ index: Int, _ body: (inout Port) throws -> R) rethrows -> R {
        try body(&ports[index])
    }

    /// One round of the poll loop: the software's messages first (they free buffers and
    /// clear flags), then a burst from each port. Returns whether anything was done. What
    /// the round transmits may leave together at its end (`Link.beginBatch`).
    @discardableResult
    public func poll(now: Instant) -> Bool {
        for port in 0..<portCount { ports[port].beginBatch() }
        defer { for port in 0..<portCount { ports[port].endBatch() } }
        var work = messages.pop(max: configuration.burstSize) { message in
            handle(message, now: now)
        }
        for port in 0..<portCount { work &+= pollPort(UInt16(port), now: now) }
        work &+= pollOffloadedTCP(now: now)
        let expirySlots = expiryPacer.slotsDue(now: now, budget: configuration.expiryBudget)
        if expirySlots > 0 {
            counters.expired &+= UInt64(table.expireIdle(now: now, timeouts: configuration.idleTimeouts,
                                                         budget: expirySlots) { key, _, action in
                rtpStatistics[key] = nil
                if case .offloadedTCP(let slot) = action { expiredOffloaded.append((key, slot)) }
            })
        }
        if !expiredOffloaded.isEmpty { restoreOffloadedEntries(&expiredOffloaded, now: now) }
        if now >= nextMTURefresh { refreshPortMTUs(now: now) }
        return work > 0
    }

    /// Asks each port for its MTU again (a second after the last time) and stores what
    /// changed: packets from now on are sized for it, on the fast path and in the software.
    @inline(never)
    private func refreshPortMTUs(now: Instant) {
        nextMTURefresh = now + .seconds(1)
        for port in 0..<portCount {
            guard let asked = ports[port].currentMTU() else { continue }
            let mtu = max(68, asked)  // as `LinkCapabilities` keeps it
            guard mtu != portMTUs[port] else { continue }
            portMTUs.store(mtu, port: port)
            counters.mtuChanges &+= 1
        }
    }

    // MARK: Packets from the ports

    /// A burst from one port: receive, key every packet, look the keys up together, then
    /// handle each packet in arrival order.
    ///
    /// Callers in other modules run the unspecialized `poll` (the class is not inlinable),
    /// which would reach the link through its witness table for every frame: the engine's
    /// own port types get a specialized copy, picked by a type check once per burst.
    @_specialize(where Port == MemoryLink)
    @_specialize(where Port == SystemLink)
    private func pollPort(_ port: UInt16, now: Instant) -> Int {
        var n = 0
        let burst = self.burst
        do {
            n = try ports[Int(port)].receive(into: pool, max: configuration.burstSize, burst: burst)
        } catch {
            // A port that cannot be read (a pool too small for its frames, a device gone):
            // counted, and tried again at the next poll.
            counters.receiveErrors &+= 1
        }
        guard n > 0 else { return 0 }
        counters.received &+= UInt64(truncatingIfNeeded: n)
        // Every home slot is prefetched first; each packet probes when it is handled, so the
        // cache misses of the burst overlap with each other and with the work on the packets
        // before it. A probe at handling time also sees every table change made by the
        // packets before it in the burst (a pending entry, a teardown). The arrays are read
        // into locals: a store through one could alias this object, so its fields would be
        // loaded again for every packet.
        let keys = burstKeys, homes = burstHomes
        for i in 0..<n {
            if let key = FlowKey(frame: burst[i].bytes, port: port) {
                keys[i] = key
                homes[i] = table.prefetchHome(of: key)
            } else {
                homes[i] = -1
            }
        }
        for i in 0..<n {
            let home = homes[i]
            handle((burst + i).move(), port: port, key: home < 0 ? nil : keys[i], home: home, now: now)
        }
        return n
    }

    /// One packet of a burst (counted as received with the burst). The fast path's case (a
    /// usable forward entry) is tested here and inlined into the burst loop; every other case
    /// goes to `handleOther`.
    @inline(__always)
    private func handle(_ buffer: consuming PacketBuffer, port: UInt16, key: FlowKey?, home: Int, now: Instant) {
        let h = key.flatMap { table.lookup($0, home: home) }
        if let key, let h {
            let e = table.slot(justFound: h)
            // Usable and forward in one test: do-not-use clear, kind forward, current epoch.
            if e.pointee.control & (FlowEntry.doNotUseBit | FlowEntry.kindMask) == FlowActionKind.forward.rawValue,
               e.pointee.epoch == table.epoch {
                return fastForward(buffer, entry: e, key: key, port: port, now: now)
            }
        }
        handleOther(buffer, port: port, key: key, entry: h, now: now)
    }

    /// A packet that the fast path does not send: `entry` is its key's entry, if any.
    @inline(never)
    private func handleOther(_ buffer: consuming PacketBuffer, port: UInt16, key: FlowKey?, entry: EntryHandle?,
                             now: Instant) {
        guard let key else {
            return toSoftware(buffer, port: port, reason: .notAFlow, counted: nil, key: nil)
        }
        if let h = entry {
            if table.isUsable(h) {
                switch table.kind(h) {
                case .forward:
                    // `handle` sends these itself; here only for completeness.
                    return fastForward(buffer, entry: table.entry(at: h), key: key, port: port, now: now)
                case .drop:
                    table.recordHit(h, bytes: buffer.count, now: now)
                    return drop(.actionDrop)
                case .deliver:
                    let id = table.entry(at: h).pointee.connection
                    if id & FlowEntry.offloadedBit != 0 {
                        return receiveOffloaded(buffer, slot: id & ~FlowEntry.offloadedBit, key: key, entry: h,
                                                port: port, now: now)
                    }
                    // Counted like any packet in the software, so that an offload of the
                    // flow waits for it (do-not-use) and the flow keeps its order; a hit, so
                    // that a busy connection's entry does not idle out.
                    guard exceptions.count < exceptions.capacity else { return drop(.exceptionQueueFull) }
                    table.recordHit(h, bytes: buffer.count, now: now)
                    _ = table.incrementInSoftware(h)
                    return toSoftware(buffer, port: port, reason: .localDelivery, counted: key, key: key)
                case .toSoftware:
                    break
                }
            }
            // Do-not-use (or no action yet): behind the flow's earlier packets.
            guard exceptions.count < exceptions.capacity else { return drop(.exceptionQueueFull) }
            _ = table.incrementInSoftware(h)
            return toSoftware(buffer, port: port, reason: .doNotUse, counted: key, key: key)
        }
        let queued = exceptions.count
        guard queued < exceptions.capacity else { return drop(.exceptionQueueFull) }
        // B10: a new flow goes to the software only while its source's bucket is within its
        // share of the queue (see `SourceFairness`); packets that hold a count never stop here.
        var bucket = SourceFairnessBook.untracked
        if let fairness {
            let b = fairness.settings.bucket(of: key)
            guard fairness.admits(b, queued: queued, capacity: exceptions.capacity) else {
                return drop(.sourceOverShare)
            }
            bucket = UInt16(truncatingIfNeeded: b)
        }
        // B10: a miss never evicts an established entry (a flood of new flows would thrash
        // the table); with the table full the flow stays in the software until room returns.
        guard table.count < table.capacity else {
            return toSoftware(buffer, port: port, reason: .tableFull, counted: nil, key: key, bucket: bucket)
        }
        switch table.insert(key, action: .toSoftware, now: now, doNotUse: true) {
        case .inserted(let h), .replaced(let h), .evicted(_, _, let h):
            _ = table.incrementInSoftware(h)
            toSoftware(buffer, port: port, reason: .miss, counted: key, key: key, bucket: bucket)
        case .full:
            toSoftware(buffer, port: port, reason: .tableFull, counted: nil, key: key, bucket: bucket)
        }
    }

    /// The fast path: `entry` is usable and forwards. Works on the slot itself: one
    /// bounds check (in `handle`), no copy of the entry.
    @inline(__always)
    private func fastForward(_ buffer: consuming PacketBuffer, entry e: UnsafeMutablePointer<FlowEntry>, key: FlowKey,
                             port: UInt16, now: Instant) {
        let out = Int(e.pointee.outputPort)
        if buffer.count &- Self.ethernetHeader > (out < portCount ? portMTU[out].load(ordering: .relaxed) : .max),
           !buffer.offload.fits(buffer.bytes, mtu: portMTU[out].load(ordering: .relaxed)) {
            return tooBig(buffer, entry: e, key: key, port: port, now: now)
        }
        let partialL4 = buffer.offload.hasPartialChecksum
        // The key was read from this frame: it is unfragmented IPv4 with its whole header.
        let frame = buffer.mutableBytes, base = frame.baseAddress.unsafelyUnwrapped
        let headerLength = Int(base.load(fromByteOffset: 14, as: UInt8.self) & 0x0f) &<< 2
        switch e.pointee.applyRewrite(toUnfragmented: base, count: frame.count, headerLength: headerLength,
                                      partialL4: partialL4) {
        case .rewritten:
            table.recordHit(at: e, bytes: buffer.count, now: now)
            if e.pointee.carriesRTP { recordRTP(key, buffer.bytes, offload: buffer.offload, now: now) }
            let flags = key.protocol == 6 ? Self.connectionFlags(buffer.bytes) : 0
            if transmit(buffer, port: e.pointee.outputPort) { counters.fastPath &+= 1 }
            if flags != 0 { connectionChanged(key, flags: flags) }
        case .timeToLiveExceeded:
            toSoftware(buffer, port: port, reason: .timeToLiveExceeded, counted: nil, key: key)
        case .fragment, .notApplicable:
            toSoftware(buffer, port: port, reason: .notAFlow, counted: nil, key: key)
        }
    }

    /// The MTU of the port a re-inserted packet leaves by, where that is known: its verdict's
    /// port, or its entry's when the engine completes it.
    private func egressMTU(_ verdict: Reinsertion.Verdict, entry: EntryHandle?) -> Int? {
        let port: Int
        switch verdict {
        case .transmit(let p): port = Int(p)
        case .complete:
            guard let h = entry, case .forward(let forward) = table.action(h) else { return nil }
            port = Int(forward.outputPort)
        case .drop, .consumed: return nil
        }
        return port < portCount ? portMTUs[port] : nil
    }

    /// A packet larger than its output port's MTU goes to the software, which answers it
    /// or fragments it. It holds its flow's count, and the entry waits for it (do-not-use,
    /// with the guard on), so the flow's later packets do not overtake its fragments.
    @inline(never)
    private func tooBig(_ buffer: consuming PacketBuffer, entry e: UnsafeMutablePointer<FlowEntry>, key: FlowKey,
                        port: UInt16, now: Instant) {
        guard exceptions.count < exceptions.capacity else { return drop(.exceptionQueueFull) }
        // A hit: a flow whose packets are all too big is still in use.
        table.recordHit(at: e, bytes: buffer.count, now: now)
        let h = table.handle(of: e)
        _ = table.incrementInSoftware(h)
        if configuration.orderGuard { table.setDoNotUse(h) }
        toSoftware(buffer, port: port, reason: .tooBig, counted: key, key: key)
    }

    /// B9: a RST ends the flow's entry now; a FIN marks it closing, and it idles out after
    /// the closing timeout, so that the last ACKs (and data the other way on a half-closed
    /// connection) stay on the fast path rather than build a fresh entry in the software.
    /// (A NAT's entry whose end cannot be announced now is marked closing too, and so is an
    /// entry whose flow still has packets in the software.) A SYN on a closing entry is a new
    /// connection on the same ports: the entry is open again.
    ///
    /// A RST ends the other direction too: its entry (the one the replies of this entry's
    /// packets meet) is marked closing, or after a RST the replies' entry would sit for TCP's
    /// whole idle timeout, since no FIN may ever cross it.
    @inline(never)
    private func connectionChanged(_ key: FlowKey, flags: UInt8) {
        guard let h = table.lookup(key) else { return }
        if flags & Self.rst != 0 {
            closeReplies(of: key, entry: h)
            // An entry whose flow still has packets in the software (without the order guard
            // the fast path uses it meanwhile) stays, closing: they come back to be counted
            // out of it and completed with it.
            if table.mayRemove(h), table.inSoftwareCount(h) == 0 {
                table.remove(h)
            } else if table.isClosing(h) || !table.markClosing(h) {
                return
            }
        } else if flags & Self.fin != 0 {
            guard !table.isClosing(h), table.markClosing(h) else { return }
        } else {
            table.reopen(h)
            return
        }
        counters.tornDown &+= 1
    }

    // Never inlined: the fast path's exits to the software would otherwise bloat it.
    @inline(never)
    func toSoftware(_ buffer: consuming PacketBuffer, port: UInt16, reason: ExceptionReason,
                            counted: FlowKey?, key: FlowKey?, bucket: UInt16 = SourceFairnessBook.untracked) {
        buffer.isAway = true
        let mark = configuration.audit.isOn ? key.map { marks.issue(for: $0) } : nil
        let item = ExceptionItem(buffer: buffer, ingressPort: port, reason: reason, countedFlow: counted, key: key,
                                 mark: mark)
        if let refused = exceptions.push(item) {
            // Only packets that hold no count get here: counted ones checked for room first.
            var back = refused.buffer
            back.isAway = false
            _ = consume back
            return drop(.exceptionQueueFull)
        }
        fairness?.didPush(bucket: bucket, queued: exceptions.count)
        counters[toSoftware: reason] &+= 1
    }

    // MARK: Messages from the software

    private func handle(_ message: consuming SoftwareMessage, now: Instant) {
        switch consume message {
        case .install(let key, let action):
            switch table.insert(key, action: action, now: now) {
            case .inserted(let h), .replaced(let h), .evicted(_, _, let h):
                // B5: with the guard on, the entry stays unusable while packets of the flow
                // are in the software (a replaced entry keeps its count).
                if configuration.orderGuard, table.inSoftwareCount(h) > 0 { table.setDoNotUse(h) }
            case .full:
                // A full table keeps the flow in the software: its packets carry no count then.
                break
            }
        case .reinsert(let reinsertion):
            reinsert(reinsertion, now: now)
        case .tcp(let command):
            handleTCP(command, now: now)
        case .originate(let frame, let port):
            // The frame stays marked away: it goes back to the software's own pool. Not a
            // packet of the engine's, so a failure is not one of its drops.
            if Int(port) < portCount, (try? ports[Int(port)].transmit(frame)) != nil {
                counters.originated &+= 1
            } else {
                counters.originatedNotSent &+= 1
            }
        case .invalidateAll:
            table.invalidateAll()
            counters.invalidations &+= 1
        }
    }

    private func reinsert(_ reinsertion: consuming Reinsertion, now: Instant) {
        let countedFlow = reinsertion.countedFlow
        let verdict = reinsertion.verdict
        let mark = reinsertion.mark
        let ingressPort = reinsertion.ingressPort
        var buffer = reinsertion.buffer
        buffer.isAway = false
        // The entry of the flow whose count this packet holds, found once: nothing below
        // changes the table before the count goes.
        let entry = countedFlow.flatMap { table.lookup($0) }
        // A FIN or RST of a TCP flow that went through the software ends its entry too.
        var connection: UInt8 = 0
        if verdict.sendsOut, let flow = countedFlow, flow.protocol == 6, buffer.count > 23, buffer.bytes[23] == 6 {
            connection = Self.connectionFlags(buffer.bytes)
        }
        if verdict.sendsOut, configuration.audit.isOn, let mark {
            // The host's audit stage tested unmarked packets; marks are the engine's to check.
            if marks.redeem(mark, key: FlowKey(frame: buffer.bytes, port: ingressPort)) {
                counters.auditValidMarks &+= 1
            } else {
                counters.auditInvalidMarks &+= 1
                do throws(CompatibilityFailure) {
                    try compatibility.check(buffer.bytes, metadata: buffer.offload,
                                            mtu: egressMTU(verdict, entry: entry) ?? portMTUs.largest)
                } catch {
                    counters.auditFailures[error] &+= 1
                    countOut(entry)
                    return drop(.auditFailed)
                }
            }
        }
        if verdict.sendsOut, let flow = countedFlow, let h = entry, table.entry(at: h).pointee.carriesRTP {
            recordRTP(flow, buffer.bytes, offload: buffer.offload, now: now)
        }
        switch verdict {
        case .transmit(let port):
            if transmit(buffer, port: port) { counters.reinsertedOut &+= 1 }
        case .complete:
            // Only a packet that holds its flow's count has an entry to be completed with.
            guard let flow = countedFlow, let h = entry else {
                return drop(.noEntryToComplete)
            }
            guard FlowKey(frame: buffer.bytes, port: ingressPort) == flow else {
                countOut(h)
                return drop(.notTheCountedFlow)
            }
            switch table.kind(h) {
            case .deliver:
                return completeLocalDelivery(buffer, flow: flow, entry: h, port: ingressPort, now: now)
            case .forward:
                guard table.applyRewrite(h, to: buffer.mutableBytes, partialL4: buffer.offload.hasPartialChecksum) == .rewritten
                else {
                    countOut(h)
                    return drop(.noEntryToComplete)
                }
                table.recordHit(h, bytes: buffer.count, now: now)
                if transmit(buffer, port: table.entry(at: h).pointee.outputPort) {
                    counters.reinsertedOut &+= 1
                    counters.completedByEngine &+= 1
                }
            case .drop, .toSoftware:
                countOut(h)
                return drop(.noEntryToComplete)
            }
        case .drop:
            _ = consume buffer
            drop(.softwareDrop)
        case .consumed:
            _ = consume buffer
            counters.consumedBySoftware &+= 1
        }
        countOut(entry)
        if connection & (Self.fin | Self.rst) != 0, let flow = countedFlow { closedInSoftware(flow, flags: connection) }
    }

    /// B9 for a FIN or RST that went through the software: its entry is marked closing (and
    /// on a RST the replies' entry too), not removed, since the flow's later packets may
    /// still be in the software and come back to be completed with it.
    @inline(never)
    private func closedInSoftware(_ key: FlowKey, flags: UInt8) {
        guard let h = table.lookup(key) else { return }
        if flags & Self.rst != 0 { closeReplies(of: key, entry: h) }
        guard !table.isClosing(h), table.markClosing(h) else { return }
        counters.tornDown &+= 1
    }

    /// Marks the entry of a reset flow's replies closing: no FIN may ever cross it now.
    /// (Marking moves no entry, so `h` stays good.)
    private func closeReplies(of key: FlowKey, entry h: EntryHandle) {
        if case .forward(let forward) = table.action(h), let r = table.lookup(key.reply(to: forward)),
           !table.isClosing(r) {
            table.markClosing(r)
        }
    }

    /// A segment the software gives back for the engine's TCP: it came to the software while
    /// its connection was being offloaded and now goes to the connection, in its turn. If the
    /// connection went back to the host meanwhile, the segment goes back to the software too.
    private func completeLocalDelivery(_ buffer: consuming PacketBuffer, flow: FlowKey, entry h: EntryHandle,
                                       port: UInt16, now: Instant) {
        let id = table.entry(at: h).pointee.connection
        countOut(h)
        guard id & FlowEntry.offloadedBit != 0 else {
            guard exceptions.count < exceptions.capacity else { return drop(.exceptionQueueFull) }
            _ = table.incrementInSoftware(h)
            return toSoftware(buffer, port: port, reason: .localDelivery, counted: flow, key: flow)
        }
        receiveOffloaded(buffer, slot: id & ~FlowEntry.offloadedBit, key: flow, entry: h, port: port, now: now)
    }

    /// The packet that held a count for `flow` has cycled out: count it down, and clear the
    /// do-not-use flag when none is left and the action is installed.
    private func countOut(_ flow: FlowKey?) {
        countOut(flow.flatMap { table.lookup($0) })
    }

    /// The same, with the flow's entry already found.
    private func countOut(_ h: EntryHandle?) {
        guard let h, table.inSoftwareCount(h) > 0 else { return }
        if table.decrementInSoftware(h) == 0, table.kind(h) != .toSoftware, table.doNotUse(h) {
            table.clearDoNotUse(h)
            counters.flagsCleared &+= 1
        }
    }

    // MARK: Out

    @_specialize(where Port == MemoryLink)
    @_specialize(where Port == SystemLink)
    private func transmit(_ buffer: consuming PacketBuffer, port: UInt16) -> Bool {
        guard Int(port) < portCount else {
            drop(.noSuchPort)
            return false
        }
        do {
            try ports[Int(port)].transmit(buffer)
            return true
        } catch {
            drop(.transmitFailed)
            return false
        }
    }

    func drop(_ reason: EngineDropReason) { counters[drop: reason] &+= 1 }

    /// Adds an RTP packet (Ethernet + IPv4 + UDP + RTP) to its flow's statistics; a payload
    /// that is not RTP version 2 is left out. A UDP GSO super-datagram carries an RTP packet
    /// in each of its datagrams, `segmentSize` bytes apart: each is added.
    private func recordRTP(_ key: FlowKey, _ frame: UnsafeRawBufferPointer, offload: OffloadMetadata, now: Instant) {
        guard let base = frame.baseAddress else { return }
        var step = 0
        if case .udpSegmentation(let size, _, _, _) = offload { step = Int(size) }
        var rtp = 14 + Int(frame[14] & 0xf) * 4 + 8
        while frame.count >= rtp + 12 {
            if frame[rtp] >> 6 == 2 {
                let sequence = UInt16(bigEndian: base.loadUnaligned(fromByteOffset: rtp + 2, as: UInt16.self))
                let timestamp = UInt32(bigEndian: base.loadUnaligned(fromByteOffset: rtp + 4, as: UInt32.self))
                let ssrc = UInt32(bigEndian: base.loadUnaligned(fromByteOffset: rtp + 8, as: UInt32.self))
                let rate = RTPFlowStatistics.clockRate(payloadType: frame[rtp + 1] & 0x7f)
                rtpStatistics[key, default: RTPFlowStatistics()].record(
                    sequence: sequence, timestamp: timestamp, ssrc: ssrc, arrival: now, clockRate: rate)
            }
            guard step > 0 else { return }
            rtp += step
        }
    }

    /// The FIN, SYN and RST flags of an Ethernet + IPv4 + TCP frame.
    @inline(__always)
    private static func connectionFlags(_ frame: UnsafeRawBufferPointer) -> UInt8 {
        let headerLength = Int(frame[14] & 0xf) * 4
        let flagsAt = 14 + headerLength + 13
        return flagsAt < frame.count ? frame[flagsAt] & (fin | syn | rst) : 0
    }

    private static var ethernetHeader: Int { 14 }
    private static var fin: UInt8 { 0x01 }
    private static var syn: UInt8 { 0x02 }
    private static var rst: UInt8 { 0x04 }
}
