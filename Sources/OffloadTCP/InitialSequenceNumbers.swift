import OffloadCore

/// Initial sequence numbers as RFC 6528 section 3 builds them: ISN = M + F(4-tuple, secret),
/// where M is a timer ticking every 4 microseconds and F is SipHash-2-4 keyed by a secret.
///
/// The timer keeps successive connections of one 4-tuple moving forward through sequence
/// space (so an old duplicate segment is unlikely to fall into a new incarnation's
/// window, RFC 9293 section 3.4.1); the keyed hash gives each 4-tuple its own offset that
/// an off-path attacker cannot guess, so the ISNs of other connections reveal nothing.
public struct InitialSequenceNumbers: Sendable {
    let key: (UInt64, UInt64)

    /// `secret` should come from a cryptographic source (`SystemRandomNumberGenerator`)
    /// and stay the same for the host's lifetime: changing it breaks the monotonic
    /// property for 4-tuples in use.
    public init(secret: (UInt64, UInt64)) { key = secret }

    /// A secret derived from `seed`: reproducible, for the simulator only.
    public init(seed: UInt64) {
        var random = SeededRandom(seed: seed)
        key = (random.next(), random.next())
    }

    public func next(local: IPv4Address, localPort: UInt16, remote: IPv4Address, remotePort: UInt16,
                     now: Instant) -> SequenceNumber {
        // M: 4 µs ticks; wraps in about 4.8 hours (2^32 * 4 µs), as RFC 6528 intends.
        let m = UInt32(truncatingIfNeeded: now.nanoseconds / 4_000)
        var f = SipHash24(key: key)
        f.append(UInt64(local.rawValue) << 32 | UInt64(remote.rawValue))
        f.append(UInt32(localPort) << 16 | UInt32(remotePort))
        return SequenceNumber(rawValue: m &+ UInt32(truncatingIfNeeded: f.finalize()))
    }
}
