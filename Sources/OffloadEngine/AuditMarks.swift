import OffloadCore

/// Proof that the engine handed a packet to the software (B7): a token the engine recorded,
/// out of band, with the flow the packet was classified as. The software can copy a mark
/// but cannot make one the engine will accept: tokens are unpredictable, each is accepted
/// once, and only for a frame that still belongs to the flow it was issued for. A packet
/// that is no flow's (ARP, a fragment, a header the engine cannot classify) gets no mark:
/// nothing but its bytes would tie a mark to it, so it is always tested.
public struct AuditMark: Hashable, Sendable {
    public let token: UInt64
    public init(token: UInt64) { self.token = token }
}

/// The engine's record of marks it issued: a preallocated table indexed by the low bits of
/// the token. A record overwritten by a newer mark makes the older mark stale, which is safe:
/// a stale mark only sends its packet through the compatibility test.
struct AuditMarkBook {
    private struct Record {
        var token: UInt64 = 0
        var key: FlowKey? = nil  // nil only in a record never issued
        var live = false
    }

    private var records: [Record]
    private let mask: UInt64
    private var random: SeededRandom
    private var next: UInt64 = 0

    init(capacity: Int, seed: UInt64) {
        precondition(capacity > 0 && capacity & (capacity - 1) == 0, "AuditMarkBook: capacity must be a power of two")
        records = Array(repeating: Record(), count: capacity)
        mask = UInt64(capacity - 1)
        random = SeededRandom(seed: seed)
    }

    /// Issues a mark for a packet classified as `key`.
    mutating func issue(for key: FlowKey) -> AuditMark {
        let index = next & mask
        next &+= 1
        let token = (random.next() & ~mask) | index
        records[Int(index)] = Record(token: token, key: key, live: true)
        return AuditMark(token: token)
    }

    /// Whether `mark` is one this book issued, not yet used, for the flow `key` the frame
    /// now has (a frame with no key has no flow, so no mark fits it). A mark is used up by
    /// this check, valid or not.
    mutating func redeem(_ mark: AuditMark, key: FlowKey?) -> Bool {
        let index = Int(mark.token & mask)
        let record = records[index]
        guard record.live, record.token == mark.token else { return false }
        records[index].live = false
        return key != nil && record.key == key
    }
}
