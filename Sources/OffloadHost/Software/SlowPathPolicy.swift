import OffloadCore
import OffloadEngine

/// What the software decides for a new flow.
public enum FlowDecision: Equatable, Sendable {
    /// Install this action in the engine's entry and process the packet with it.
    case install(FlowAction)
    /// The flow's next hop is being resolved: keep its packets, in order, until it is.
    case wait(NextHop)
    /// No way to deliver it: drop the flow and answer its first packet with an ICMP
    /// destination unreachable of this code (RFC 792). `reason` names the drop. A
    /// `transient` refusal may pass (NAT ports exhausted): the packet is answered and
    /// dropped, but not the flow, whose next packet is decided again.
    case unreachable(code: UInt8, reason: String, transient: Bool = false)
    /// Not to be delivered, nor answered (RFC 1812 4.3.2.7: no ICMP error about a packet to
    /// a broadcast address): drop the flow. `reason` names the drop.
    case drop(reason: String)
    /// No entry to install (the flow's entry is the engine's own): the packet is for the
    /// software itself and is answered like a local delivery.
    case local
}

/// A neighbour to be resolved: an address on the link of a port.
public struct NextHop: Hashable, Sendable, CustomStringConvertible {
    public var port: UInt16
    public var address: IPv4Address

    public init(port: UInt16, address: IPv4Address) {
        self.port = port
        self.address = address
    }

    public var description: String { "\(address) on port \(port)" }
}

/// Where a next hop's resolution stands.
public enum ResolutionState: Sendable, Equatable {
    case pending
    case resolved
    /// No answer after every retry: what waited for it is unreachable.
    case failed
}

/// What the software answers to a packet addressed to itself.
public enum LocalAnswer: Sendable, Equatable {
    /// The frame was rewritten in place into the answer: send it out of `port`.
    case send(port: UInt16)
    /// Taken, nothing to send back (an ARP reply learned from).
    case consumed
    /// Nothing to send back; the packet is dropped for the reason named.
    case drop(String)
    /// Not the software's after all: the engine completes it with its flow's entry (a
    /// segment of a connection that moved to the engine while the segment was on its way).
    case toEngine
    /// A packet to forward whose time to live runs out here: answered with an ICMP time
    /// exceeded, as a forwarded packet's would be.
    case timeExceeded
}

/// An interface of the software's own, for the ICMP errors it sends from it.
public struct SoftwareInterface: Sendable, Equatable {
    public var address: IPv4Address
    public var hardwareAddress: MACAddress

    public init(address: IPv4Address, hardwareAddress: MACAddress) {
        self.address = address
        self.hardwareAddress = hardwareAddress
    }
}

/// Sends a frame the software makes itself (an ARP request): `fill` writes it into the
/// buffer it is given and returns its length; it leaves by `port`.
public typealias Originate = (_ port: UInt16, _ fill: (UnsafeMutableRawBufferPointer) -> Int) -> Void

/// The decisions of the software (a gateway's routes, NAT and ARP; a test's fixed actions).
/// The slow path around it keeps each flow's order, the queues and the counts.
public protocol SlowPathPolicy: AnyObject {
    /// The decision for the first packet of a new flow.
    func decide(_ key: FlowKey, send: Originate) -> FlowDecision
    /// A packet for the software itself (ARP, ICMP to one of its addresses), rewritten in
    /// place into its answer.
    func answer(_ frame: UnsafeMutableRawBufferPointer, ingressPort: UInt16, send: Originate) -> LocalAnswer
    /// Where the resolution of `hop` stands.
    func resolution(of hop: NextHop) -> ResolutionState
    /// The interface an ICMP error about a packet that came in on `port` is sent from, or
    /// nil when none may be sent now (no address there, or the rate limit).
    func icmpErrorSource(port: UInt16) -> SoftwareInterface?
    /// Runs timers (ARP retries) and sends what is due: at most `room` frames find room
    /// on the way to the engine now.
    func poll(send: Originate, room: Int)
    /// The entry for the replies of a new flow that `forward` sends on, installed with the
    /// flow's own so that the first reply already takes the fast path (as a NAT's
    /// connection tracking sets up both directions at once), or nil.
    func replyFlow(of key: FlowKey, forward: FlowAction.Forward, send: Originate) -> (FlowKey, FlowAction)?
    /// Whether a neighbour's MAC address changed since the last call, so that the actions
    /// decided with the old one are stale: the slow path has the engine rebuild every entry.
    func takeNeighborChange() -> Bool
    /// The engine announces its translating entries: `noteTranslation` will hear of each.
    func translationsWillBeAnnounced()
    /// A translating entry came to be or went in the engine (when the engine announces them).
    func noteTranslation(_ notice: TranslationNotice)
}

extension SlowPathPolicy {
    public func answer(_ frame: UnsafeMutableRawBufferPointer, ingressPort: UInt16, send: Originate) -> LocalAnswer {
        .drop("not-a-flow")
    }
    public func resolution(of hop: NextHop) -> ResolutionState { .resolved }
    public func icmpErrorSource(port: UInt16) -> SoftwareInterface? { nil }
    public func poll(send: Originate, room: Int) {}
    public func replyFlow(of key: FlowKey, forward: FlowAction.Forward, send: Originate) -> (FlowKey, FlowAction)? {
        nil
    }
    public func takeNeighborChange() -> Bool { false }
    public func translationsWillBeAnnounced() {}
    public func noteTranslation(_ notice: TranslationNotice) {}
}

/// A policy that is only a function from a flow to its action (nil drops the flow).
final class FunctionPolicy: SlowPathPolicy {
    let action: (FlowKey) -> FlowAction?

    init(_ action: @escaping (FlowKey) -> FlowAction?) { self.action = action }

    func decide(_ key: FlowKey, send: Originate) -> FlowDecision { .install(action(key) ?? .drop) }
}
