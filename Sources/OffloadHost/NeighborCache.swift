import OffloadCore

/// IPv4-to-Ethernet address resolution state (the ARP cache): resolved neighbours that
/// expire, resolutions in progress that are retried and then given up, and static entries.
/// An expired neighbour's address is kept (stale, as Linux's NUD_STALE) until its room is
/// needed: what was built with it (flow entries, offloaded connections) does not expire
/// with it, so a new address for it is still a move.
public struct NeighborCache: Sendable {
    public enum State: Equatable, Sendable {
        /// Known; valid until `expires`.
        case reachable(MACAddress, expires: Instant)
        /// Expired: not used to send any more, kept to tell a move.
        case stale(MACAddress)
        /// A request is out; `attempts` sent so far, the next one due at `retryAt`;
        /// `previous`: the address it had before it expired, if any.
        case incomplete(attempts: Int, retryAt: Instant, previous: MACAddress? = nil)
        /// Set by the operator (a static ARP entry): never expires, never evicted, and ARP
        /// does not change it.
        case permanent(MACAddress)
    }

    public struct Configuration: Sendable {
        /// How long a learned address stays valid.
        public var lifetime: Duration = .seconds(60)
        /// Time between requests for an address that has not answered.
        public var retryInterval: Duration = .seconds(1)
        /// Requests sent before a resolution fails.
        public var maxAttempts = 3
        /// Entries kept at most; when full, the resolved entry closest to expiry makes room.
        /// A quarter of them at most are resolutions in progress (`resolvingLimit`).
        public var capacity = 1024
        public init() {}
    }

    /// What `learn` did with an ARP packet's sender.
    public enum Learned: Equatable, Sendable {
        /// Nothing to change, or the entry added or refreshed (a first resolution included).
        case recorded
        /// A resolved neighbour's MAC address changed (a failover's gratuitous ARP, the
        /// address taken over by another machine): what was built with the old one is stale.
        case moved
        /// The table was full and the entry not added.
        case tableFull
    }

    public let configuration: Configuration
    public private(set) var entries: [IPv4Address: State] = [:]
    /// The entries that are resolutions in progress.
    public private(set) var resolvingCount = 0

    /// Anyone can start lookups, one for each address they send to that the cache does not
    /// know (an outside host, through the gateway, one per inside address): kept to a share
    /// of the table, they cannot push the resolved neighbours out of the rest.
    public var resolvingLimit: Int { max(1, configuration.capacity / 4) }

    public init(configuration: Configuration = Configuration()) { self.configuration = configuration }

    /// The address of `ip` if it is known and fresh.
    public func lookup(_ ip: IPv4Address, now: Instant) -> MACAddress? {
        switch entries[ip] {
        case .reachable(let mac, let expires)? where expires > now: return mac
        case .permanent(let mac)?: return mac
        default: return nil
        }
    }

    /// Records a static entry for `ip`, in place of whatever was known.
    public mutating func addPermanent(_ ip: IPv4Address, is mac: MACAddress) {
        set(ip, .permanent(mac))
    }

    /// Records what an ARP packet told us (RFC 826: update a known sender; add it when the
    /// packet was for us); a static entry stays as it is.
    @discardableResult
    public mutating func learn(_ ip: IPv4Address, is mac: MACAddress, now: Instant, add: Bool) -> Learned {
        guard ip != .any, !mac.isMulticast else { return .recorded }
        let known = entries[ip]
        guard add || known != nil else { return .recorded }
        if case .permanent? = known { return .recorded }
        if known == nil, entries.count >= configuration.capacity, !evictOne() { return .tableFull }
        set(ip, .reachable(mac, expires: now + configuration.lifetime))
        // Expired or not: what was built with the old address may still be in use.
        if let old = known.flatMap(Self.lastAddress), old != mac { return .moved }
        return .recorded
    }

