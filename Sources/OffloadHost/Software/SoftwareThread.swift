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
    /// Spins before blocking: a burst usually follows a burst.
    public var spinsBeforeBlocking = 200

    public init(slowPath: SlowPath, engineWakeup: Poller?) throws(LinkError) {
        self.slowPath = slowPath
        self.engineWakeup = engineWakeup
        wakeup = try Poller()
    }

    public func start() {
        let thread = Thread { [self] in
            var idle = 0
            while !stopping.load(ordering: .relaxed) {
                if slowPath.step(max: 32) > 0 {
                    idle = 0
                    engineWakeup?.wakeIfSleeping()
                } else if idle < spinsBeforeBlocking {
                    idle += 1
                } else {
                    // The timeout runs the policy's timers (ARP retries) while no packet comes.
                    try? wakeup.sleep(timeoutMilliseconds: 10) { slowPath.hasWork }
                    idle = 0
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
