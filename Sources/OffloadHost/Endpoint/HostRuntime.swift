import Foundation
import Synchronization
import OffloadCore
import OffloadEngine
import OffloadLink
import OffloadTCP

/// A host with TCP behind the engine on a link (`HostEndpoint`), run by a thread of its own,
/// for applications that use the async API (`tcp`): the thread runs the engine's poll and the
/// host's software, resumes the tasks whose waits are over, and sleeps in epoll (on the
/// link's descriptor and an eventfd the API rings) when nothing is due. With `offload` (the
/// default) established connections run in the engine (seed 003); with `engineThread` the
/// engine has a second thread of its own, as an offload NIC beside the host's CPU.
///
///     let runtime = try HostRuntime(link: TapLink(name: "tap0"), host: .init(
///         interface: IPv4CIDR(parsing: "10.0.0.2/24"), hardwareAddress: .local(2)))
///     try runtime.start()
///     let connection = try await runtime.tcp.connect(to: IPv4Address(10, 0, 0, 1), port: 5001)
///     let completion = await connection.send(TxBuffer(copying: Array("hello".utf8)))
///     // completion.buffer is ours again; completion.status says the peer has it all.
///     runtime.stop()
public final class HostRuntime<L: Link & ~Copyable>: @unchecked Sendable {
    // Unchecked: the endpoint (engine, software, host) is touched only by the runtime's
    // thread, and the stack only under `tcp`'s lock.
    public let tcp: AsyncTCP
    public let host: IPv4Host
    private let endpoint: HostEndpoint<L>
    private let stopping = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)
    private var thread: Thread?
    private let engineThread: Bool

    public init(link: consuming L, host configuration: IPv4Host.Configuration,
                tcp tcpConfiguration: TCPStack.Configuration = .init(), offload: Bool = true,
                engineThread: Bool = false, clock: any Clock = MonotonicClock()) throws {
        self.engineThread = engineThread
        var engine = Engine<L>.Configuration().randomizingSecrets()
        engine.bufferSize = max(engine.bufferSize, link.capabilities.maxFrameSize + Engine<L>.headroom)
        if engine.bufferSize > 4096 { engine.bufferCount = 1024 }
        var held: L? = consume link
        let endpoint = try HostEndpoint(host: configuration, tcp: tcpConfiguration, engine: engine, offload: offload,
                                        clock: clock) { held.take()! }
        self.endpoint = endpoint
        host = endpoint.host
        // The stack stays reachable through the endpoint, but only the runtime's thread
        // touches it there, and only under `tcp`'s lock.
        nonisolated(unsafe) let stack = endpoint.tcp
        tcp = AsyncTCP(stack: stack, now: clock.now, wake: endpoint.waker)
    }

    /// Starts the runtime's thread (and the engine's, with `engineThread`; an error if its
    /// poller cannot be made). It runs until `stop()`, and holds the runtime until then:
    /// letting go of the runtime does not stop it. A runtime runs once: `start()` while it
    /// runs, or after `stop()`, does nothing.
    public func start() throws(LinkError) {
        guard thread == nil, !tcp.isStopped else { return }
        // Under the API's lock: `offloadCounters` asks the endpoint whether it has a thread.
        if engineThread { try tcp.withLock { () throws(LinkError) in try endpoint.startEngineThread() } }
        let thread = Thread { [self] in
            var idle = IdleSpin(spin: endpoint.spinBeforeSleeping)
            while !stopping.load(ordering: .relaxed) {
                let now = endpoint.clock.now
                // The host is read under the lock the API takes, its next timer included;
                // the sleep reads only the engine's rings.
                let (worked, busy, deadline) = tcp.withStack(now: now) { _ in
                    let worked = endpoint.turn(now: now)
                    endpoint.ringEngine()
                    return (worked, endpoint.isBusy, endpoint.nextDeadline)
                }
                tcp.resumeReady()
                if idle.shouldSleep(worked: worked || busy, now: now) { endpoint.sleep(until: deadline) }
            }
            tcp.withLock { _ = endpoint.stopEngineThread() }
            finished.signal()
        }
        thread.name = "offload-host"
        self.thread = thread
        thread.start()
    }

    /// What the engine's TCP has done (connections offloaded, segments and bytes carried).
    public var offloadCounters: TCPOffloadCounters { tcp.withLock { endpoint.engineSnapshot.offload } }

    // MARK: UDP

    /// Receives datagrams to `port` (at most `capacity` unread).
    public func bindUDP(port: UInt16, capacity: Int = 256) throws(UDPError) {
        try tcp.withLock { () throws(UDPError) in try host.udp.bind(port: port, capacity: capacity) }
    }

    /// Sends a datagram from `port` (bound); it leaves at the runtime's next turn.
    public func sendUDP(_ datagram: UDPDatagram, from port: UInt16) throws(UDPError) {
        try tcp.withLock { () throws(UDPError) in try host.udp.send(from: port, datagram) }
    }

    /// The next datagram to `port`, waiting for one; throws `stopped` once the runtime has
    /// stopped and none is left, and `cancelled` when the task is cancelled while none is.
    public func receiveUDP(port: UInt16) async throws(UDPError) -> UDPDatagram {
        while true {
            if let datagram = tcp.withLock({ host.udp.receive(port: port) }) { return datagram }
            if tcp.isStopped { throw .stopped }
            if Task.isCancelled { throw .cancelled }
            await tcp.wait { [self] in host.udp.hasDatagram(port: port) }
        }
    }

    /// Stops the thread after its current turn. The stack stops with it (`AsyncTCP.stop`):
    /// every waiting call returns, every buffer sent comes back with its completion, and
    /// later calls fail with `stackStopped` rather than wait.
    public func stop() {
        guard thread != nil else { return }
        stopping.store(true, ordering: .relaxed)
        endpoint.waker()
        finished.wait()
        thread = nil
        tcp.stop()
    }
}
