import OffloadWire

/// Received data that arrived ahead of a gap, kept until the gap fills (RFC 9293 section
/// 3.10.7.4: segments are processed in sequence order), and the SACK blocks that describe
/// it (RFC 2018).
///
/// The bytes live in a ring of `capacity` bytes allocated once, indexed by sequence number
/// from `nextExpected` (RCV.NXT), so a segment is copied once into place and nothing is
/// allocated per segment. Which parts of the ring hold data is a short list of ranges,
/// sorted, disjoint and never touching. Bytes already held are kept when a segment
/// overlaps them (the first copy wins). In-order data is handed to `deliver` at once,
/// straight from the segment when nothing is queued. SYN and FIN are the caller's: this
/// queue sees only data.
public struct ReassemblyQueue: Sendable {
    public enum InsertError: Error, Hashable, Sendable, CustomStringConvertible {
        /// The segment would start a new range past the limit; nothing was kept.
        case tooManyRanges(limit: Int)

        public var description: String {
            switch self {
            case .tooManyRanges(let limit): "out-of-order segment dropped: already \(limit) separate ranges held"
            }
        }
    }

    /// What one segment did. `accepted + duplicate + beyondWindow` is its length.
    public struct Outcome: Hashable, Sendable {
        /// Bytes handed to `deliver`, this segment's and held ones it joined up with.
        public var delivered = 0
        /// Bytes of this segment not received before.
        public var accepted = 0
        /// Bytes of this segment already received (before RCV.NXT, or held).
        public var duplicate = 0
        /// Bytes past the window's right edge, dropped.
        public var beyondWindow = 0
        public init() {}
    }

    struct HeldRange: Sendable {
        var range: SequenceRange
        /// When a segment last touched it: SACK blocks go out most recent first.
        var lastArrival: UInt64
    }

    /// Bytes the ring holds: the largest receive window this queue can serve.
    public let capacity: Int
    /// At most this many separate held ranges.
    public let rangeLimit: Int
    /// RCV.NXT: the first byte not yet delivered.
    public private(set) var nextExpected: SequenceNumber
    var ring: [UInt8]
    /// The ring index of `nextExpected`.
    var head = 0
    var held: [HeldRange]
    var arrivals: UInt64 = 0

    /// `capacity` from 1 byte to 1 GiB (the largest window with scaling, RFC 7323).
    public init(nextExpected: SequenceNumber, capacity: Int, rangeLimit: Int = 16) {
        precondition(capacity > 0 && capacity <= 1 << 30, "ReassemblyQueue: capacity out of range")
        precondition(rangeLimit > 0, "ReassemblyQueue: rangeLimit must be positive")
        self.capacity = capacity
        self.rangeLimit = rangeLimit
        self.nextExpected = nextExpected
        ring = [UInt8](repeating: 0, count: capacity)
        held = []
        held.reserveCapacity(rangeLimit + 1)
    }

    public var isEmpty: Bool { held.isEmpty }

    /// The held ranges in sequence order.
    public var heldRanges: some RandomAccessCollection<SequenceRange> { held.lazy.map(\.range) }

    public var heldBytes: Int { held.reduce(0) { $0 + $1.range.count } }

    /// The SACK blocks to advertise: every held range, the most recently touched first
    /// (RFC 2018 section 4: first the block holding the segment that triggered the ACK,
    /// then the most recent others), at most `limit` (3 beside timestamps, else 4).
    public func sackBlocks(limit: Int = TCPSACKBlocks.capacity) -> TCPSACKBlocks {
        var blocks = TCPSACKBlocks()
        var newerThan = UInt64.max
        while blocks.count < min(limit, TCPSACKBlocks.capacity) {
            var newest: HeldRange?
            for h in held where h.lastArrival < newerThan && h.lastArrival >= (newest?.lastArrival ?? 0) {
                newest = h
            }
            guard let n = newest else { break }
            blocks.append(TCPSACKBlock(n.range))
            newerThan = n.lastArrival
        }
        return blocks
    }

