#if os(Linux)
import OffloadCore
import OffloadEngine
import OffloadLink

/// An engine on real links: its poll loop on the calling thread, its software on a thread
/// of its own or (`softwareThread: false`) between the engine's polls on the same thread.
/// An idle loop spins briefly (`IdleSpin`), then sleeps (epoll on the ports' descriptors and
/// an eventfd) until a frame arrives or the other side rings, so an idle gateway leaves the
/// cores to the hosts around it.
public final class EngineLoop<Port: Link & ~Copyable> {
    public let engine: Engine<Port>
    public let slowPath: SlowPath
    /// Nil when the software runs on the engine's thread.
    private let software: SoftwareThread?
    private let wakeup: Poller
    /// How long the engine, and the software's thread if it has one, keep polling without
    /// work before they sleep (see `SoftwareThread`).
    public var spinBeforeSleeping = IdleSpin.defaultSpin {
        didSet { software?.spinBeforeSleeping = spinBeforeSleeping }
    }
    /// Times `run` slept, and times it had spun long enough to sleep but found work waiting
    /// for its thread (the loop then polls on). Read them when `run` has returned.
    public private(set) var sleeps = 0
    public private(set) var sleepsForgone = 0

    public init(engine: Engine<Port>, slowPath: SlowPath, softwareThread: Bool = true) throws(LinkError) {
        self.engine = engine
        self.slowPath = slowPath
        wakeup = try Poller()
        software = softwareThread ? try SoftwareThread(slowPath: slowPath, engineWakeup: wakeup) : nil
        for port in 0..<engine.portCount {
            if let descriptor = engine.withPort(port, { $0.capabilities.readinessDescriptor }) {
                try wakeup.add(descriptor)
            }
        }
    }

    /// Runs until `shouldStop` says so (asked at least every 10 ms), calling `tick` at most
    /// every `interval`. A software thread runs meanwhile and is stopped before this returns.
    public func run(clock: any Clock, shouldStop: () -> Bool, every interval: Duration = .seconds(1),
                    tick: (Instant) -> Void = { _ in }) {
        software?.start()
        defer { software?.stop() }
        var idle = IdleSpin(spin: spinBeforeSleeping)
        var nextTick = clock.now + interval
        while !shouldStop() {
            let now = clock.now
            var worked = engine.poll(now: now)
            if let software {
                if worked, slowPath.hasWork {
                    // A lone new flow is handled here while the software's thread sleeps, and
                    // so are the notices of the entries this poll installed or removed; the
                    // packets left after that one step wake it.
                    if let done = software.stepIfAsleep(max: engine.configuration.burstSize), done > 0 { worked = true }
                    if engine.exceptions.count > 0 { software.wakeup.wakeIfSleeping() }
                }
            } else if slowPath.step(max: engine.configuration.burstSize) > 0 {
                worked = true
            }
            if idle.shouldSleep(worked: worked, now: now) {
                // The timeout also runs the software's timers (ARP retries) when it runs here.
                // The software's own work keeps awake only the thread that does it: the
                // software's thread rings this one when it has sent something.
                let slept = try? wakeup.sleep(timeoutMilliseconds: 10) {
                    engine.hasSoftwareMessages || (software == nil && slowPath.hasWork)
                }
                if slept == false { sleepsForgone &+= 1 } else { sleeps &+= 1 }
            }
            if now >= nextTick {
                nextTick = now + interval
                tick(now)
            }
        }
    }
}
#endif
