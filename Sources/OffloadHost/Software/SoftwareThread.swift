import Foundation
import Synchronization
import OffloadCore
import OffloadEngine
import OffloadLink
import COffloadShim

/// The host software on a thread of its own: runs a `SlowPath` while the engine polls on
/// another thread. When there is nothing to do it spins briefly, then blocks on `wakeup`
/// (an eventfd the engine rings after handing it packets), so an idle software thread leaves
/// the core to others. After each step that sent something it rings `engineWakeup` if the
/// engine sleeps.
///
/// While it sleeps, the engine's thread may run a step itself (`stepIfAsleep`): a new flow
/// that comes alone (a connection's SYN) then waits for no wake-up, which costs tens of
/// microseconds; a burst of them still wakes this thread and is handled here, beside the
/// engine. One thread steps at a time: the turn is taken with acquire and given back with
/// release, so each step sees all that the one before it did.
public final class SoftwareThread: @unchecked Sendable {
    // Unchecked: `slowPath` is touched only by whichever thread holds `turn`; the rest is
    // thread-safe (Poller, atomics).
    private let slowPath: SlowPath
    /// Held by the thread running a step.
    private let turn = Atomic<Bool>(false)
    /// Rung by the engine when it has put packets in the exception queue.
    public let wakeup: Poller
    private let engineWakeup: Poller?
    private let stopping = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)
    private var thread: Thread?
    /// Whether the software should have a thread of its own where the process may run on
    /// `cpus` CPUs: only with more than two. On two, the hosts a gateway serves need the
    /// cores too, and a second spinning thread takes one from them: measured in connection
    /// storms and TCP streams between two namespaces, the gateway did better on one thread in
    /// 17 of 24 alternating comparisons (BENCHMARKS.md, 2026-12-03).
    public static func wantedByDefault(cpus: Int) -> Bool { cpus > 2 }

    /// The CPUs this thread may run on (its affinity mask); nil if it cannot be read.
    public static var availableCPUs: Int? {
        let n = offload_cpus_available()
        return n > 0 ? Int(n) : nil
    }

    /// How long it keeps looking for work before it sleeps: a packet often follows soon (a
    /// SYN-ACK after a SYN), and waking a sleeping thread costs tens of microseconds.
    public var spinBeforeSleeping = IdleSpin.defaultSpin

    public init(slowPath: SlowPath, engineWakeup: Poller?) throws(LinkError) {
        self.slowPath = slowPath
        self.engineWakeup = engineWakeup
        wakeup = try Poller()
    }

    public func start() {
        // A thread stopped before may be started again.
        stopping.store(false, ordering: .relaxed)
        let thread = Thread { [self] in
            let clock = MonotonicClock()
            var idle = IdleSpin(spin: spinBeforeSleeping)
            while !stopping.load(ordering: .relaxed) {
                // The engine holds the turn for one step at most.
                while !takeTurn() {}
                let done = slowPath.step(max: 32)
                giveTurn()
                if done > 0 { engineWakeup?.wakeIfSleeping() }
                if idle.shouldSleep(worked: done > 0, now: clock.now) {
                    // The timeout runs the policy's timers (ARP retries) while no packet comes.
                    _ = try? wakeup.sleep(timeoutMilliseconds: 10) { slowPath.hasWork }
                }
            }
            finished.signal()
        }
        thread.name = "offload-software"
        self.thread = thread
        thread.start()
    }

    /// Runs one step of up to `max` packets on the calling thread if the software's thread
    /// sleeps and nobody else is stepping; returns how many it handled, nil if it did not run.
    public func stepIfAsleep(max: Int) -> Int? {
        guard wakeup.isSleeping, takeTurn() else { return nil }
        defer { giveTurn() }
        return slowPath.step(max: max)
    }

    private func takeTurn() -> Bool {
        turn.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
    }

    private func giveTurn() { turn.store(false, ordering: .releasing) }

    /// Stops the thread and waits for it to finish its current step.
    public func stop() {
        guard thread != nil else { return }
        stopping.store(true, ordering: .relaxed)
        wakeup.wake()
        finished.wait()
        thread = nil
    }
}
