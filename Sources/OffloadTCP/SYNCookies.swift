import OffloadCore

/// Stateless SYN cookies (RFC 4987 section 3.6), for when the listen queue is full: the
/// listener keeps nothing for a SYN and answers with a SYN-ACK whose sequence number (our
/// ISN) is the cookie. The ACK that completes the handshake brings it back, plus one, in its
/// acknowledgment number, and the connection is rebuilt from the cookie alone.
///
/// Layout, in Linux's spirit (`secure_tcp_syn_cookie`):
///
///     cookie = offset(4-tuple, client ISN) + (counter mod 4) << 30 | MSS index << 28 | mac
///
/// - `counter` counts 64-second steps of `now`; a cookie minted in the current step or the
///   one before is accepted, so it lives at least 64 s and at most 128 s (Linux allows up
///   to two 60-second steps). Two low bits tell the two apart and reject the next two
///   steps without hashing.
/// - The MSS index points into `mssTable`: the SYN's MSS option is the one option that
///   matters most and fits in two bits. Window scaling and SACK are lost (the caller
///   offers neither when answering with a cookie).
/// - `mac` is 28 bits of SipHash-2-4 over the 4-tuple, the client's ISN, the full counter
///   and the MSS index, under our secret: a forged or altered ACK passes with probability
///   about 2^-28 per try.
/// - `offset`, another SipHash of the 4-tuple and the client's ISN, hides the counter and
///   index bits, so that a cookie looks like any other ISN from outside.
public struct SYNCookies: Sendable {
    /// The MSS values a cookie can carry (Linux's IPv4 `msstab`): the IPv4 default (RFC 9293
    /// section 3.7.1), and the usual values behind tunnels, PPPoE and plain Ethernet.
    public static let mssTable: [UInt16] = [536, 1300, 1440, 1460]
    /// One counter step: 64 s in nanoseconds.
    static let step: Int64 = 64_000_000_000
    /// Steps a cookie may be behind the current one.
    static let maximumAge: Int64 = 1
    static let macMask: UInt32 = (1 << 28) - 1

    let key: (UInt64, UInt64)

    /// `secret` from a cryptographic source (`SystemRandomNumberGenerator`); changing it
    /// invalidates the cookies in flight.
    public init(secret: (UInt64, UInt64)) { key = secret }

    /// A secret derived from `seed`, for the simulator only. Another stream than
    /// `InitialSequenceNumbers(seed:)` draws from the same seed, so the two never share a key.
    public init(seed: UInt64) {
        var random = SeededRandom(seed: seed ^ 0x5359_4e43_4f4f_4b49) // "SYNCOOKI"
        key = (random.next(), random.next())
    }

    /// Our ISN for the SYN-ACK; `mss` is rounded down to the table (the encoded value is
    /// returned too). An MSS below the table's least, 536, is encoded as 536, as Linux does.
    public func cookie(local: IPv4Address, localPort: UInt16, remote: IPv4Address, remotePort: UInt16,
                       clientISN: SequenceNumber, mss: UInt16, now: Instant) -> (isn: SequenceNumber, mss: UInt16) {
        let index = Self.mssTable.lastIndex { $0 <= mss } ?? 0
        let counter = Self.counter(at: now)
        let tuple = Self.tupleWords(local, localPort, remote, remotePort, clientISN)
        let value = UInt32(truncatingIfNeeded: counter & 3) << 30 | UInt32(index) << 28
            | mac(tuple, counter: counter, index: index)
        return (SequenceNumber(rawValue: offset(tuple) &+ value), Self.mssTable[index])
    }

    /// For the ACK completing the handshake: `acknowledgment` is the ACK's ack number (our
    /// ISN + 1), `sequence` its seq number (client ISN + 1). Returns the MSS encoded, or nil
    /// for a cookie that is forged or too old.
    public func check(local: IPv4Address, localPort: UInt16, remote: IPv4Address, remotePort: UInt16,
                      sequence: SequenceNumber, acknowledgment: SequenceNumber, now: Instant) -> UInt16? {
        let tuple = Self.tupleWords(local, localPort, remote, remotePort, sequence - 1)
        let value = (acknowledgment - 1).rawValue &- offset(tuple)
        let current = Self.counter(at: now)
        // Steps since the cookie was minted, from the two counter bits it carries: 0 to 3.
        let age = (current &- Int64(value >> 30)) & 3
        guard age <= Self.maximumAge else { return nil }
        let index = Int(value >> 28 & 3)
        guard value & Self.macMask == mac(tuple, counter: current - age, index: index) else { return nil }
        return Self.mssTable[index]
    }

    static func counter(at now: Instant) -> Int64 { now.nanoseconds / step }

    /// The 4-tuple and the client's ISN in two words, hashed by both functions below.
    static func tupleWords(_ local: IPv4Address, _ localPort: UInt16, _ remote: IPv4Address, _ remotePort: UInt16,
                           _ clientISN: SequenceNumber) -> (UInt64, UInt64) {
        (UInt64(local.rawValue) << 32 | UInt64(remote.rawValue),
         UInt64(localPort) << 48 | UInt64(remotePort) << 32 | UInt64(clientISN.rawValue))
    }

    /// 16 bytes hashed; `mac` hashes 24, so the two never hash the same message.
    func offset(_ tuple: (UInt64, UInt64)) -> UInt32 {
        var h = SipHash24(key: key)
        h.append(tuple.0)
        h.append(tuple.1)
        return UInt32(truncatingIfNeeded: h.finalize())
    }

    func mac(_ tuple: (UInt64, UInt64), counter: Int64, index: Int) -> UInt32 {
        var h = SipHash24(key: key)
        h.append(tuple.0)
        h.append(tuple.1)
        h.append(UInt64(bitPattern: counter) << 2 | UInt64(index))
        return UInt32(truncatingIfNeeded: h.finalize()) & Self.macMask
    }
}
