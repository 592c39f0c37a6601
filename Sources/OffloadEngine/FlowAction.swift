import OffloadCore

extension FlowKey {
    /// The key of the replies to this flow's packets that `forward` sends: they come back by
    /// its output port, from where they went, to the addresses and ports it gave them.
    public func reply(to forward: FlowAction.Forward) -> FlowKey {
        FlowKey(ingressPort: forward.outputPort, protocol: self.protocol,
                source: forward.translatedDestination ?? destination,
                destination: forward.translatedSource ?? source,
                sourcePort: forward.translatedDestinationPort ?? destinationPort,
                destinationPort: forward.translatedSourcePort ?? sourcePort)
    }
}

/// What the engine does with a packet whose flow has a usable connection-table entry (B2).
///
/// This is the readable form the host software builds; the table stores it compiled for one
/// key (`FlowEntry`), with the checksum deltas of the rewrite precomputed.
public enum FlowAction: Hashable, Sendable {
    /// Send out of a port after rewriting the headers: Ethernet addresses always, IPv4 TTL
    /// decremented always, and the NAT translations that are not nil.
    case forward(Forward)
    /// Hand to the host software's own connection or socket (named by the host's id): the
    /// packet goes to the software as a local delivery.
    case deliver(connection: UInt32)
    /// Hand to a TCP connection the engine runs itself (offloaded, T1): `slot` in the
    /// engine's TCP offload table.
    case offloadedTCP(slot: UInt32)
    /// Drop (a policy decision, counted by the entry's counters).
    case drop
    /// Send to the host software. A placeholder the engine may insert on a miss so that
    /// packets of the flow that are in the software are counted (`inSoftwareCount`) before the
    /// software has decided what the flow's real action is.
    case toSoftware

    /// The rewrite of a forwarded packet.
    ///
    /// Ethernet addresses are stored in the entry (not a next-hop index), so a hit needs no
    /// second table and the action is complete on its own; the price is that the software
    /// must replace (re-insert) the entries of a neighbour whose MAC address changes.
    public struct Forward: Hashable, Sendable {
        public var outputPort: UInt16
        public var destinationMAC: MACAddress
        public var sourceMAC: MACAddress
        /// Source NAT: the new source address, or nil to keep it.
        public var translatedSource: IPv4Address?
        /// Source NAT: the new source port (TCP and UDP only), or nil to keep it.
        public var translatedSourcePort: UInt16?
        /// Destination NAT: the new destination address, or nil to keep it.
        public var translatedDestination: IPv4Address?
        /// Destination NAT: the new destination port (TCP and UDP only), or nil to keep it.
        public var translatedDestinationPort: UInt16?
        /// The flow carries RTP: the engine keeps its RFC 3550 statistics (B8).
        public var carriesRTP: Bool

        public init(outputPort: UInt16, destinationMAC: MACAddress, sourceMAC: MACAddress,
                    translatedSource: IPv4Address? = nil, translatedSourcePort: UInt16? = nil,
                    translatedDestination: IPv4Address? = nil, translatedDestinationPort: UInt16? = nil,
                    carriesRTP: Bool = false) {
            self.outputPort = outputPort
            self.destinationMAC = destinationMAC
            self.sourceMAC = sourceMAC
            self.translatedSource = translatedSource
            self.translatedSourcePort = translatedSourcePort
            self.translatedDestination = translatedDestination
            self.translatedDestinationPort = translatedDestinationPort
            self.carriesRTP = carriesRTP
        }
    }
}

/// The kind of an entry's action, as the fast path switches on it.
/// `deliver` and `offloadedTCP` share a kind: the entry's id says which (see `FlowEntry`).
public enum FlowActionKind: UInt8, Sendable {
    case forward = 0
    case deliver = 1
    case drop = 2
    case toSoftware = 3
}
