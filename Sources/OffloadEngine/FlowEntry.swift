import OffloadCore

/// One connection-table entry: exactly one 64-byte cache line, so a hit costs one miss.
///
/// | bytes | field |
/// |-------|-------|
/// | 0-15  | the key, `FlowKey.packed`, with bit 8 of the second word set: an empty slot is all zero |
/// | 16-27 | the 12 bytes of the new Ethernet header (destination MAC, source MAC), as stored on the wire |
/// | 28-39 | new source address, new destination address, new ports, as stored on the wire (the connection id for `deliver`) |
/// | 40-43 | IPv4 header and L4 checksum deltas of the rewrite, network order, precomputed |
/// | 44-47 | output port, control (kind, translation flags, do-not-use), policy epoch |
/// | 48-63 | bytes and packets (low 32 bits of each), the count of the flow's packets in the software, last-used tick |
///
/// What does not fit is cold and kept in a parallel array (`FlowEntryCold`): the high halves
/// of the counters (touched once every 2^32 packets or bytes) and the closing mark. The count
/// in the software is in the line itself: a new flow's miss, its install and the return of
/// its first packet then touch this line only, which the burst has already prefetched.
///
/// A value of this type built with `init(key:action:)` (outside a table) applies the same
/// rewrite as the table's entry does, so software that completely processes a packet (B6)
/// produces the same bytes as the engine.
public struct FlowEntry: Sendable {
    @usableFromInline var keyHigh: UInt64
    @usableFromInline var keyLow: UInt64
    @usableFromInline var ethernetFirst: UInt64
    @usableFromInline var ethernetLast: UInt32
    /// Network order as stored in the header; for `deliver`, the connection id (host order).
    @usableFromInline var newSource: UInt32
    @usableFromInline var newDestination: UInt32
    /// Both ports, network order as stored in the header.
    @usableFromInline var newPorts: UInt32
    /// RFC 1624 deltas (sum of ~old + new over the rewritten 16-bit words) in network order,
    /// in 1...0xffff: with a nonzero delta an update never produces the negative zero 0xffff,
    /// which a full computation cannot give.
    @usableFromInline var ipChecksumDelta: UInt16
    @usableFromInline var l4ChecksumDelta: UInt16
    @usableFromInline var outputPortValue: UInt16
    /// Bits 0-1 kind, 2-5 which NAT translations are set, 7 do-not-use.
    @usableFromInline var control: UInt8
    @usableFromInline var epoch: UInt8
    /// Low 32 bits of the byte count; the carry goes to `FlowEntryCold.bytesHigh`.
    @usableFromInline var bytesLow: UInt32
    /// Low 32 bits of the packet count; the carry goes to `FlowEntryCold.packetsHigh`.
    @usableFromInline var packetsLow: UInt32
    /// Packets of the flow that are in the host software (B4).
    @usableFromInline var inSoftwareCount: UInt32
    @usableFromInline var lastUsedTick: UInt32

    @usableFromInline static let occupiedBit: UInt64 = 0x100
    @usableFromInline static let kindMask: UInt8 = 0x03
    @usableFromInline static let translatesSource: UInt8 = 0x04
    @usableFromInline static let translatesSourcePort: UInt8 = 0x08
    @usableFromInline static let translatesDestination: UInt8 = 0x10
    @usableFromInline static let translatesDestinationPort: UInt8 = 0x20
    @usableFromInline static let carriesRTPBit: UInt8 = 0x40
    @usableFromInline static let doNotUseBit: UInt8 = 0x80

    /// An empty slot.
    @usableFromInline
    init() {
        keyHigh = 0; keyLow = 0; ethernetFirst = 0; ethernetLast = 0
        newSource = 0; newDestination = 0; newPorts = 0
        ipChecksumDelta = 0; l4ChecksumDelta = 0; outputPortValue = 0
        control = 0; epoch = 0; bytesLow = 0; packetsLow = 0; inSoftwareCount = 0; lastUsedTick = 0
    }

