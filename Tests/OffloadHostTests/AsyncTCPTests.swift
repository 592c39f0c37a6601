#if os(Linux)
import Testing
import OffloadCore
import OffloadHost
import OffloadLink
import OffloadTCP

/// The async API end to end: two hosts, each on a thread of its own (`HostRuntime`), joined
/// by a socket pair. This is the example of the README. With `engineThread` each host's
/// engine runs on a second thread, as an offload NIC beside the host's CPU.
@Suite struct AsyncTCPTests {
    /// Two runtimes joined by a socket pair, started (the caller stops them).
    static func hosts(engineThread: Bool = false)
        throws -> (server: HostRuntime<SocketPairLink>, client: HostRuntime<SocketPairLink>) {
        let (a, b) = try SocketPairLink.makePair()
        let server = try HostRuntime(
            link: SocketPairLink(adopting: a, address: .local(1)),
            host: .init(interface: try IPv4CIDR(parsing: "10.0.0.1/24"), hardwareAddress: .local(1)),
            engineThread: engineThread)
        let client = try HostRuntime(
            link: SocketPairLink(adopting: b, address: .local(2)),
            host: .init(interface: try IPv4CIDR(parsing: "10.0.0.2/24"), hardwareAddress: .local(2)),
            engineThread: engineThread)
        try server.start()
        try client.start()
        return (server, client)
    }

    /// A connection from the client to the server's port 7, whose server reads nothing, and a
    /// send of 8 MiB on it, which cannot all be acknowledged and so waits: the task gives its
    /// completion's status and where its buffer lies; `address` is where it lay when sent.
    static func stalledSend(from client: HostRuntime<SocketPairLink>, to server: HostRuntime<SocketPairLink>) async throws
        -> (connection: AsyncTCPConnection, sent: Task<(CompletionStatus, Int), Never>, address: Int) {
        let listener = try server.tcp.listen(port: 7)
        let accepted = Task { try await listener.accept() }
        let connection = try await client.tcp.connect(to: IPv4Address(10, 0, 0, 1), port: 7)
        _ = try await accepted.value
        let message = BufferHand(TxBuffer(count: 8 << 20))
        let sent = Task { () -> (CompletionStatus, Int) in
            let completion = await connection.send(message.take())
            return (completion.status, Int(bitPattern: completion.buffer.baseAddress))
        }
        return (connection, sent, message.address)
    }

    /// The sockets `runtime`'s stack still holds, once none is left or after 2 s.
    static func socketsLeft(in runtime: HostRuntime<SocketPairLink>) async throws -> Int {
        let clock = MonotonicClock()
        var sockets = 1
        for _ in 0..<200 where sockets > 0 {
            sockets = runtime.tcp.withStack(now: clock.now) { $0.socketCount }
            if sockets > 0 { try await Task.sleep(for: .milliseconds(10)) }
        }
        return sockets
    }

