#if os(Linux)
import OffloadCore
import OffloadEngine
import OffloadLink
import OffloadTCP

/// A host with TCP behind the engine, on one port: the engine polls the link, every frame
/// for the host crosses to the software through the exception queue, the host answers, and
/// what it sends goes back through the re-insertion queue to the engine's transmit path.
///
/// Engine and software share the caller's thread (`turn` runs both), as a host's driver and
/// its NIC's poll loop would on one core, until `startEngineThread()` gives the engine a
/// thread of its own, as an offload NIC runs beside the host's CPU. From then on `turn`,
/// `isBusy`, `nextDeadline` and `sleep` are the host's side only, and the engine (its
/// counters included) is not to be touched until `stopEngineThread()`.
public final class HostEndpoint<Port: Link & ~Copyable> {
    public let engine: Engine<Port>
    public let slowPath: SlowPath
    public let host: IPv4Host
    public let clock: any Clock
    /// The loop that runs the host's side sleeps here: on the link too while it runs the
    /// engine, on its eventfd alone while the engine has a thread.
    private let poller: Poller
    private let linkDescriptor: Int32?
    private var engineThread: EngineThread<Port>?
    /// The engine thread's deliveries the host's side has seen (see `EngineThread.deliveries`).
    private var deliveriesSeen = 0

    public let policy: HostPolicy
    /// How long `run` (and `HostRuntime`) keep polling without work before they sleep (see
    /// `IdleSpin`): a sender whose window is full gets its ACK without a wake-up.
    public var spinBeforeSleeping = IdleSpin.defaultSpin

    /// `makePort` opens the link (once). With `offload`, established TCP connections move to
    /// the engine (seed 003); without, the host's software runs them. The MSS the host
    /// advertises is at most what the link's MTU leaves after the IPv4 and TCP headers.
    public init(host configuration: IPv4Host.Configuration, tcp: TCPStack.Configuration = .init(),
                engine engineConfiguration: Engine<Port>.Configuration = .init(), offload: Bool = false,
                clock: any Clock, makePort: () throws -> Port) throws {
        engine = try Engine(configuration: engineConfiguration, portCount: 1, clock: clock) { _ in try makePort() }
        host = IPv4Host(configuration, tcp: tcp)
        host.tcp!.linkMTU = engine.portMTUs[0]
        self.clock = clock
        policy = HostPolicy(host: host, clock: clock, offloadTo: offload ? engine : nil)
        slowPath = SlowPath(exceptions: engine.exceptions, reinsertion: engine.reinsertion, processing: .complete,
                            policy: policy,
                            ownFrames: (count: engineConfiguration.queueCapacity,
                                        size: min(engineConfiguration.bufferSize, 2048)),
                            // Derived from the table's key: secret when that is (`randomizingSecrets`).
                            cacheSeed: engineConfiguration.tableHashSeed.byteSwapped)
        poller = try Poller()
        linkDescriptor = engine.withPort(0, { $0.capabilities.readinessDescriptor })
        if let linkDescriptor { try poller.add(linkDescriptor) }
    }

    deinit { stopEngineThread() }

    /// Runs the engine on a thread of its own from now on (see the type's summary).
    public func startEngineThread() throws(LinkError) {
        guard engineThread == nil else { return }
        let wakeup = try Poller()
        if let linkDescriptor {
            try wakeup.add(linkDescriptor)
            try poller.remove(linkDescriptor)
        }
        let thread = EngineThread(engine: engine, clock: clock, wakeup: wakeup, host: poller, spin: spinBeforeSleeping)
        engineThread = thread
        thread.start()
    }

    /// Stops the engine's thread: the engine runs in `turn` again, and may be read. Returns
    /// what the thread did (nil when there was none).
    @discardableResult
    public func stopEngineThread() -> EngineThreadReport? {
        guard let thread = engineThread else { return nil }
        let report = thread.stop()
        engineThread = nil
        if let linkDescriptor { try? poller.add(linkDescriptor) }
        return report
    }

    /// Whether the engine runs on a thread of its own.
    public var hasEngineThread: Bool { engineThread != nil }

    /// What the engine has counted; from any thread while the engine has its own (then at
    /// most 10 ms old).
    public var engineSnapshot: EngineSnapshot { engineThread?.snapshot ?? EngineSnapshot(engine) }

    public var tcp: TCPStack { host.tcp! }

