import OffloadCore

/// What an RTP flow's receiver would report (RFC 3550): sequence gaps, reordering,
/// duplicates, loss, and interarrival jitter, kept per flow by the engine (B8).
public struct RTPFlowStatistics: Sendable, Equatable {
    /// RTP packets seen.
    public private(set) var packets: UInt64 = 0
    /// Forward jumps of more than one sequence number (each a run of missing packets).
    public private(set) var gaps: UInt64 = 0
    /// Packets that arrived after a later-numbered one.
    public private(set) var reordered: UInt64 = 0
    /// Packets whose sequence number equals the highest seen.
    public private(set) var duplicates: UInt64 = 0
    /// The SSRC of the stream (the first packet's); packets of another SSRC are not counted here.
    public private(set) var ssrc: UInt32 = 0
    /// Highest sequence number seen, extended with the count of wrap-arounds (RFC 3550 A.1).
    public private(set) var highestExtendedSequence: Int64 = 0
    private var firstExtendedSequence: Int64 = 0
    /// Jitter times 16, in timestamp units (the RFC 3550 A.8 integer form).
    private var scaledJitter: Int64 = 0
    private var lastTransit: Int64?

    public init() {}

    /// The RTP clock rate of a payload type (RFC 3551): 90 kHz for the static video types,
    /// 8 kHz for the static audio types and, as an assumption, for dynamic types (96-127),
    /// whose rate only signalling (SDP) could tell.
    public static func clockRate(payloadType: UInt8) -> Int {
        switch payloadType {
        case 25, 26, 28, 31, 32, 33, 34: return 90_000
        case 10, 11: return 44_100
        case 14: return 90_000
        default: return 8_000
        }
    }

    /// Whether a UDP payload looks like RTP: version 2, a whole fixed header, and a payload
    /// type outside 72-76 (those first bytes are RTCP's).
    public static func looksLikeRTP(_ payload: UnsafeRawBufferPointer) -> Bool {
        guard payload.count >= 12, payload[0] >> 6 == 2 else { return false }
        let marked = payload[1]
        return !(200...204).contains(marked) && !(72...76).contains(marked & 0x7f)
    }

    /// Packets the sender sent from the first to the highest sequence number seen.
    public var expected: Int64 { packets == 0 ? 0 : highestExtendedSequence - firstExtendedSequence + 1 }
    /// Expected minus received (RFC 3550 A.3); duplicates can make it negative.
    public var lost: Int64 { expected - Int64(packets) }
    /// Interarrival jitter in timestamp units (RFC 3550 section 6.4.1).
    public var jitter: Int64 { scaledJitter >> 4 }

    /// Records one packet: its RTP sequence number, timestamp and SSRC, when it arrived, and
    /// the payload's clock rate in Hz (8000 for G.711, 90000 for video). Returns false (and
    /// changes nothing) for a packet of another SSRC.
    @discardableResult
    public mutating func record(sequence: UInt16, timestamp: UInt32, ssrc: UInt32, arrival: Instant,
                                clockRate: Int) -> Bool {
        if packets == 0 {
            self.ssrc = ssrc
            highestExtendedSequence = Int64(sequence)
            firstExtendedSequence = highestExtendedSequence
        } else {
            guard ssrc == self.ssrc else { return false }
            // The signed 16-bit distance from the highest seen handles wrap-around both ways.
            let delta = Int64(Int16(bitPattern: sequence &- UInt16(truncatingIfNeeded: highestExtendedSequence)))
            if delta > 0 {
                if delta > 1 { gaps &+= 1 }
                highestExtendedSequence += delta
            } else if delta == 0 {
                duplicates &+= 1
            } else {
                reordered &+= 1
                firstExtendedSequence = min(firstExtendedSequence, highestExtendedSequence + delta)
            }
        }
        packets &+= 1

        // RFC 3550 A.8: transit = arrival - timestamp, both in timestamp units.
        let arrivalUnits = arrival.nanoseconds.multipliedFullWidth(by: Int64(clockRate))
        let arrivalTicks = Int64(truncatingIfNeeded: (Int128(arrivalUnits.high) << 64 | Int128(arrivalUnits.low)) / 1_000_000_000)
        let transit = arrivalTicks &- Int64(timestamp)
        if let last = lastTransit {
            // Timestamps wrap at 32 bits: take the difference modulo 2^32, signed.
            let d = abs(Int64(Int32(truncatingIfNeeded: transit &- last)))
            scaledJitter += d - ((scaledJitter + 8) >> 4)
        }
        lastTransit = transit
        return true
    }
}