    /// Compiles `action` for packets of `key`: the new header values and the checksum deltas.
    /// Port translations are only for TCP and UDP keys (a precondition).
    public init(key: FlowKey, action: FlowAction) {
        self.init()
        let (a, b) = key.packed
        keyHigh = a
        keyLow = b | FlowEntry.occupiedBit
        switch action {
        case .forward(let f):
            let hasPorts = key.protocol == 6 || key.protocol == 17
            precondition(hasPorts || (f.translatedSourcePort == nil && f.translatedDestinationPort == nil),
                         "FlowEntry: port translation needs a TCP or UDP key")
            control = FlowActionKind.forward.rawValue
            if f.translatedSource != nil { control |= FlowEntry.translatesSource }
            if f.translatedSourcePort != nil { control |= FlowEntry.translatesSourcePort }
            if f.translatedDestination != nil { control |= FlowEntry.translatesDestination }
            if f.translatedDestinationPort != nil { control |= FlowEntry.translatesDestinationPort }
            if f.carriesRTP { control |= FlowEntry.carriesRTPBit }
            outputPortValue = f.outputPort
            var header: (UInt64, UInt64) = (0, 0)
            withUnsafeMutableBytes(of: &header) { p in
                f.destinationMAC.store(to: p.baseAddress!, offset: 0)
                f.sourceMAC.store(to: p.baseAddress!, offset: 6)
                ethernetFirst = p.load(as: UInt64.self)
                ethernetLast = p.load(fromByteOffset: 8, as: UInt32.self)
            }
            let source = (f.translatedSource ?? key.source).rawValue
            let destination = (f.translatedDestination ?? key.destination).rawValue
            let sourcePort = f.translatedSourcePort ?? key.sourcePort
            let destinationPort = f.translatedDestinationPort ?? key.destinationPort
            newSource = source.bigEndian
            newDestination = destination.bigEndian
            newPorts = (UInt32(sourcePort) << 16 | UInt32(destinationPort)).bigEndian

            // The addresses are in the IPv4 header and in the L4 pseudo-header.
            var addresses: UInt32 = 0
            FlowEntry.addChange(&addresses, old: key.source.rawValue, new: source)
            FlowEntry.addChange(&addresses, old: key.destination.rawValue, new: destination)
            // TTL and protocol share a word: TTL - 1 subtracts 0x0100, ~0x0100 = 0xfeff.
            ipChecksumDelta = FlowEntry.finishDelta(addresses &+ 0xfeff)
            var l4 = addresses
            FlowEntry.addChange(&l4, old: key.sourcePort, new: sourcePort)
            FlowEntry.addChange(&l4, old: key.destinationPort, new: destinationPort)
            l4ChecksumDelta = FlowEntry.finishDelta(l4)
        case .deliver(let connection):
            precondition(connection & FlowEntry.offloadedBit == 0, "FlowEntry: a host connection id uses the top bit")
            control = FlowActionKind.deliver.rawValue
            newSource = connection
        case .offloadedTCP(let slot):
            precondition(slot & FlowEntry.offloadedBit == 0, "FlowEntry: an offload slot uses the top bit")
            control = FlowActionKind.deliver.rawValue
            newSource = slot | FlowEntry.offloadedBit
        case .drop:
            control = FlowActionKind.drop.rawValue
        case .toSoftware:
            control = FlowActionKind.toSoftware.rawValue
        }
    }

    @usableFromInline
    static func addChange(_ sum: inout UInt32, old: UInt16, new: UInt16) {
        sum &+= UInt32(~old) &+ UInt32(new)
    }

    @usableFromInline
    static func addChange(_ sum: inout UInt32, old: UInt32, new: UInt32) {
        addChange(&sum, old: UInt16(truncatingIfNeeded: old >> 16), new: UInt16(truncatingIfNeeded: new >> 16))
        addChange(&sum, old: UInt16(truncatingIfNeeded: old), new: UInt16(truncatingIfNeeded: new))
    }

    /// Folds a host-order sum of changes to 16 bits, in network order. (The fold of a nonzero
    /// sum is never 0, and the sum always has a nonzero term; 0 would be mapped to 0xffff.) The ones'
    /// complement sum commutes with the byte swap, so the delta can be added to a checksum
    /// field loaded from the packet without swapping it.
    @usableFromInline
    static func finishDelta(_ s: UInt32) -> UInt16 {
        var s = s
        while s > 0xffff { s = (s & 0xffff) &+ (s >> 16) }
        return (s == 0 ? 0xffff : UInt16(s)).bigEndian
    }

    // MARK: reading

    /// The key this entry matches.
    @inlinable public var key: FlowKey { FlowKey(packed: keyHigh, keyLow) }

    /// Whether this slot holds an entry.
    @inlinable var isOccupied: Bool { keyLow != 0 }

    @inlinable public var kind: FlowActionKind { FlowActionKind(rawValue: control & FlowEntry.kindMask)! }

    /// The output port of a `forward` action.
    @inlinable public var outputPort: UInt16 { outputPortValue }

