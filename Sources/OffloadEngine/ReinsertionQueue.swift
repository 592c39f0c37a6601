import OffloadCore

/// The software's only way back into the engine: the producer end of the re-insertion ring
/// with audit mode's host-side stage at its entrance (B7, seed 000 claim 2). The engine makes
/// it and keeps the ring to itself, so no software can skip the stage; `send` runs on the
/// software's thread. In audit mode
/// every packet that comes back without an engine mark is tested for compatibility here; a
/// failing one is turned into a drop (so the engine still counts it out of its flow), counted
/// by reason, and logged at most once a second per reason.
public final class ReinsertionQueue {
    private let ring: SPSCRing<SoftwareMessage>
    public let audit: AuditSwitch
    private let test: CompatibilityTest
    private let clock: any Clock
    private let log: (String) -> Void
    private var lastLogged: [CompatibilityFailure: Instant] = [:]
    /// Unmarked packets tested, and those that failed, by reason.
    public private(set) var tested: UInt64 = 0
    public private(set) var failures = ReasonCounters<CompatibilityFailure>()
    /// The engine's announcements of translating entries (nil unless it makes them): the
    /// software that sends on this queue reads them, so the two cannot be wired apart.
    public let translationNotices: SPSCRing<TranslationNotice>?
    /// Per engine port: the largest IPv4 packet it sends as one frame. What the software
    /// forwards must fit, or be answered ("fragmentation needed") or fragmented. The engine
    /// refreshes it each second.
    public let portMTU: PortMTUs

    init(ring: SPSCRing<SoftwareMessage>, audit: AuditSwitch, portMTU: PortMTUs, clock: any Clock,
         translationNotices: SPSCRing<TranslationNotice>? = nil, log: @escaping (String) -> Void = { print($0) }) {
        self.ring = ring
        self.portMTU = portMTU
        self.translationNotices = translationNotices
        self.audit = audit
        test = CompatibilityTest()
        self.clock = clock
        self.log = log
    }

    /// Messages that fit before the ring is full.
    public var room: Int { ring.capacity - ring.count }

    /// Sends a message through the audit stage. The caller checked `room`.
    public func send(_ message: consuming SoftwareMessage) {
        var admitted: SoftwareMessage? = message
        if audit.isOn { admitted = stage(admitted.take()!) }
        guard let admitted = admitted.take() else { return }
        if ring.push(admitted) != nil { preconditionFailure("ReinsertionQueue: sent without room") }
    }

    /// The message as it may go on, or nil for a frame of the software's own that failed
    /// (it was never the engine's, so nothing is to be counted out).
    private func stage(_ message: consuming SoftwareMessage) -> SoftwareMessage? {
        switch consume message {
        case .install(let key, let action):
            return .install(key, action)
        case .tcp(let command):
            return .tcp(command)
        case .invalidateAll:
            return .invalidateAll
        case .reinsert(let r):
            guard r.mark == nil, r.verdict.sendsOut else { return .reinsert(r) }
            let port: UInt16? = if case .transmit(let p) = r.verdict { p } else { nil }
            guard check(r.buffer, port: port) != nil else { return .reinsert(r) }
            return .reinsert(Reinsertion(buffer: r.buffer, verdict: .drop,
                                         countedFlow: r.countedFlow, mark: nil, ingressPort: r.ingressPort))
        case .originate(let frame, let port):
            guard check(frame, port: port) == nil else { return nil }
            return .originate(frame, port: port)
        }
    }

    /// Runs the compatibility test on an unmarked frame, against the MTU of the port it
    /// leaves by where that is known (a packet the engine completes leaves by its entry's:
    /// the largest MTU applies); counts and logs a failure.
    private func check(_ frame: borrowing PacketBuffer, port: UInt16?) -> CompatibilityFailure? {
        tested &+= 1
        do throws(CompatibilityFailure) {
            let mtu = port.flatMap { Int($0) < portMTU.count ? portMTU[Int($0)] : nil } ?? portMTU.largest
            try test.check(frame.bytes, metadata: frame.offload, mtu: mtu)
            return nil
        } catch {
            failures[error] &+= 1
            let now = clock.now
            if lastLogged[error].map({ now - $0 >= .seconds(1) }) ?? true {
                lastLogged[error] = now
                log("audit: dropped a re-inserted packet: \(error) (\(failures[error]) so far)")
            }
            return error
        }
    }
}
