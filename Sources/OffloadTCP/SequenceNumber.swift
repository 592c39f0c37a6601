/// A position in TCP's 32-bit sequence space (RFC 9293 section 3.4), where arithmetic wraps
/// modulo 2^32.
///
/// Comparison follows RFC 1982 serial-number arithmetic: `a < b` when `b` is ahead of `a`
/// by 1 to 2^31 - 1. This is deliberately **not** `Comparable`: the relation is not a
/// total order, so sorting or `min`/`max` over it would silently misbehave. Pitfalls:
/// - it is not transitive over long spans: `0 < 0x7000_0000 < 0xE000_0000 < 0`;
/// - two numbers exactly 2^31 apart are unordered: neither `<` nor `>` holds (RFC 1982
///   leaves that case undefined; Linux's `before()` says both are before each other);
/// - it is only meaningful between numbers within 2^31 of each other, which TCP guarantees
///   for anything inside one window (windows are at most 2^30 with scaling, RFC 7323).
/// To order many numbers, order their offsets from one base (`distance(from:)`), as the
/// reassembly queue and the scoreboard do with `rcv_nxt` and `snd_una`.
public struct SequenceNumber: Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32

    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    @inlinable public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    /// The signed number of bytes from `base` forward to `self`: in -2^31 ..< 2^31.
    /// `(a + n).distance(from: a) == n` for any `n` in that range.
    @inlinable
    public func distance(from base: SequenceNumber) -> Int {
        Int(Int32(bitPattern: rawValue &- base.rawValue))
    }

    /// The signed number of bytes from `self` forward to `other`.
    @inlinable
    public func distance(to other: SequenceNumber) -> Int { other.distance(from: self) }

    /// Moves by `length` bytes (negative moves back), wrapping. A length outside
    /// -2^31 ..< 2^31 has no meaning in sequence space and traps.
    @inlinable
    public static func + (a: SequenceNumber, length: Int) -> SequenceNumber {
        precondition(length >= Int(Int32.min) && length <= Int(Int32.max), "SequenceNumber: length out of range")
        return SequenceNumber(rawValue: a.rawValue &+ UInt32(truncatingIfNeeded: length))
    }

    @inlinable
    public static func - (a: SequenceNumber, length: Int) -> SequenceNumber { a + (-length) }

    /// The signed distance `b` to `a`, the same as `a.distance(from: b)`.
    @inlinable
    public static func - (a: SequenceNumber, b: SequenceNumber) -> Int { a.distance(from: b) }

    @inlinable public static func += (a: inout SequenceNumber, length: Int) { a = a + length }

    /// `a` is before `b`: `b` is 1 to 2^31 - 1 bytes ahead of `a`.
    @inlinable
    public static func < (a: SequenceNumber, b: SequenceNumber) -> Bool {
        let ahead = b.rawValue &- a.rawValue
        return ahead != 0 && ahead < 0x8000_0000
    }
    @inlinable public static func > (a: SequenceNumber, b: SequenceNumber) -> Bool { b < a }
    @inlinable public static func <= (a: SequenceNumber, b: SequenceNumber) -> Bool { a == b || a < b }
    @inlinable public static func >= (a: SequenceNumber, b: SequenceNumber) -> Bool { a == b || b < a }

    /// The later of two numbers within 2^31 of each other (`a` when they are unordered).
    @inlinable
    public static func later(_ a: SequenceNumber, _ b: SequenceNumber) -> SequenceNumber { a < b ? b : a }

    /// The earlier of two numbers within 2^31 of each other (`a` when they are unordered).
    @inlinable
    public static func earlier(_ a: SequenceNumber, _ b: SequenceNumber) -> SequenceNumber { b < a ? b : a }

    /// `lower <= self < upper` in sequence space (RFC 9293's window tests), the range taken
    /// forward from `lower` (empty when `lower == upper`). Exact for spans up to 2^32 - 1.
    @inlinable
    public func isIn(_ lower: SequenceNumber, _ upper: SequenceNumber) -> Bool {
        rawValue &- lower.rawValue < upper.rawValue &- lower.rawValue
    }

    public var description: String { String(rawValue) }
}
