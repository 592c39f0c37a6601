import Testing
import OffloadCore
import OffloadHost

@Suite struct NeighborCacheTests {
    static func ms(_ n: Int) -> Instant { Instant(nanoseconds: Int64(n) * 1_000_000) }

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
}