    /// The connection id of a `deliver` action, or the slot of an `offloadedTCP` one with
    /// `offloadedBit` set.
    @inlinable public var connection: UInt32 { newSource }

    /// Set in a `deliver`-kind entry's id when the engine runs the connection itself.
    @usableFromInline static let offloadedBit: UInt32 = 0x8000_0000

    /// Whether the entry sends its flow to a connection the engine runs.
    @inlinable var isOffloadedTCP: Bool {
        control & FlowEntry.kindMask == FlowActionKind.deliver.rawValue && newSource & FlowEntry.offloadedBit != 0
    }

    /// The do-not-use flag (B4): while set, packets of the flow go to the software.
    @inlinable public var doNotUse: Bool { control & FlowEntry.doNotUseBit != 0 }
    /// Whether the engine keeps RTP statistics for the flow.
    @inlinable public var carriesRTP: Bool { control & FlowEntry.carriesRTPBit != 0 }
    /// Whether the entry rewrites an address or a port (a NAT's entry).
    @inlinable public var translates: Bool {
        control & (FlowEntry.translatesSource | FlowEntry.translatesSourcePort | FlowEntry.translatesDestination
            | FlowEntry.translatesDestinationPort) != 0
    }

    /// The policy epoch the entry was built under (see `ConnectionTable.invalidateAll`).
    @inlinable public var policyEpoch: UInt8 { epoch }

    /// The action this entry was compiled from.
    public var action: FlowAction {
        switch kind {
        case .forward:
            var header: (UInt64, UInt32, UInt32) = (ethernetFirst, ethernetLast, 0)
            let (dst, src) = withUnsafeBytes(of: &header) { p in
                (MACAddress(loadingFrom: p.baseAddress!, offset: 0), MACAddress(loadingFrom: p.baseAddress!, offset: 6))
            }
            let ports = UInt32(bigEndian: newPorts)
            return .forward(FlowAction.Forward(
                outputPort: outputPortValue, destinationMAC: dst, sourceMAC: src,
                translatedSource: control & FlowEntry.translatesSource != 0
                    ? IPv4Address(rawValue: UInt32(bigEndian: newSource)) : nil,
                translatedSourcePort: control & FlowEntry.translatesSourcePort != 0
                    ? UInt16(truncatingIfNeeded: ports >> 16) : nil,
                translatedDestination: control & FlowEntry.translatesDestination != 0
                    ? IPv4Address(rawValue: UInt32(bigEndian: newDestination)) : nil,
                translatedDestinationPort: control & FlowEntry.translatesDestinationPort != 0
                    ? UInt16(truncatingIfNeeded: ports) : nil,
                carriesRTP: control & FlowEntry.carriesRTPBit != 0))
        case .deliver:
            return newSource & FlowEntry.offloadedBit == 0
                ? .deliver(connection: newSource) : .offloadedTCP(slot: newSource & ~FlowEntry.offloadedBit)
        case .drop: return .drop
        case .toSoftware: return .toSoftware
        }
    }
}

/// The parts of an entry that neither the fast path nor a new flow touches. Zero in every
/// empty slot, so that an insert need not write it.
@usableFromInline
struct FlowEntryCold: Sendable {
    /// Bits 32 to 63 of the byte counter.
    @usableFromInline var bytesHigh: UInt32 = 0
    /// Bits 32 to 47 of the packet counter (it wraps at 2^48: 217 days at 15 Mpps).
    @usableFromInline var packetsHigh: UInt16 = 0
    /// A TCP flow that has sent a FIN: the entry idles out after `IdleTimeouts.tcpClosing`.
    @usableFromInline var closing = false

    @usableFromInline init() {}

    var isZero: Bool { bytesHigh == 0 && packetsHigh == 0 && !closing }
}

/// An entry's counters, read on the slow path.
public struct FlowEntryStats: Hashable, Sendable {
    public var packets: UInt64
    public var bytes: UInt64
    /// When the entry was last hit (or inserted), in `ConnectionTable.tick(_:)` units.
    public var lastUsedTick: UInt32
    /// Packets of the flow that were in the host software (B4).
    public var inSoftwareCount: UInt32

    public init(packets: UInt64, bytes: UInt64, lastUsedTick: UInt32, inSoftwareCount: UInt32) {
        self.packets = packets
        self.bytes = bytes
        self.lastUsedTick = lastUsedTick
        self.inSoftwareCount = inSoftwareCount
    }
}
