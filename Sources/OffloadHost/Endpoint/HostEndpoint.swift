#if os(Linux)
import OffloadCore
import OffloadEngine
import OffloadLink
import OffloadTCP

/// A host with TCP behind the engine, on one port: the engine polls the link, every frame
/// for the host crosses to the software through the exception queue, the host answers, and
/// what it sends goes back through the re-insertion queue to the engine's transmit path.
/// Engine and software share one thread here (`turn` runs both), as a host's driver and its
/// NIC's poll loop would on one core.
public final class HostEndpoint<Port: Link & ~Copyable> {
    public let engine: Engine<Port>
    public let slowPath: SlowPath
    public let host: IPv4Host
    public let clock: any Clock
    private let poller: Poller

    public let policy: HostPolicy
    /// How long `run` (and `HostRuntime`) keep polling without work before they sleep (see
    /// `IdleSpin`): a sender whose window is full gets its ACK without a wake-up.
    public var spinBeforeSleeping = IdleSpin.defaultSpin

    /// `makePort` opens the link (once). With `offload`, established TCP connections move to
    /// the engine (seed 003); without, the host's software runs them.
    public init(host configuration: IPv4Host.Configuration, tcp: TCPStack.Configuration = .init(),
                engine engineConfiguration: Engine<Port>.Configuration = .init(), offload: Bool = false,
                clock: any Clock, makePort: () throws -> Port) throws {
        host = IPv4Host(configuration, tcp: tcp)
        self.clock = clock
        engine = try Engine(configuration: engineConfiguration, portCount: 1, clock: clock) { _ in try makePort() }
        policy = HostPolicy(host: host, clock: clock, offloadTo: offload ? engine : nil)
        slowPath = SlowPath(exceptions: engine.exceptions, reinsertion: engine.reinsertion, processing: .complete,
                            policy: policy,
                            ownFrames: (count: engineConfiguration.queueCapacity,
                                        size: min(engineConfiguration.bufferSize, 2048)),
                            // Derived from the table's key: secret when that is (`randomizingSecrets`).
                            cacheSeed: engineConfiguration.tableHashSeed.byteSwapped)
        poller = try Poller()
        if let descriptor = engine.withPort(0, { $0.capabilities.readinessDescriptor }) { try poller.add(descriptor) }
    }

    public var tcp: TCPStack { host.tcp! }

    /// One turn: the engine takes a burst (and transmits what the software handed back),
    /// the software takes what crossed and lets the host send. Returns whether anything moved.
    @discardableResult
    public func turn(now: Instant) -> Bool {
        var worked = engine.poll(now: now)
        if slowPath.step(max: engine.configuration.burstSize) > 0 { worked = true }
        if engine.hasSoftwareMessages { worked = engine.poll(now: now) || worked }
        return worked
    }

    /// A turn for a scheduler that runs a process again while it has work and otherwise
    /// moves time on (the simulator): whether another turn is due at once, and if not, when
    /// the next timer wants one.
    public func scheduledTurn(now: Instant) -> (again: Bool, wakeAt: Instant?) {
        let worked = turn(now: now)
        if worked || isBusy { return (true, nil) }
        guard let next = nextDeadline, next > now else { return (false, nil) }
        return (false, next)
    }

    /// Whether a turn is due at once (the host has something to send, or frames wait).
    public var isBusy: Bool {
        host.hasOutput || slowPath.hasWork || engine.hasSoftwareMessages || policy.hasEvents || engine.tcp.hasOutput
    }

    /// The earliest timer of the host's and the engine's connections.
    public var nextDeadline: Instant? {
        switch (host.nextDeadline, engine.tcp.nextDeadline) {
        case (let a?, let b?): min(a, b)
        case (let a, let b): a ?? b
        }
    }

    /// Ends a `sleep` early; callable from any thread.
    public var waker: @Sendable () -> Void { { [poller] in poller.wake() } }

    /// Sleeps until the link has frames, the host's next timer, or `limit`.
    public func sleep(limit: Duration = .milliseconds(10)) {
        var timeout = limit.nanoseconds / 1_000_000
        if let next = nextDeadline {
            timeout = min(timeout, max(0, (next.nanoseconds - clock.now.nanoseconds) / 1_000_000))
        }
        _ = try? poller.wait(timeoutMilliseconds: Int32(timeout))
    }

    /// Runs until `shouldStop`, giving `application` a turn after each of the endpoint's.
    public func run(shouldStop: () -> Bool, application: (TCPStack, Instant) -> Void) {
        var idle = IdleSpin(spin: spinBeforeSleeping)
        while !shouldStop() {
            let now = clock.now
            let worked = turn(now: now)
            application(tcp, now)
            if idle.shouldSleep(worked: worked || isBusy, now: now) { sleep() }
        }
    }
}
#endif
