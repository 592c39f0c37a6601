#if os(Linux)
import Foundation
import Synchronization
import OffloadCore
import OffloadEngine
import OffloadLink

/// A host's engine on a thread of its own, as an offload NIC runs beside the host's CPU:
/// its poll loop reads the link, runs the fast path and the offloaded TCP connections, and
/// takes what the host's software hands it. The host's thread meets it only through the
/// engine's rings (exceptions, re-insertion with the offload commands, TCP events) and an
/// offloaded connection's receive buffer (`TCPReceiveBuffer`).
///
/// Idle, it spins briefly (`IdleSpin`) and then sleeps on the link's descriptor and an
/// eventfd until a frame comes, the host hands it work, or an offloaded connection's timer
/// is due. It rings the host whenever it has left something in a ring for it, or data (or a
/// FIN) in a receive buffer.
final class EngineThread<Port: Link & ~Copyable>: @unchecked Sendable {
    // Unchecked: between `start` and `stop` only this thread touches the engine (the host's
    // side uses its rings, which are single-producer single-consumer); the rest is atomics
    // and the pollers, which any thread may ring.
    private let engine: Engine<Port>
    private let clock: any Clock
    /// Watches the link; rung by the host when it hands the engine work.
    let wakeup: Poller
    /// The host's loop, rung when the engine leaves it packets, events or received data.
    private let host: Poller
    /// Polls that gave offloaded connections data or a FIN: what their applications read
    /// from the receive buffers, which no ring announces (a lone ACK is not counted: the
    /// host has nothing to do for it).
    let deliveries = Atomic<Int>(0)
    private let spin: Duration
    private let stopping = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)
    private var thread: Thread?
    /// Times the thread went to sleep, and the CPU time it had (set as it ends), for reports.
    private let sleeps = Atomic<Int>(0)
    private var cpuSeconds = 0.0
    /// The engine's counters as of the last 10 ms, for readers on other threads.
    private let published: Mutex<EngineSnapshot>
    private static var publishInterval: Duration { .milliseconds(10) }

    init(engine: Engine<Port>, clock: any Clock, wakeup: Poller, host: Poller, spin: Duration) {
        self.engine = engine
        self.clock = clock
        self.wakeup = wakeup
        self.host = host
        self.spin = spin
        published = Mutex(EngineSnapshot(engine))
    }

    func start() {
        let thread = Thread { [self] in
            var idle = IdleSpin(spin: spin)
            var nextPublish = clock.now
            while !stopping.load(ordering: .relaxed) {
                let now = clock.now
                let delivered = engine.tcp.counters.segmentsForTheApplication
                let worked = engine.poll(now: now)
                let newData = engine.tcp.counters.segmentsForTheApplication != delivered
                if newData { deliveries.add(1, ordering: .releasing) }
                if now >= nextPublish {
                    published.withLock { $0 = EngineSnapshot(engine) }
                    nextPublish = now + Self.publishInterval
                }
                if newData || engine.exceptions.count > 0 || engine.tcp.events.count > 0 { host.wakeIfSleeping() }
                if idle.shouldSleep(worked: worked || engine.tcp.hasOutput, now: now) {
                    sleeps.add(1, ordering: .relaxed)
                    _ = try? wakeup.sleep(timeoutMilliseconds: timeout(now: now)) { engine.hasSoftwareMessages }
                }
            }
            published.withLock { $0 = EngineSnapshot(engine) }
            cpuSeconds = Self.threadCPUSeconds()
            finished.signal()
        }
        thread.name = "offload-engine"
        self.thread = thread
        thread.start()
    }

    /// Until the offloaded connections' next timer, at most 10 ms (entries idle out meanwhile).
    private func timeout(now: Instant) -> Int32 {
        guard let next = engine.tcp.nextDeadline else { return 10 }
        return Int32(clamping: max(0, min(10, (next.nanoseconds - now.nanoseconds + 999_999) / 1_000_000)))
    }

    /// The engine's counters, at most 10 ms old (exact once stopped).
    var snapshot: EngineSnapshot { published.withLock { $0 } }

    /// Stops the thread after its current poll and waits for it: the engine is the caller's
    /// again. Returns what the thread did.
    func stop() -> EngineThreadReport {
        if thread != nil {
            stopping.store(true, ordering: .relaxed)
            wakeup.wake()
            finished.wait()
            thread = nil
        }
        return EngineThreadReport(sleeps: sleeps.load(ordering: .relaxed), cpuSeconds: cpuSeconds)
    }

    /// The calling thread's CPU time, user and system.
    private static func threadCPUSeconds() -> Double {
        var t = timespec()
        guard clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t) == 0 else { return 0 }
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }
}

/// What an engine's thread did while it ran.
public struct EngineThreadReport: Sendable {
    /// Times it went to sleep (nothing to do for the spin's length).
    public var sleeps: Int
    /// CPU time it had, user and system.
    public var cpuSeconds: Double
}

/// What a host's engine has counted, copied at one moment: what readers on other threads see
/// of an engine that runs on its own (`HostEndpoint.engineSnapshot`).
public struct EngineSnapshot: Sendable {
    public var counters: EngineCounters
    public var offload: TCPOffloadCounters
    /// Entries in the connection table, buffers held, connections the engine runs.
    public var entries: Int
    public var buffered: Int
    public var offloadedConnections: Int

    init<Port: Link & ~Copyable>(_ engine: Engine<Port>) {
        counters = engine.counters
        offload = engine.tcp.counters
        entries = engine.table.count
        buffered = engine.buffered
        offloadedConnections = engine.tcp.count
    }
}
#endif
