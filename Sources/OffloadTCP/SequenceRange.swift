import OffloadWire

/// A half-open span of sequence space, `[lower, upper)`, walked forward from `lower`.
/// At most 2^31 - 1 bytes long, so its ends stay ordered. SACK blocks have this shape
/// (RFC 2018: left edge, and the sequence number after the right edge).
public struct SequenceRange: Hashable, Sendable, CustomStringConvertible {
    public var lower: SequenceNumber
    public var upper: SequenceNumber

    /// `upper` must not be before `lower`.
    @inlinable
    public init(_ lower: SequenceNumber, _ upper: SequenceNumber) {
        precondition(lower <= upper, "SequenceRange: upper before lower")
        self.lower = lower
        self.upper = upper
    }

    @inlinable
    public init(_ lower: SequenceNumber, count: Int) {
        precondition(count >= 0, "SequenceRange: negative count")
        self.init(lower, lower + count)
    }

    @inlinable public var count: Int { upper.distance(from: lower) }
    @inlinable public var isEmpty: Bool { lower == upper }

    @inlinable public func contains(_ s: SequenceNumber) -> Bool { s.isIn(lower, upper) }

    /// Both non-empty and sharing at least one byte.
    @inlinable
    public func overlaps(_ other: SequenceRange) -> Bool {
        !isEmpty && !other.isEmpty && lower < other.upper && other.lower < upper
    }

    /// The part of `self` inside `other`, or nil when they share no byte.
    @inlinable
    public func clamped(to other: SequenceRange) -> SequenceRange? {
        guard overlaps(other) else { return nil }
        return SequenceRange(SequenceNumber.later(lower, other.lower), SequenceNumber.earlier(upper, other.upper))
    }

    public var description: String { "[\(lower), \(upper))" }
}

extension SequenceRange {
    /// A SACK block as sent, if its right edge is not before its left edge.
    @inlinable
    public init?(_ block: TCPSACKBlock) {
        let lower = SequenceNumber(block.left), upper = SequenceNumber(block.right)
        guard lower <= upper else { return nil }
        self.init(lower, upper)
    }
}

extension TCPSACKBlock {
    @inlinable
    public init(_ range: SequenceRange) { self.init(left: range.lower.rawValue, right: range.upper.rawValue) }
}