    /// One turn: the engine takes a burst (and transmits what the software handed back),
    /// the software takes what crossed and lets the host send. Returns whether anything moved.
    @discardableResult
    public func turn(now: Instant) -> Bool {
        followLinkMTU()
        if engineThread != nil { return hostTurn() }
        var worked = engine.poll(now: now)
        if slowPath.step(max: engine.configuration.burstSize) > 0 { worked = true }
        if engine.hasSoftwareMessages { worked = engine.poll(now: now) || worked }
        return worked
    }

    /// New connections take the link's MTU as the engine last read it (each second): after
    /// `ip link set … mtu` a smaller one gets segments that still fit.
    private func followLinkMTU() {
        let mtu = engine.portMTUs[0]
        if host.tcp!.linkMTU != mtu { host.tcp!.linkMTU = mtu }
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

    /// The host's side of a turn while the engine has its thread: the software takes what
    /// crossed and lets the host send; the engine is rung if it was handed anything.
    private func hostTurn() -> Bool {
        let originated = slowPath.originated
        var worked = slowPath.step(max: engine.configuration.burstSize) > 0 || slowPath.originated != originated
        // Data the engine put in receive buffers: the application's turn after this one reads it.
        if let deliveries = engineThread?.deliveries.load(ordering: .acquiring), deliveries != deliveriesSeen {
            deliveriesSeen = deliveries
            worked = true
        }
        ringEngine()
        return worked
    }

    /// Rings the engine's thread, if it has one and sleeps, when the host has handed it work
    /// (frames, offload commands, messages posted by the application): call it after the
    /// application's turn.
    public func ringEngine() {
        if let engineThread, engine.hasSoftwareMessages { engineThread.wakeup.wakeIfSleeping() }
    }

    /// Whether a turn is due at once (the host has something to send, or frames wait).
    public var isBusy: Bool {
        if engineThread != nil { return hostHasWork || host.hasOutput }
        return host.hasOutput || hostHasWork || engine.hasSoftwareMessages || engine.tcp.hasOutput
    }

    /// The engine has left the host's side something: packets, events of its TCP, or data
    /// in an offloaded connection's receive buffer.
    private var hostHasWork: Bool { slowPath.hasWork || policy.hasEvents || engineDelivered }

    /// The engine's thread has given offloaded connections data or a FIN since the last turn.
    private var engineDelivered: Bool {
        engineThread.map { $0.deliveries.load(ordering: .acquiring) != deliveriesSeen } ?? false
    }

    /// The earliest timer of the host's and (while they share a thread) the engine's connections.
    public var nextDeadline: Instant? {
        if engineThread != nil { return host.nextDeadline }
        return switch (host.nextDeadline, engine.tcp.nextDeadline) {
        case (let a?, let b?): min(a, b)
        case (let a, let b): a ?? b
        }
    }

    /// Ends a `sleep` early; callable from any thread.
    public var waker: @Sendable () -> Void { { [poller] in poller.wake() } }

    /// Sleeps until the link has frames (the engine has work for the host, with an engine
    /// thread), the host's next timer, or `limit`.
    public func sleep(limit: Duration = .milliseconds(10)) { sleep(until: nextDeadline, limit: limit) }

    /// Sleeps like `sleep(limit:)` until `deadline` (`nextDeadline`, read by the caller while
    /// it held the host): reads nothing of the host's, so a driver whose host others touch
    /// under a lock (`HostRuntime`) can sleep without it.
    public func sleep(until deadline: Instant?, limit: Duration = .milliseconds(10)) {
        var timeout = limit.nanoseconds / 1_000_000
        if let deadline {
            timeout = min(timeout, max(0, (deadline.nanoseconds - clock.now.nanoseconds) / 1_000_000))
        }
        if engineThread != nil {
            // The rings only: what the engine left since the caller last looked.
            _ = try? poller.sleep(timeoutMilliseconds: Int32(timeout)) {
                slowPath.hasWork || policy.hasEngineEvents || engineDelivered
            }
        } else {
            _ = try? poller.wait(timeoutMilliseconds: Int32(timeout))
        }
    }

    /// Runs until `shouldStop`, giving `application` a turn after each of the endpoint's.
    public func run(shouldStop: () -> Bool, application: (TCPStack, Instant) -> Void) {
        var idle = IdleSpin(spin: spinBeforeSleeping)
        while !shouldStop() {
            let now = clock.now
            let worked = turn(now: now)
            application(tcp, now)
            ringEngine()
            if idle.shouldSleep(worked: worked || isBusy, now: now) { sleep() }
        }
    }
}
#endif