    /// Takes in a data segment starting at `sequence`. Bytes before `nextExpected` are
    /// duplicates; bytes `window` or more past it (at most `capacity`) are dropped. Data
    /// that becomes in order, this segment's and any held data it reaches, goes to
    /// `deliver` in order (in one to three pieces) before this returns.
    /// The caller must not move the window's right edge left between calls (RFC 9293
    /// section 3.8.6: do not shrink the window), or held data may pass the window.
    public mutating func insert(_ segment: UnsafeRawBufferPointer, at sequence: SequenceNumber, window: Int? = nil,
                                deliver: (UnsafeRawBufferPointer) -> Void) throws(InsertError) -> Outcome {
        let window = min(window ?? capacity, capacity)
        precondition(window >= 0, "ReassemblyQueue: negative window")
        var outcome = Outcome()
        // Offsets from nextExpected; [start, end) is the part of the segment to place.
        let segmentStart = sequence.distance(from: nextExpected)
        var start = segmentStart, end = segmentStart + segment.count
        if start < 0 {
            outcome.duplicate = min(-start, segment.count)
            start = 0
        }
        if end > window {
            outcome.beyondWindow = end - max(window, start)
            end = window
        }
        guard start < end else { return outcome }
        let piece = { (from: Int, to: Int) in
            UnsafeRawBufferPointer(rebasing: segment[(from - segmentStart)..<(to - segmentStart)])
        }

        // In order, and short of anything held: straight from the segment.
        if start == 0 && (held.isEmpty || end < offset(of: held[0].range.lower)) {
            deliver(piece(0, end))
            advance(by: end)
            outcome.accepted = end
            outcome.delivered = end
            return outcome
        }

        // The held ranges this one overlaps or touches merge into one.
        var first = held.count, last = -1
        for (i, h) in held.enumerated() {
            let lower = offset(of: h.range.lower), upper = offset(of: h.range.upper)
            if upper < start { continue }
            if lower > end { break }
            first = min(first, i)
            last = i
        }
        let merging = last >= first ? last - first + 1 : 0
        if start > 0 && held.count - merging + 1 > rangeLimit { throw .tooManyRanges(limit: rangeLimit) }

        // Copy in the gaps between the held ranges it covers.
        var cursor = start, alreadyHeld = 0
        var mergedLower = start, mergedUpper = end
        if merging > 0 {
            for h in held[first...last] {
                let lower = offset(of: h.range.lower), upper = offset(of: h.range.upper)
                mergedLower = min(mergedLower, lower)
                mergedUpper = max(mergedUpper, upper)
                if lower > cursor { store(piece(cursor, min(lower, end)), at: cursor) }
                cursor = max(cursor, upper)
                alreadyHeld += max(0, min(end, upper) - max(start, lower))
            }
        }
        if cursor < end { store(piece(cursor, end), at: cursor) }
        outcome.duplicate += alreadyHeld
        outcome.accepted = end - start - alreadyHeld

        arrivals += 1
        let merged = HeldRange(range: SequenceRange(nextExpected + mergedLower, nextExpected + mergedUpper),
                               lastArrival: arrivals)
        if merging > 0 {
            held.replaceSubrange(first...last, with: CollectionOfOne(merged))
        } else {
            let at = held.firstIndex { offset(of: $0.range.lower) > start } ?? held.count
            held.insert(merged, at: at)
        }

        if mergedLower == 0 {
            let n = mergedUpper
            let tail = min(n, capacity - head)
            ring.withUnsafeBytes { ring in
                deliver(UnsafeRawBufferPointer(rebasing: ring[head..<(head + tail)]))
                if n > tail { deliver(UnsafeRawBufferPointer(rebasing: ring[0..<(n - tail)])) }
            }
            held.removeFirst()
            advance(by: n)
            outcome.delivered = n
        }
        return outcome
    }

    func offset(of s: SequenceNumber) -> Int { s.distance(from: nextExpected) }

    mutating func advance(by n: Int) {
        nextExpected += n
        head = (head + n) % capacity
    }

    /// Copies `bytes` into the ring at `offset` from `nextExpected`, wrapping at its end.
    mutating func store(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        let at = (head + offset) % capacity
        let tail = min(bytes.count, capacity - at)
        ring.withUnsafeMutableBytes { ring in
            ring.baseAddress!.advanced(by: at).copyMemory(from: bytes.baseAddress!, byteCount: tail)
            if bytes.count > tail {
                ring.baseAddress!.copyMemory(from: bytes.baseAddress!.advanced(by: tail), byteCount: bytes.count - tail)
            }
        }
    }
}
