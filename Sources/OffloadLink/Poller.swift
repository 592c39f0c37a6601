#if os(Linux)
import Glibc
import COffloadShim
import Synchronization

/// Blocks a poll loop until one of its link descriptors is readable or another thread calls
/// `wake()`: epoll (level-triggered) plus an eventfd.
///
/// `add`, `remove` and `wait` belong to the loop's thread; `wake` may be called from any
/// thread while the poller is alive.
public final class Poller: @unchecked Sendable {
    private let epollDescriptor: Int32
    private let wakeDescriptor: Int32
    private let ready: UnsafeMutablePointer<UInt64>
    /// Set while the loop's thread is in (or about to enter) `sleep`.
    private let sleeping = Atomic<Bool>(false)
    private static let wakeToken = UInt64.max
    private static let readyCapacity = 16

    public init() throws(LinkError) {
        let epoll = try SystemCall.check(offload_epoll_create(), "epoll_create1", "poller")
        let event = offload_eventfd_create()
        guard event >= 0 else {
            SystemCall.close(epoll)
            throw SystemCall.error("eventfd", -event, "poller")
        }
        let added = offload_epoll_add(epoll, event, Self.wakeToken)
        guard added == 0 else {
            SystemCall.close(event)
            SystemCall.close(epoll)
            throw SystemCall.error("epoll_ctl(ADD)", -added, "poller eventfd")
        }
        epollDescriptor = epoll
        wakeDescriptor = event
        ready = .allocate(capacity: Self.readyCapacity)
    }

    deinit {
        SystemCall.close(wakeDescriptor)
        SystemCall.close(epollDescriptor)
        ready.deallocate()
    }

    /// Watches `descriptor` for readability (a link's `capabilities.readinessDescriptor`).
    public func add(_ descriptor: Int32) throws(LinkError) {
        try SystemCall.check(offload_epoll_add(epollDescriptor, descriptor, UInt64(UInt32(bitPattern: descriptor))),
                             "epoll_ctl(ADD)", "descriptor \(descriptor)")
    }

    /// Stops watching `descriptor`.
    public func remove(_ descriptor: Int32) throws(LinkError) {
        try SystemCall.check(offload_epoll_remove(epollDescriptor, descriptor),
                             "epoll_ctl(DEL)", "descriptor \(descriptor)")
    }

    /// Waits until a watched descriptor is readable, `wake()` was called, or the timeout
    /// passes (-1: no timeout). True when something is ready or a wake-up came; false on
    /// timeout or a signal. A wake-up is consumed here.
    public func wait(timeoutMilliseconds: Int32) throws(LinkError) -> Bool {
        let n = offload_epoll_wait(epollDescriptor, ready, Int32(Self.readyCapacity), timeoutMilliseconds)
        if n == -EINTR { return false }
        try SystemCall.check(n, "epoll_wait", "poller")
        for i in 0..<Int(n) where ready[i] == Self.wakeToken {
            _ = offload_eventfd_drain(wakeDescriptor)
        }
        return n > 0
    }

    /// Wakes the thread blocked in `wait` (or makes its next `wait` return at once).
    public func wake() {
        _ = offload_eventfd_signal(wakeDescriptor)
    }

    /// Blocks like `wait`, unless `hasWork` says there is something to do once this thread
    /// has announced that it sleeps: a producer that puts work in a queue and then calls
    /// `wakeIfSleeping` can never leave it asleep with the work waiting. Returns false when
    /// `hasWork` found work, and it did not block.
    @discardableResult
    public func sleep(timeoutMilliseconds: Int32, unless hasWork: () -> Bool) throws(LinkError) -> Bool {
        sleeping.store(true, ordering: .sequentiallyConsistent)
        // Store, then load: without a full fence the other side's work could be missed here
        // while it misses the flag (`wakeIfSleeping` fences too).
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        defer { sleeping.store(false, ordering: .relaxed) }
        if hasWork() { return false }
        _ = try wait(timeoutMilliseconds: timeoutMilliseconds)
        return true
    }

    /// Whether the loop's thread sleeps (`sleep`) now.
    public var isSleeping: Bool { sleeping.load(ordering: .sequentiallyConsistent) }

    /// Wakes the loop's thread if it sleeps (`sleep`); costs no system call when it does not.
    public func wakeIfSleeping() {
        // The producer's store of its work must be seen before it reads the flag (see `sleep`).
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if sleeping.load(ordering: .sequentiallyConsistent) { wake() }
    }
}
#endif