    /// The address an entry holds or held: nil for a first resolution.
    private static func lastAddress(_ state: State) -> MACAddress? {
        switch state {
        case .reachable(let mac, _), .stale(let mac), .permanent(let mac): mac
        case .incomplete(_, _, let previous): previous
        }
    }

    /// Starts resolving `ip` if nothing is known or under way. Returns true when a request
    /// should be sent now.
    ///
    /// With `resolvingLimit` lookups in progress, the one that started first gives way (what
    /// waits for it fails). Refusing the new one instead would let a trickle of lookups,
    /// each kept for `maxAttempts` retries, refuse every legitimate one; replacing, a lookup
    /// is lost only to a flood of `resolvingLimit` others within its own round trip.
    public mutating func startResolving(_ ip: IPv4Address, now: Instant) -> Bool {
        switch entries[ip] {
        case .reachable(_, let expires)? where expires > now: return false
        case .incomplete?, .permanent?: return false
        default:
            if resolvingCount >= resolvingLimit {
                removeOldestResolution()
            } else if entries[ip] == nil, entries.count >= configuration.capacity, !evictOne() {
                return false
            }
            set(ip, .incomplete(attempts: 1, retryAt: now + configuration.retryInterval,
                                previous: entries[ip].flatMap(Self.lastAddress)))
            return true
        }
    }

    /// Advances timers. Returns the addresses to send another request for, and those whose
    /// resolution failed (removed from the table).
    public mutating func expire(now: Instant) -> (retry: [IPv4Address], failed: [IPv4Address]) {
        var retry: [IPv4Address] = [], failed: [IPv4Address] = []
        for (ip, state) in entries {
            switch state {
            case .reachable(let mac, let expires) where expires <= now:
                set(ip, .stale(mac))
            case .incomplete(let attempts, let retryAt, let previous) where retryAt <= now:
                if attempts >= configuration.maxAttempts {
                    set(ip, previous.map { .stale($0) })
                    failed.append(ip)
                } else {
                    set(ip, .incomplete(attempts: attempts + 1, retryAt: now + configuration.retryInterval,
                                        previous: previous))
                    retry.append(ip)
                }
            default: break
            }
        }
        return (retry.sorted(), failed.sorted())
    }

    /// When `expire` next has work to do.
    public var nextDeadline: Instant? {
        entries.values.compactMap { state -> Instant? in
            switch state {
            case .reachable(_, let expires): return expires
            case .incomplete(_, let retryAt, _): return retryAt
            case .stale, .permanent: return nil
            }
        }.min()
    }

    /// Drops a stale entry, or else the resolved entry closest to expiry. False when there
    /// is none (every entry is static or in progress).
    private mutating func evictOne() -> Bool {
        var victim: (IPv4Address, Instant)?
        for (ip, state) in entries {
            let expires: Instant
            switch state {
            case .stale: expires = Instant(nanoseconds: .min)
            case .reachable(_, let e): expires = e
            case .incomplete, .permanent: continue
            }
            if victim == nil || expires < victim!.1 || (expires == victim!.1 && ip < victim!.0) {
                victim = (ip, expires)
            }
        }
        guard let v = victim else { return false }
        set(v.0, nil)
        return true
    }

    /// Drops the resolution in progress that started first.
    private mutating func removeOldestResolution() {
        var oldest: (IPv4Address, Instant)?
        for (ip, state) in entries {
            guard case .incomplete(let attempts, let retryAt, _) = state else { continue }
            let started = retryAt - configuration.retryInterval * attempts
            if oldest == nil || started < oldest!.1 || (started == oldest!.1 && ip < oldest!.0) {
                oldest = (ip, started)
            }
        }
        if let (ip, _) = oldest { set(ip, nil) }
    }

    /// Every change of an entry goes through here, which keeps `resolvingCount`.
    private mutating func set(_ ip: IPv4Address, _ state: State?) {
        if case .incomplete? = entries[ip] { resolvingCount -= 1 }
        if case .incomplete? = state { resolvingCount += 1 }
        entries[ip] = state
    }
}
