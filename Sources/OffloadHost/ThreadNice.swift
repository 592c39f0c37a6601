#if os(Linux)
import Glibc
import COffloadShim

/// The calling thread's nice value: its weight when threads wait for a core. Linux keeps one
/// per thread and a new thread starts with its creator's, so a value set on the thread that
/// starts the others holds for them all.
///
/// A gateway's loops stand where the kernel's own forwarding would, and that runs as soon as
/// a packet arrives (in softirq). At nice 0 a woken engine thread waits for a core behind
/// the hosts it serves, and every packet waits with it; Open vSwitch's `ovs-ctl` starts its
/// forwarding daemon at nice -10 for the same reason.
public enum ThreadNice {
    public static let range: ClosedRange<Int32> = -20...19

    public struct Refused: Error, Equatable, CustomStringConvertible {
        public let value: Int32
        public let errno: Int32
        public var description: String {
            let reason = strerror(errno).map { String(cString: $0) } ?? "errno \(errno)"
            return "cannot run at nice \(value): \(reason)"
                + (errno == EACCES || errno == EPERM ? " (a value below the current one needs CAP_SYS_NICE)" : "")
        }
    }

    /// Sets the calling thread's nice value. A value outside `range` is refused with EINVAL.
    public static func set(_ value: Int32) throws(Refused) {
        guard range.contains(value) else { throw Refused(value: value, errno: EINVAL) }
        let rc = offload_thread_set_nice(value)
        guard rc == 0 else { throw Refused(value: value, errno: -rc) }
    }

    /// The calling thread's nice value.
    public static var current: Int32 {
        var value: Int32 = 0
        // getpriority on the calling thread cannot fail.
        _ = offload_thread_nice(&value)
        return value
    }
}
#endif
