import COffloadShim

/// A point in time: nanoseconds since an arbitrary origin (the clock's own).
public struct Instant: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var nanoseconds: Int64

    @inlinable public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    // Computed and inlinable: a stored global would cost a call to its lazy initializer per use.
    @inlinable public static var zero: Instant { Instant(nanoseconds: 0) }

    @inlinable
    public static func + (t: Instant, d: Duration) -> Instant {
        Instant(nanoseconds: t.nanoseconds &+ d.nanoseconds)
    }
    @inlinable
    public static func - (t: Instant, d: Duration) -> Instant {
        Instant(nanoseconds: t.nanoseconds &- d.nanoseconds)
    }
    @inlinable
    public static func - (a: Instant, b: Instant) -> Duration {
        .nanoseconds(a.nanoseconds &- b.nanoseconds)
    }
    @inlinable
    public static func < (a: Instant, b: Instant) -> Bool { a.nanoseconds < b.nanoseconds }

    public var description: String {
        let ms = Double(nanoseconds) / 1e6
        return "\(ms)ms"
    }
}

extension Duration {
    /// The duration in whole nanoseconds (saturating at the Int64 range, about 292 years).
    @inlinable
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (ns, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return ns &+ attoseconds / 1_000_000_000
    }
}

/// Where the time comes from: the real monotonic clock, or a virtual one that a simulator
/// advances. Read it once per burst, not once per packet.
public protocol Clock: AnyObject, Sendable {
    var now: Instant { get }
}

/// CLOCK_MONOTONIC.
public final class MonotonicClock: Clock {
    public init() {}
    @inlinable public var now: Instant { Instant(nanoseconds: offload_monotonic_ns()) }
}

/// Time that moves only when told to. Deterministic: the simulator owns it.
public final class VirtualClock: Clock, @unchecked Sendable {
    // Unchecked: a virtual clock is driven by one thread (the simulator's).
    public private(set) var now: Instant

    public init(start: Instant = .zero) { now = start }

    /// Moves time forward by `d` (never backward).
    public func advance(by d: Duration) {
        let ns = d.nanoseconds
        precondition(ns >= 0, "VirtualClock: time cannot go backward")
        now.nanoseconds &+= ns
    }

    /// Moves time forward to `t` if `t` is later than now.
    public func advance(to t: Instant) {
        if t > now { now = t }
    }
}
