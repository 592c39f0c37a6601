import Foundation
import Synchronization
import OffloadCore
import OffloadLink
import OffloadTCP

/// A host with TCP on a link, run by a thread of its own, for applications that use the
/// async API (`tcp`): the thread receives bursts, lets the host and its TCP answer, resumes
/// the tasks whose waits are over, and sleeps in epoll (on the link's descriptor and an
/// eventfd the API rings) when nothing is due.
///
///     let runtime = try HostRuntime(link: TapLink(name: "tap0"), host: .init(
///         interface: IPv4CIDR(parsing: "10.0.0.2/24"), hardwareAddress: .local(2)))
///     runtime.start()
///     let connection = try await runtime.tcp.connect(to: IPv4Address(10, 0, 0, 1), port: 5001)
///     let completion = await connection.send(TxBuffer(copying: Array("hello".utf8)))
///     // completion.buffer is ours again; completion.status says the peer has it all.
public final class HostRuntime<L: Link & ~Copyable & SendableMetatype>: @unchecked Sendable {
    // Unchecked: `link`, `loop` and the host are touched only by the runtime's thread, and
    // the stack only under `tcp`'s lock.
    public let tcp: AsyncTCP
    public let host: IPv4Host
    private var link: L
    private var loop: HostLoop
    private let poller: Poller
    private let stopping = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)
    private var thread: Thread?

    public init(link: consuming L, host configuration: IPv4Host.Configuration,
                tcp tcpConfiguration: TCPStack.Configuration = .init(),
                clock: any Clock = MonotonicClock()) throws(LinkError) {
        let host = IPv4Host(configuration, tcp: tcpConfiguration)
        self.host = host
        let poller = try Poller()
        self.poller = poller
        let capabilities = link.capabilities
        if let descriptor = capabilities.readinessDescriptor { try poller.add(descriptor) }
        self.link = link
        loop = HostLoop(host: host, pool: BufferPool(count: 512, bufferSize: capabilities.maxFrameSize, headroom: 0),
                        clock: clock)
        tcp = AsyncTCP(stack: host.tcp!, now: clock.now) { [poller] in poller.wake() }
    }

    public func start() {
        let thread = Thread { [self] in
            while !stopping.load(ordering: .relaxed) {
                let now = loop.clock.now
                let (received, busy, next) = tcp.withStack(now: now) { stack in
                    let received = (try? loop.runOnce(on: &link)) ?? 0
                    return (received, stack.hasOutput, host.nextDeadline)
                }
                tcp.resumeReady()
                if received == 0 && !busy {
                    var timeout: Int64 = 10
                    if let next { timeout = min(timeout, max(0, (next.nanoseconds - now.nanoseconds) / 1_000_000)) }
                    _ = try? poller.wait(timeoutMilliseconds: Int32(timeout))
                }
            }
            finished.signal()
        }
        thread.name = "offload-host"
        self.thread = thread
        thread.start()
    }

    // MARK: UDP

    /// Receives datagrams to `port` (at most `capacity` unread).
    public func bindUDP(port: UInt16, capacity: Int = 256) throws(UDPError) {
        try tcp.withLock { () throws(UDPError) in try host.udp.bind(port: port, capacity: capacity) }
    }

    /// Sends a datagram from `port` (bound); it leaves at the runtime's next turn.
    public func sendUDP(_ datagram: UDPDatagram, from port: UInt16) throws(UDPError) {
        try tcp.withLock { () throws(UDPError) in try host.udp.send(from: port, datagram) }
    }

    /// The next datagram to `port`, waiting for one.
    public func receiveUDP(port: UInt16) async -> UDPDatagram {
        while true {
            if let datagram = tcp.withLock({ host.udp.receive(port: port) }) { return datagram }
            await tcp.wait { [self] in host.udp.hasDatagram(port: port) }
        }
    }

    /// Stops the thread after its current turn.
    public func stop() {
        guard thread != nil else { return }
        stopping.store(true, ordering: .relaxed)
        poller.wake()
        finished.wait()
        thread = nil
    }

    deinit { stop() }
}
