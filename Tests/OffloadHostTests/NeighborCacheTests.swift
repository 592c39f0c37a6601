import Testing
import OffloadCore
import OffloadHost

@Suite struct NeighborCacheTests {
    static func ms(_ n: Int) -> Instant { Instant(nanoseconds: Int64(n) * 1_000_000) }

    /// An outside host can make the gateway look up one inside address per address it sends
    /// to. A flood of lookups used to evict the resolved neighbours one by one to make room,
    /// then fill the table, after which every lookup failed at once (held packets answered
    /// with host unreachable). The lookups in progress now take a quarter of the table at
    /// most, the oldest giving way.
    @Test func aFloodOfLookupsLeavesResolvedNeighboursAndRoomForALegitimateOne() {
        var config = NeighborCache.Configuration()
        config.capacity = 16
        var cache = NeighborCache(configuration: config)
        let router = IPv4Address(10, 2, 0, 254)
        cache.learn(router, is: .local(0xfe), now: .zero, add: true)
        for i in 0..<200 {
            _ = cache.startResolving(IPv4Address(10, 1, UInt8(i / 256), UInt8(i % 256)), now: Self.ms(i))
        }
        #expect(cache.lookup(router, now: Self.ms(200)) == .local(0xfe), "the resolved neighbour stays")
        let legitimate = IPv4Address(10, 1, 9, 9)
        let started = cache.startResolving(legitimate, now: Self.ms(200))
        #expect(started, "a legitimate lookup starts")
        let resolving = cache.entries.values.filter { if case .incomplete = $0 { true } else { false } }.count
        #expect(resolving == cache.resolvingCount && resolving == 4 && cache.entries.count == 5)
        // The oldest lookups gave way; the legitimate one is answered like any.
        #expect(cache.entries[IPv4Address(10, 1, 0, 0)] == nil && cache.entries[IPv4Address(10, 1, 0, 199)] != nil)
        cache.learn(legitimate, is: .local(0x99), now: Self.ms(201), add: true)
        #expect(cache.lookup(legitimate, now: Self.ms(201)) == .local(0x99) && cache.resolvingCount == 3)
    }

    /// Only a resolved neighbour's new MAC address is a move (the flows' entries hold the
    /// old one); a first resolution or a refresh is not.
    @Test func onlyANewAddressForAResolvedNeighbourIsAMove() {
        var cache = NeighborCache()
        let server = IPv4Address(10, 2, 0, 2)
        _ = cache.startResolving(server, now: .zero)
        let resolved = cache.learn(server, is: .local(0x51), now: .zero, add: true)
        let refreshed = cache.learn(server, is: .local(0x51), now: Self.ms(1), add: false)
        let moved = cache.learn(server, is: .local(0x52), now: Self.ms(2), add: false)
        #expect(resolved == .recorded && refreshed == .recorded && moved == .moved)
        #expect(cache.lookup(server, now: Self.ms(2)) == .local(0x52))
    }

    /// A neighbour whose entry expired still has its old address in use (the flows' entries,
    /// offloaded connections): a new address for it is a move, whether it comes unasked (a
    /// failover's gratuitous ARP) or answers a new lookup. The entry was removed at expiry,
    /// and either was taken for a first resolution, so the move went unnoticed.
    @Test func aNewAddressAfterTheEntryExpiredIsAMove() {
        var cache = NeighborCache()
        let server = IPv4Address(10, 2, 0, 2), router = IPv4Address(10, 2, 0, 1)
        cache.learn(server, is: .local(0x51), now: .zero, add: true)
        cache.learn(router, is: .local(0xfe), now: .zero, add: true)
        let later = Instant.zero + .seconds(61)
        _ = cache.expire(now: later)
        #expect(cache.lookup(server, now: later) == nil && cache.nextDeadline == nil, "expired: not used, nothing to time")
        let unasked = cache.learn(server, is: .local(0x52), now: later, add: false)
        #expect(unasked == .moved)
        #expect(cache.lookup(server, now: later) == .local(0x52))
        let started = cache.startResolving(router, now: later)
        #expect(started, "the expired router is looked up again")
        let answered = cache.learn(router, is: .local(0xfd), now: later, add: true)
        #expect(answered == .moved)
    }

    /// Stale entries give their room first.
    @Test func staleEntriesAreEvictedFirst() {
        var config = NeighborCache.Configuration()
        config.capacity = 2
        var cache = NeighborCache(configuration: config)
        let a = IPv4Address(10, 0, 0, 1), b = IPv4Address(10, 0, 0, 2), c = IPv4Address(10, 0, 0, 3)
        cache.learn(a, is: .local(1), now: .zero, add: true)
        _ = cache.expire(now: .zero + .seconds(61))
        cache.learn(b, is: .local(2), now: .zero + .seconds(61), add: true)
        let added = cache.learn(c, is: .local(3), now: .zero + .seconds(62), add: true)
        #expect(added == .recorded)
        #expect(cache.entries[a] == nil && cache.entries[b] != nil && cache.entries[c] != nil)
    }
}
