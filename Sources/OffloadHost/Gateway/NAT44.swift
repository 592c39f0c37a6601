import OffloadCore

/// Source NAT with port allocation (NAT44, RFC 3022's NAPT): inside (address, port) pairs
/// share one outside address, each mapped to an outside port per protocol. The mapping is
/// kept both ways: outgoing flows are rewritten to it, and replies to the outside port are
/// rewritten back.
///
/// A mapping lives while the engine has entries that translate to it (the gateway counts
/// them from the engine's translation notices, and calls `releaseIdle` only when it gets
/// them), and `linger` after the last one goes, so that a connection's last packets after
/// its entries went (a retransmitted FIN) keep their port. Then `releaseIdle` frees the port
/// for another inside host. A mapping that never gets an entry (the table was full) lingers
/// from its last use. The default of 90 s after a UDP entry's 30 s idle timeout keeps a UDP
/// mapping at least 2 minutes after its last packet (RFC 4787 REQ-5), and a closed TCP
/// connection's port about as long as Linux keeps it in TIME_WAIT.
///
/// A port forward (`forward`) is a mapping made in advance and never released: what comes
/// to its outside port goes to its inside end (destination NAT, for a server behind the
/// gateway), and what that end sends from its port leaves from the forwarded one.
public struct NAT44: Sendable {
    public struct Inside: Hashable, Sendable {
        public var `protocol`: UInt8
        public var address: IPv4Address
        public var port: UInt16

        public init(protocol: UInt8, address: IPv4Address, port: UInt16) {
            self.protocol = `protocol`
            self.address = address
            self.port = port
        }
    }

    /// Why a mapping could not be made.
    public enum Failure: Error, Equatable, Sendable {
        /// Every port of the range is in use for that protocol (for a protocol without
        /// ports, its one mapping).
        case portsExhausted(protocol: UInt8)
        /// A port forward's outside port, or its inside end, is forwarded already.
        case alreadyForwarded(protocol: UInt8, port: UInt16)
    }

    struct Mapping: Sendable {
        var port: UInt16
        /// The engine's entries that translate to this mapping.
        var entries: Int
        /// When it was last used while it had no entries.
        var idleSince: Instant
        /// Whether it is in `lingering`.
        var lingers: Bool
        /// A port forward's: never released.
        var isForward = false
    }

    public let outsideAddress: IPv4Address
    public let ports: ClosedRange<UInt16>
    /// How long a mapping without entries is kept.
    public let linger: Duration
    private var outward: [Inside: Mapping] = [:]
    private var inward: [UInt32: Inside] = [:]
    /// Mappings that had no entries, with when to look at them again, roughly in that order
    /// (one refreshed while it waited goes to the back): a mapping is released between
    /// `linger` and twice `linger` after its last use.
    private var lingering: [(inside: Inside, due: Instant)] = []
    private var lingeringHead = 0
    /// Where the search for a free port resumes, per protocol.
    private var cursor: [UInt8: UInt16] = [:]
    public private(set) var exhaustions: UInt64 = 0
    /// Mappings freed after lingering.
    public private(set) var released: UInt64 = 0

    public init(outsideAddress: IPv4Address, ports: ClosedRange<UInt16> = 1024...65535,
                linger: Duration = .seconds(90)) {
        self.outsideAddress = outsideAddress
        self.ports = ports
        self.linger = linger
    }

    public var count: Int { outward.count }

    /// The engine's entries that translate to the mapping of `inside` (nil: no mapping).
    public func entries(of inside: Inside) -> Int? { outward[inside]?.entries }