    @Test(arguments: [false, true])
    func anEchoServerAndAClient(engineThread: Bool) async throws {
        let (server, client) = try Self.hosts(engineThread: engineThread)
        defer {
            client.stop()
            server.stop()
        }

        // The server: accept one connection, send back every chunk that arrives, close.
        let listener = try server.tcp.listen(port: 7)
        let echoed = Task {
            let connection = try await listener.accept()
            var bytes = 0
            for try await chunk in connection.inbound {
                bytes += chunk.count
                _ = await connection.send(TxBuffer(copying: chunk))
            }
            connection.close()
            return bytes
        }

        // The client: one message of 1 MiB, handed over without a copy and given back on ACK.
        let connection = try await client.tcp.connect(to: IPv4Address(10, 0, 0, 1), port: 7)
        // Read the echo while sending: an echo peer stops when nobody reads its answers.
        let back = Task {
            var bytes: [UInt8] = []
            for try await chunk in connection.inbound { bytes += chunk }
            return bytes
        }
        let message = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) }
        let buffer = TxBuffer(copying: message)
        let address = buffer.baseAddress
        let completion = await connection.send(buffer)
        #expect(completion.status == .acknowledged)
        #expect(completion.buffer.baseAddress == address, "the very buffer came back")
        connection.close()

        #expect(try await back.value == message)
        #expect(try await echoed.value == message.count)
        #expect(await connection.closed() == nil)
        // The engines carried the data both ways (the connections were offloaded). Read once
        // stopped: an engine on its own thread publishes its counters every 10 ms.
        client.stop()
        server.stop()
        #expect(client.offloadCounters.payloadBytesSent >= UInt64(message.count))
        #expect(server.offloadCounters.payloadBytesSent >= UInt64(message.count))
    }

    @Test(arguments: [false, true])
    func udpDatagramsBetweenRuntimes(engineThread: Bool) async throws {
        let (server, client) = try Self.hosts(engineThread: engineThread)
        defer {
            client.stop()
            server.stop()
        }
        try server.bindUDP(port: 53)
        try client.bindUDP(port: 5353)
        try client.sendUDP(UDPDatagram(peer: IPv4Address(10, 0, 0, 1), peerPort: 53, payload: Array("query".utf8)),
                           from: 5353)
        let query = try await server.receiveUDP(port: 53)
        #expect(query.payload == Array("query".utf8) && query.peer == IPv4Address(10, 0, 0, 2) && query.peerPort == 5353)
        try server.sendUDP(UDPDatagram(peer: query.peer, peerPort: query.peerPort, payload: Array("answer".utf8)), from: 53)
        #expect(try await client.receiveUDP(port: 5353).payload == Array("answer".utf8))
    }

    /// Stopping a runtime ends its calls instead of stranding them: a send waiting for its
    /// acknowledgement gets its buffer back, failed with `stackStopped`; a waiting accept,
    /// receive and UDP receive return with that error; later calls fail at once. They all
    /// waited for ever, and the buffer was freed without a completion.
    @Test(.timeLimit(.minutes(1)), arguments: [false, true])
    func stoppingEndsEveryWaitingCall(engineThread: Bool) async throws {
        let (server, client) = try Self.hosts(engineThread: engineThread)
        let idle = try server.tcp.listen(port: 8)
        try server.bindUDP(port: 53)
        let (connection, sent, address) = try await Self.stalledSend(from: client, to: server)
        let received = Task { try await connection.receive() }
        let waitingAccept = Task { try await idle.accept() }
        let waitingDatagram = Task { try await server.receiveUDP(port: 53) }
        try await Task.sleep(for: .milliseconds(300))
        client.stop()
        server.stop()

        let (status, returned) = await sent.value
        #expect(status == .failed(.stackStopped))
        #expect(returned == address, "the buffer came back")
        await #expect(throws: TCPError.stackStopped) { _ = try await received.value }
        await #expect(throws: TCPError.stackStopped) { _ = try await waitingAccept.value }
        await #expect(throws: UDPError.stopped) { _ = try await waitingDatagram.value }
        await #expect(throws: TCPError.stackStopped) { _ = try await client.tcp.connect(to: IPv4Address(10, 0, 0, 1), port: 7) }
        // A runtime runs once.
        try client.start()
        await #expect(throws: TCPError.stackStopped) { _ = try await client.tcp.connect(to: IPv4Address(10, 0, 0, 1), port: 7) }
    }

    /// `abort()` ends a connection at once: a send waiting for its acknowledgement gets its
    /// buffer back, failed as aborted, and a waiting receive ends. The async API had no
    /// way to end a connection whose peer stopped reading.
    @Test(.timeLimit(.minutes(1)), arguments: [false, true])
    func abortEndsAConnectionAndItsWaitingCalls(engineThread: Bool) async throws {
        let (server, client) = try Self.hosts(engineThread: engineThread)
        defer {
            client.stop()
            server.stop()
        }
        let (connection, sent, address) = try await Self.stalledSend(from: client, to: server)
        let received = Task { try await connection.receive() }
        try await Task.sleep(for: .milliseconds(300))
        connection.abort()
        let (status, returned) = await sent.value
        #expect(status == .failed(.aborted))
        #expect(returned == address, "the buffer came back")
        #expect(try await received.value == nil, "the waiting receive ends: nothing more comes")
    }

    /// Cancelling a task ends its wait: a connect (given up, its socket released), an
    /// accept, a receive, a UDP receive and `closed()` throw or return `cancelled`, and a
    /// send waiting for room gets its buffer back, refused as cancelled. A send whose
    /// message is queued goes on waiting: the message is the connection's until its
    /// completion (here, the abort's). Each of these waited on after its task was cancelled.
    @Test(.timeLimit(.minutes(1)), arguments: [false, true])
    func cancellingATaskEndsItsWait(engineThread: Bool) async throws {
        let (server, client) = try Self.hosts(engineThread: engineThread)
        defer {
            client.stop()
            server.stop()
        }
        let idle = try server.tcp.listen(port: 8)
        try server.bindUDP(port: 53)
        let (connection, sent, address) = try await Self.stalledSend(from: client, to: server)
        let waitingForRoom = Task { await connection.send(TxBuffer(count: 1)).status }
        let received = Task { try await connection.receive() }
        let accepting = Task { try await idle.accept() }
        let datagram = Task { try await server.receiveUDP(port: 53) }
        let ending = Task { await connection.closed() }
        // Nobody has 10.0.0.9: the SYN waits for an ARP answer that never comes.
        let connecting = Task { try await client.tcp.connect(to: IPv4Address(10, 0, 0, 9), port: 7) }
        try await Task.sleep(for: .milliseconds(300))
        waitingForRoom.cancel()
        received.cancel()
        accepting.cancel()
        datagram.cancel()
        ending.cancel()
        connecting.cancel()
        sent.cancel()

        #expect(await waitingForRoom.value == .failed(.cancelled))
        await #expect(throws: TCPError.cancelled) { _ = try await received.value }
        await #expect(throws: TCPError.cancelled) { _ = try await accepting.value }
        await #expect(throws: UDPError.cancelled) { _ = try await datagram.value }
        #expect(await ending.value == .cancelled)
        await #expect(throws: TCPError.cancelled) { _ = try await connecting.value }
        try await Task.sleep(for: .milliseconds(100))
        connection.abort()
        let (status, returned) = await sent.value
        #expect(status == .failed(.aborted), "the queued send waited for its completion")
        #expect(returned == address, "and got its buffer back")
        // Both connections' sockets go: the given-up one and the aborted one.
        #expect(try await Self.socketsLeft(in: client) == 0)
    }

    /// Port 0 is refused with its reason, for listening and connecting alike (it was taken:
    /// a listener on 0, a SYN to port 0).
    @Test func portZeroIsRefused() async throws {
        let (server, client) = try Self.hosts()
        defer {
            client.stop()
            server.stop()
        }
        #expect(throws: TCPError.invalidPort) { _ = try server.tcp.listen(port: 0) }
        await #expect(throws: TCPError.invalidPort) { _ = try await client.tcp.connect(to: IPv4Address(10, 0, 0, 1), port: 0) }
    }

    @Test(arguments: [false, true])
    func connectingWhereNobodyListensThrowsRefused(engineThread: Bool) async throws {
        let (server, client) = try Self.hosts(engineThread: engineThread)
        defer {
            client.stop()
            server.stop()
        }
        await #expect(throws: TCPError.connectionRefused) {
            _ = try await client.tcp.connect(to: IPv4Address(10, 0, 0, 1), port: 9)
        }
        // The failed connection's socket is released: the application never had it to close.
        #expect(try await Self.socketsLeft(in: client) == 0, "the refused connection's socket is left in the stack")
    }
}
/// Carries a buffer into a task that sends it.
final class BufferHand: @unchecked Sendable {
    private var buffer: TxBuffer?
    let address: Int
    init(_ buffer: consuming TxBuffer) {
        address = Int(bitPattern: buffer.baseAddress)
        self.buffer = .some(buffer)
    }
    func take() -> TxBuffer { buffer.take()! }
}
#endif
