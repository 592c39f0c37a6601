import OffloadCore
import OffloadEngine
@testable import OffloadHost
import Testing

@Suite struct FlowActionCacheTests {
    static func key(_ i: Int) -> FlowKey {
        FlowKey(ingressPort: 0, protocol: 17, source: IPv4Address(rawValue: 0x0a00_0000 | UInt32(i >> 16)),
                destination: IPv4Address(10, 9, 9, 9), sourcePort: UInt16(truncatingIfNeeded: i), destinationPort: 53)
    }

    static func forward(_ port: UInt16) -> FlowAction {
        .forward(.init(outputPort: port, destinationMAC: .local(1), sourceMAC: .local(2),
                       translatedSource: IPv4Address(192, 0, 2, 1), translatedSourcePort: port))
    }

    /// One line each; plain values only, so the zeroed pages the cache is mapped from are
    /// empty ways.
    @Test func aWayIsOneCacheLineOfPlainValues() {
        #expect(MemoryLayout<FlowActionCache.Way>.stride == 64)
        #expect(_isPOD(FlowActionCache.Way.self))
    }

    @Test func remembersWhatWasDecidedAndTheLatestDecision() {
        let cache = FlowActionCache(buckets: 64, seed: 1)
        #expect(cache[Self.key(1)] == nil)
        cache.record(Self.forward(7), for: Self.key(1))
        cache.record(.drop, for: Self.key(2))
        #expect(cache[Self.key(1)] == Self.forward(7))
        #expect(cache[Self.key(2)] == .drop)
        cache.record(Self.forward(8), for: Self.key(1))
        #expect(cache[Self.key(1)] == Self.forward(8))
    }

    /// One bucket: every key shares its two ways, so a third flow replaces the older of the
    /// two, and a flow decided again counts as new.
    @Test func aFullBucketLosesItsOlderWay() {
        let cache = FlowActionCache(buckets: 1, seed: 1)
        cache.record(Self.forward(1), for: Self.key(1))
        cache.record(Self.forward(2), for: Self.key(2))
        cache.record(Self.forward(1), for: Self.key(1))
        cache.record(Self.forward(3), for: Self.key(3))
        #expect(cache[Self.key(2)] == nil)
        #expect(cache[Self.key(1)] == Self.forward(1) && cache[Self.key(3)] == Self.forward(3))
    }

    /// The flows being set up at once, up to an exception queue's worth, nearly all stay:
    /// with 4,096 in flight and eight buckets for each, under 1% are lost.
    @Test func theFlowsInFlightStay() {
        let inFlight = 4096
        let cache = FlowActionCache(buckets: 8 * inFlight, seed: 0x1234_5678)
        var lost = 0
        for i in 0..<200_000 {
            cache.record(Self.forward(UInt16(truncatingIfNeeded: i)), for: Self.key(i))
            if i >= inFlight, cache[Self.key(i - inFlight)] == nil { lost += 1 }
        }
        #expect(lost * 100 < 200_000 - inFlight, "\(lost) lost")
    }
}
