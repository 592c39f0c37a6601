import Foundation
import Synchronization
import OffloadCore
import OffloadEngine
import OffloadLink

/// The host software on a thread of its own: runs a `SlowPath` while the engine polls on
/// another thread. When there is nothing to do it spins briefly, then blocks on `wakeup`
/// (an eventfd the engine rings after handing it packets), so an idle software thread leaves
/// the core to others. After each step that sent something it rings `engineWakeup` if the
/// engine sleeps.
public final class SoftwareThread: @unchecked Sendable {
    // Unchecked: `slowPath` is touched only by the thread started here; the rest is
    // thread-safe (Poller, atomics).
    private let slowPath: SlowPath
    /// Rung by the engine when it has put packets in the exception queue.
    public let wakeup: Poller
    private let engineWakeup: Poller?
    private let stopping = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)
    private var thread: Thread?
    /// How long it keeps looking for work before it sleeps: a packet often follows soon (a
    /// SYN-ACK after a SYN), and waking a sleeping thread costs tens of microseconds.
    public var spinBeforeSleeping = Duration.microseconds(100)

    public init(slowPath: SlowPath, engineWakeup: Poller?) throws(LinkError) {
        self.slowPath = slowPath
        self.engineWakeup = engineWakeup
        wakeup = try Poller()
    }

    public func start() {
        let thread = Thread { [self] in
            let clock = MonotonicClock()
            var idleSince: Instant?
            while !stopping.load(ordering: .relaxed) {
                if slowPath.step(max: 32) > 0 {
                    idleSince = nil
                    engineWakeup?.wakeIfSleeping()
                    continue
                }
                let now = clock.now
                guard let since = idleSince else {
                    idleSince = now
                    continue
                }
                // A polite spin: the hosts around us run first if one waits for this core.
                sched_yield()
                if now - since >= spinBeforeSleeping {
                    // The timeout runs the policy's timers (ARP retries) while no packet comes.
                    try? wakeup.sleep(timeoutMilliseconds: 10) { slowPath.hasWork }
                    idleSince = nil
                }
            }
            finished.signal()
        }
        thread.name = "offload-software"
        self.thread = thread
        thread.start()
    }

    /// Stops the thread and waits for it to finish its current step.
    public func stop() {
        guard thread != nil else { return }
        stopping.store(true, ordering: .relaxed)
        wakeup.wake()
        finished.wait()
        thread = nil
    }
}