    /// The outside port of `inside`, made if needed: the inside port itself when it is free
    /// (ports survive NAT where they can), else the next free one. A use at `now` restarts
    /// the lingering of a mapping without entries.
    public mutating func map(_ inside: Inside, now: Instant) throws(Failure) -> UInt16 {
        if let known = outward[inside] {
            if known.entries == 0 { idle(inside, since: now) }
            return known.port
        }
        // An ICMP echo's identifier is its port (RFC 5508). Other protocols without ports
        // have one mapping per protocol, at port 0: the inside host that holds it gets what
        // comes back to the outside address, and another is refused until it is released
        // (nothing that comes back could be told to be the other's).
        let hasPorts = inside.protocol == 6 || inside.protocol == 17 || inside.protocol == 1
        var candidate = ports.contains(inside.port) || !hasPorts ? inside.port : (cursor[inside.protocol] ?? ports.lowerBound)
        let size = Int(ports.upperBound) - Int(ports.lowerBound) + 1
        var tried = 0
        while inward[Self.slot(inside.protocol, candidate)] != nil {
            tried += 1
            if tried >= size || !hasPorts {
                exhaustions &+= 1
                throw .portsExhausted(protocol: inside.protocol)
            }
            candidate = candidate == ports.upperBound ? ports.lowerBound : candidate + 1
        }
        outward[inside] = Mapping(port: candidate, entries: 0, idleSince: now, lingers: false)
        inward[Self.slot(inside.protocol, candidate)] = inside
        cursor[inside.protocol] = candidate == ports.upperBound ? ports.lowerBound : candidate + 1
        // Until the engine announces its entry: a flow the table has no room for never does.
        idle(inside, since: now)
        return candidate
    }

    /// Forwards what comes to `outsidePort` (of `inside`'s protocol) to `inside`, and maps
    /// `inside` to it for what it sends, for as long as the NAT lives. Made before any
    /// traffic: the port must not be mapped yet, nor `inside`.
    public mutating func forward(outsidePort: UInt16, to inside: Inside) throws(Failure) {
        guard inward[Self.slot(inside.protocol, outsidePort)] == nil, outward[inside] == nil else {
            throw .alreadyForwarded(protocol: inside.protocol, port: outsidePort)
        }
        outward[inside] = Mapping(port: outsidePort, entries: 0, idleSince: .zero, lingers: false, isForward: true)
        inward[Self.slot(inside.protocol, outsidePort)] = inside
    }

    /// The outside port of `inside`, if mapped (nothing is made).
    public func port(of inside: Inside) -> UInt16? { outward[inside]?.port }

    /// The inside end of a reply to `outsidePort`, if mapped.
    public func reverse(protocol proto: UInt8, outsidePort: UInt16) -> Inside? {
        inward[Self.slot(proto, outsidePort)]
    }

    /// An engine entry that translates to the mapping of `inside` came to be.
    public mutating func entryBegan(_ inside: Inside) {
        outward[inside]?.entries += 1
    }

    /// An engine entry that translated to the mapping of `inside` went at `now`.
    public mutating func entryEnded(_ inside: Inside, now: Instant) {
        guard let m = outward[inside], m.entries > 0 else { return }
        outward[inside]!.entries -= 1
        if m.entries == 1 { idle(inside, since: now) }
    }

    /// Releases the mappings that have had no entries, and no use, for `linger`; returns how many.
    @discardableResult
    public mutating func releaseIdle(now: Instant) -> Int {
        var n = 0
        while lingeringHead < lingering.count, lingering[lingeringHead].due <= now {
            let inside = lingering[lingeringHead].inside
            lingeringHead += 1
            guard let m = outward[inside] else { continue }
            if m.entries > 0 {
                outward[inside]!.lingers = false
            } else if m.idleSince + linger <= now {
                release(inside)
                released &+= 1
                n += 1
            } else {
                lingering.append((inside, m.idleSince + linger))
            }
        }
        if lingeringHead >= 1024, lingeringHead * 2 >= lingering.count {
            lingering.removeFirst(lingeringHead)
            lingeringHead = 0
        }
        return n
    }

    /// Releases the mapping of `inside` now, whatever uses it (a port forward stays).
    public mutating func release(_ inside: Inside) {
        guard let m = outward[inside], !m.isForward else { return }
        outward[inside] = nil
        inward[Self.slot(inside.protocol, m.port)] = nil
    }

    private mutating func idle(_ inside: Inside, since now: Instant) {
        guard !outward[inside]!.isForward else { return }
        outward[inside]!.idleSince = now
        if !outward[inside]!.lingers {
            outward[inside]!.lingers = true
            lingering.append((inside, now + linger))
        }
    }

    private static func slot(_ proto: UInt8, _ port: UInt16) -> UInt32 { UInt32(proto) << 16 | UInt32(port) }
}
