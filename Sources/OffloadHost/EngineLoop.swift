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
                if worked, engine.exceptions.count > 0 {
                    // A lone new flow is handled here while the software's thread sleeps; what
                    // is left after that one step wakes it.
                    if let done = software.stepIfAsleep(max: engine.configuration.burstSize), done > 0 { worked = true }
                    if engine.exceptions.count > 0 { software.wakeup.wakeIfSleeping() }
                }
            } else if slowPath.step(max: engine.configuration.burstSize) > 0 {
                worked = true
            }
            if idle.shouldSleep(worked: worked, now: now) {
                // The timeout also runs the software's timers (ARP retries) when it runs here.
                try? wakeup.sleep(timeoutMilliseconds: 10) { engine.hasSoftwareMessages || slowPath.hasWork }
            }
            if now >= nextTick {
                nextTick = now + interval
                tick(now)
            }
        }
    }
}
#endif
