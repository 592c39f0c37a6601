import OffloadCore

/// Why the engine sent a packet to the software.
public enum ExceptionReason: UInt8, Sendable, CaseIterable {
    /// No entry: the engine made a pending one (do-not-use set) and the software builds it.
    case miss
    /// The entry's do-not-use flag is set: earlier packets of the flow are in the software.
    case doNotUse
    /// No entry could be made (the table is full of flows with packets in the software).
    case tableFull
    /// Not an IPv4 TCP/UDP/other flow the table matches (ARP, IPv6, a fragment).
    case notAFlow
    /// The entry's TTL rewrite found TTL 0 or 1: the software answers with ICMP.
    case timeToLiveExceeded
    /// The entry delivers to a local connection: the host software's.
    case localDelivery
    /// Larger than its output port's MTU (a TCP super-frame: its segments are): the
    /// software sends "fragmentation needed" (DF set) or fragments it. It holds its flow's
    /// count, so the flow's later packets do not overtake its fragments.
    case tooBig
}

/// A packet on its way from the engine to the software (the exception queue).
@frozen
public struct ExceptionItem: ~Copyable {
    public var buffer: PacketBuffer
    public let ingressPort: UInt16
    public let reason: ExceptionReason
    /// The flow whose in-software count this packet holds, if it holds one: it must come
    /// back with the re-insertion so the engine can count it out.
    public let countedFlow: FlowKey?
    /// The flow's key (whether counted or not), when the packet is a flow packet.
    public let key: FlowKey?
    /// In audit mode, for a flow packet: the engine's mark, to be handed back with the
    /// packet if the software leaves it as the engine classified it.
    public let mark: AuditMark?

    public init(buffer: consuming PacketBuffer, ingressPort: UInt16, reason: ExceptionReason,
                countedFlow: FlowKey?, key: FlowKey?, mark: AuditMark? = nil) {
        self.buffer = buffer
        self.ingressPort = ingressPort
        self.reason = reason
        self.countedFlow = countedFlow
        self.key = key
        self.mark = mark
    }
}

/// What the software tells the engine, in order (the re-insertion queue).
public enum SoftwareMessage: ~Copyable {
    /// Set (or replace) the action of a flow's entry. The do-not-use flag stays set while
    /// packets of the flow are still in the software (with the order guard on).
    case install(FlowKey, FlowAction)
    /// Take a packet back.
    case reinsert(Reinsertion)
    /// About an offloaded TCP connection (seed 003).
    case tcp(TCPOffloadCommand)
    /// Send a frame the software made in its own memory (an ARP request) out of `port`.
    /// It is no packet of the engine's: it is not counted as received or re-inserted.
    case originate(PacketBuffer, port: UInt16)
    /// Make every entry stale (`ConnectionTable.invalidateAll`), as when a neighbour's MAC
    /// address changed: the entries that forward to it hold the old one. Each flow's next
    /// packet goes to the software as for do-not-use, behind its earlier ones, and the
    /// software installs the flow's entry again. (Offloaded TCP connections would lose their
    /// entries' fast path too: the host's policy never asks for this.)
    case invalidateAll
}

/// A packet the software gives back, and what the engine is to do with it.
@frozen
public struct Reinsertion: ~Copyable {
    public enum Verdict: Sendable, Equatable {
        /// The software processed it completely: send it out of `port` as it is.
        case transmit(port: UInt16)
        /// The software processed it partially: the engine completes it with the entry's action.
        case complete
        /// The software dropped it (the software counts why). No payload: a verdict is
        /// plain data, so a message moves through the ring without reference counting.
        case drop
        /// The packet was for the software itself, which took it (an ARP reply it learned from).
        case consumed

        /// Whether the packet is to leave by a port (and so is audited and counted as sent).
        public var sendsOut: Bool {
            switch self {
            case .transmit, .complete: return true
            case .drop, .consumed: return false
            }
        }
    }

    public var buffer: PacketBuffer
    public let verdict: Verdict
    /// Copied from the exception item: the flow whose in-software count this packet holds.
    public let countedFlow: FlowKey?
    /// The engine's mark, copied from the exception item (audit mode).
    public let mark: AuditMark?
    /// The ingress port the packet was classified on (for checking its mark).
    public let ingressPort: UInt16

    public init(buffer: consuming PacketBuffer, verdict: Verdict, countedFlow: FlowKey?, mark: AuditMark? = nil,
                ingressPort: UInt16 = 0) {
        self.buffer = buffer
        self.verdict = verdict
        self.countedFlow = countedFlow
        self.mark = mark
        self.ingressPort = ingressPort
    }
}
