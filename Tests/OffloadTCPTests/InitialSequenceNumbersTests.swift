import Testing
import OffloadCore
import OffloadTCP

@Suite struct InitialSequenceNumbersTests {
    let generator = InitialSequenceNumbers(seed: 42)
    let a = IPv4Address(10, 0, 0, 1), b = IPv4Address(10, 0, 0, 2)
    let t0 = Instant(nanoseconds: 7_000_000_000)

    func isn(_ g: InitialSequenceNumbers? = nil, local: IPv4Address? = nil, localPort: UInt16 = 40_000,
             remote: IPv4Address? = nil, remotePort: UInt16 = 80, at t: Instant? = nil) -> SequenceNumber {
        (g ?? generator).next(local: local ?? a, localPort: localPort, remote: remote ?? b, remotePort: remotePort,
                              now: t ?? t0)
    }

    @Test func theSameTupleMovesForwardOneStepEveryFourMicroseconds() {
        let first = isn()
        #expect(isn() == first, "a function of the tuple and the time only")
        #expect(isn(at: t0 + .microseconds(4)).distance(from: first) == 1)
        #expect(isn(at: t0 + .seconds(1)).distance(from: first) == 250_000)
        #expect(isn(at: t0 + .seconds(60)).distance(from: first) == 15_000_000)
        // After 2^32 ticks (about 4.8 hours) the same number comes round again.
        #expect(isn(at: t0 + .microseconds(4 * (1 << 32))) == first)
    }

    @Test func eachTupleHasItsOwnOffset() {
        let reference = isn()
        let others = [
            isn(local: IPv4Address(10, 0, 0, 3)),
            isn(localPort: 40_001),
            isn(remote: IPv4Address(10, 0, 0, 4)),
            isn(remotePort: 81),
            isn(local: b, localPort: 80, remote: a, remotePort: 40_000), // the reverse direction
        ]
        for other in others { #expect(other != reference) }
        #expect(Set(others.map(\.rawValue)).count == others.count)
    }

    @Test func theSecretDecides() {
        let seeded = [UInt64(1), 2, 3].map { isn(InitialSequenceNumbers(seed: $0)) }
        #expect(Set(seeded.map(\.rawValue)).count == 3)
        let keyed = isn(InitialSequenceNumbers(secret: (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210)))
        let other = isn(InitialSequenceNumbers(secret: (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3211)))
        #expect(keyed != other)
        #expect(isn(InitialSequenceNumbers(seed: 42)) == isn(), "a seed gives the same secret every time")
    }
}
