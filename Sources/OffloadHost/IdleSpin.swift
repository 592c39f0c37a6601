#if os(Linux)
import Glibc
import OffloadCore

/// How a poll loop waits for work: after a round with nothing done it keeps polling,
/// yielding the core to any thread that waits for it, and sleeps only once it has been idle
/// for `spin`. Waking a sleeping thread costs tens of microseconds, and the next frame often
/// comes sooner: a SYN-ACK after a SYN, or the ACK a sender whose window is full waits for.
/// The engine's loop, the software's thread and a host's loop all wait this way.
public struct IdleSpin: Sendable {
    /// The loops' spin unless told otherwise (`--spin` on the command line).
    public static let defaultMicroseconds: UInt32 = 100
    public static var defaultSpin: Duration { .microseconds(Int64(defaultMicroseconds)) }

    public var spin: Duration
    private var idleSince: Instant?

    public init(spin: Duration) {
        self.spin = spin
    }

    /// After a round of the loop: whether to sleep now. A round that did work (or left work
    /// due at once) starts the idle time over.
    public mutating func shouldSleep(worked: Bool, now: Instant) -> Bool {
        guard !worked else {
            idleSince = nil
            return false
        }
        guard let since = idleSince else {
            idleSince = now
            return false
        }
        // A polite spin: the hosts around us run first if one waits for this core.
        sched_yield()
        guard now - since >= spin else { return false }
        idleSince = nil
        return true
    }
}
#endif
