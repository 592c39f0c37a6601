#if os(Linux)
import OffloadCore
import OffloadEngine
import OffloadLink

/// An engine on real links: its poll loop on the calling thread, its software on a thread
/// of its own. Each side spins briefly when it finds nothing to do, then sleeps (epoll on
/// the ports' descriptors and an eventfd) until a frame arrives or the other side rings, so
/// an idle gateway leaves the cores to the hosts around it.
public final class EngineLoop<Port: Link & ~Copyable> {
    public let engine: Engine<Port>
    public let slowPath: SlowPath
    private let software: SoftwareThread
    private let wakeup: Poller
    /// Empty polls before the engine sleeps.
    public var spinsBeforeSleeping = 200

    public init(engine: Engine<Port>, slowPath: SlowPath) throws(LinkError) {
        self.engine = engine
        self.slowPath = slowPath
        wakeup = try Poller()
        software = try SoftwareThread(slowPath: slowPath, engineWakeup: wakeup)
        for port in 0..<engine.portCount {
            if let descriptor = engine.withPort(port, { $0.capabilities.readinessDescriptor }) {
                try wakeup.add(descriptor)
            }
        }
    }

    /// Runs until `shouldStop` says so (asked at least every 10 ms), calling `tick` at most
    /// every `interval`. The software thread runs meanwhile and is stopped before this returns.
    public func run(clock: any Clock, shouldStop: () -> Bool, every interval: Duration = .seconds(1),
                    tick: (Instant) -> Void = { _ in }) {
        software.start()
        defer { software.stop() }
        var idle = 0
        var nextTick = clock.now + interval
        while !shouldStop() {
            let now = clock.now
            if engine.poll(now: now) {
                idle = 0
                if engine.exceptions.count > 0 { software.wakeup.wakeIfSleeping() }
            } else if idle < spinsBeforeSleeping {
                idle += 1
            } else {
                try? wakeup.sleep(timeoutMilliseconds: 10) { engine.hasSoftwareMessages }
                idle = 0
            }
            if now >= nextTick {
                nextTick = now + interval
                tick(now)
            }
        }
    }
}
#endif
