#if os(Linux)
import Testing
import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink
import OffloadTCP

/// TCP offload with each host's engine on a thread of its own (`startEngineThread`), as an
/// offload NIC runs beside the host's CPU: the engines run the connections' data transfer
/// while the test's thread runs both hosts' software and applications. The hosts are joined
/// by a socket pair, so the two engines and the test's thread all run at once.
@Suite struct EngineThreadTests {
    typealias Endpoint = HostEndpoint<SocketPairLink>
    /// Uploads asked before the connections may close.
    static let movesWanted = 10

    static func endpoints(offload: Bool = true) throws -> (Endpoint, Endpoint) {
        let (a, b) = try SocketPairLink.makePair()
        var engine = Engine<SocketPairLink>.Configuration()
        engine.bufferSize = max(engine.bufferSize, SocketPairLink.maxFrameSize + Engine<SocketPairLink>.headroom)
        var tcp = TCPStack.Configuration()
        tcp.tcp.maximumSegmentLifetime = .milliseconds(50)
        func endpoint(_ descriptor: Int32, _ n: UInt64, seed: UInt64) throws -> Endpoint {
            tcp.seed = seed
            return try HostEndpoint(
                host: .init(interface: try IPv4CIDR(parsing: "10.0.0.\(n)/24"), hardwareAddress: .local(n)),
                tcp: tcp, engine: engine, offload: offload, clock: MonotonicClock()) {
                SocketPairLink(adopting: descriptor, address: .local(n))
            }
        }
        return (try endpoint(a, 1, seed: 1), try endpoint(b, 2, seed: 2))
    }

    /// One direction of one connection: the bytes to send, as messages of random sizes, and
    /// what arrived.
    struct Stream {
        let data: [UInt8]
        var sent = 0
        var messages: [Int] = []
        var nextCompletion: MessageID?
        var completed = 0
        var closed = false
        var received: [UInt8] = []
    }

    /// Four connections carry 2 MiB each way at once. Meanwhile the test's thread asks for
    /// connections back from the engines (`upload`) and gives them back (`offload`) every few
    /// milliseconds, so connections cross between the threads in the middle of their
    /// transfers. Every byte arrives once and in order, every message completes once and in
    /// order, and afterwards both stacks and both engines hold nothing. Without offload the
    /// engines' threads carry the hosts' own segments through the exception and
    /// re-insertion queues.
    @Test(arguments: [true, false])
    func connectionsRunWithTheEnginesOnThreadsOfTheirOwn(offload: Bool) throws {
        let (a, b) = try Self.endpoints(offload: offload)
        try a.startEngineThread()
        try b.startEngineThread()
        defer {
            a.stopEngineThread()
            b.stopEngineThread()
        }
        #expect(a.hasEngineThread && b.hasEngineThread)
        let clock = MonotonicClock()
        let size = 2 << 20, connections = 4
        var random = SeededRandom(seed: 17)
        try b.tcp.listen(port: 9)
        let clients = try (0..<connections).map { _ in try a.tcp.connect(to: IPv4Address(10, 0, 0, 2), port: 9, now: clock.now) }
        var servers: [TCPSocket] = []
        // Streams by end (0: a, 1: b) and socket: what each end sends and receives.
        var streams: [[TCPSocket: Stream]] = [[:], [:]]
        func pattern(_ seed: UInt64) -> [UInt8] {
            var r = SeededRandom(seed: seed)
            return (0..<size).map { _ in UInt8(truncatingIfNeeded: r.next()) }
        }
        for (i, c) in clients.enumerated() { streams[0][c] = Stream(data: pattern(UInt64(100 + i))) }
        var sink = [UInt8](repeating: 0, count: 64 << 10)
        var moves = 0, nextMove = clock.now
        var failures: [String] = []

        /// One application turn on one end: send, read, take completions, close when done.
        func serve(_ end: Int, _ stack: TCPStack, _ socket: TCPSocket) -> Bool {
            guard var s = streams[end][socket], let status = stack.status(socket) else { return false }
            while s.sent < s.data.count, status.canSend {
                let n = min(s.data.count - s.sent, 1 + Int(random.next() % UInt64(64 << 10)))
                guard stack.status(socket)?.hasRoom(for: n) ?? false else { break }
                switch stack.send(TxBuffer(copying: s.data[s.sent..<(s.sent + n)]), on: socket) {
                case .queued(let id):
                    if s.nextCompletion == nil { s.nextCompletion = id }
                    s.messages.append(n)
                    s.sent += n
                case .refused(let error, _):
                    failures.append("send refused: \(error)")
                }
            }
            let n = sink.withUnsafeMutableBytes { stack.read(socket, into: $0) }
            s.received += sink[0..<n]
            stack.takeCompletions(of: socket) { completion in
                if completion.id != s.nextCompletion || completion.status != .acknowledged {
                    failures.append("completion \(completion.id) \(completion.status), expected \(String(describing: s.nextCompletion))")
                }
                s.nextCompletion = completion.id + 1
                s.completed += 1
            }
            // Closed once everything is acknowledged and connections have moved often enough,
            // so that they move between the threads for the whole transfer (a closed one stays
            // with the host).
            if s.sent == s.data.count && s.completed == s.messages.count && !s.closed
                && (!offload || moves >= Self.movesWanted) {
                s.closed = true
                stack.close(socket)
            }
            streams[end][socket] = s
            return n > 0
        }

        let deadline = clock.now + .seconds(60)
        var done = false
        while !done && clock.now < deadline && failures.isEmpty {
            let now = clock.now
            a.turn(now: now)
            b.turn(now: now)
            while let s = b.tcp.accept(port: 9) {
                servers.append(s)
                streams[1][s] = Stream(data: pattern(UInt64(200 + servers.count)))
            }
            for c in clients { _ = serve(0, a.tcp, c) }
            for s in servers { _ = serve(1, b.tcp, s) }
            // Move a connection across: back to the host, or out to the engine again.
            if offload, now >= nextMove, servers.count == connections {
                nextMove = now + .milliseconds(3)
                let (stack, socket) = random.next() % 2 == 0
                    ? (a.tcp, clients[Int(random.next() % UInt64(clients.count))])
                    : (b.tcp, servers[Int(random.next() % UInt64(servers.count))])
                if stack.isOffloaded(socket) {
                    if stack.upload(socket) { moves += 1 }
                } else {
                    stack.offload(socket)
                }
            }
            a.ringEngine()
            b.ringEngine()
            done = servers.count == connections && a.tcp.isQuiescent && b.tcp.isQuiescent
        }
        #expect(failures.isEmpty, "\(failures.prefix(5))")
        #expect(done, "stacks at rest: \(a.tcp.isQuiescent) \(b.tcp.isQuiescent), servers \(servers.count)")
        // Each end's stream arrived at the other end's socket of the same connection: match
        // them by what they carry. (Compared into Bools first: a failed expectation would
        // print the megabytes.)
        for end in 0..<2 {
            let sent = Set(streams[1 - end].values.map(\.data))
            for (socket, stream) in streams[end] {
                #expect(stream.completed == stream.messages.count,
                        "end \(end), socket \(socket): \(stream.completed) of \(stream.messages.count) messages completed")
                let wasSent = sent.contains(stream.received)
                #expect(wasSent, "end \(end), socket \(socket): \(stream.received.count) bytes received are not what was sent")
            }
            let everyStreamOnce = Set(streams[end].values.map(\.received)) == sent
            #expect(everyStreamOnce, "end \(end): every stream arrived once")
        }
        let reports = (a.stopEngineThread(), b.stopEngineThread())
        #expect(reports.0 != nil && reports.1 != nil)
        for e in [a, b] {
            #expect(e.engine.tcp.count == 0 && e.engine.buffered == 0)
            if offload {
                #expect(e.engine.tcp.counters.payloadBytesSent > 0, "the engine carried data")
            } else {
                #expect(e.engine.tcp.counters.offloaded == 0 && e.engine.counters.originated > 1000,
                        "the host's own segments crossed the engine")
            }
        }
        let uploads = a.tcp.counters.connectionsUploaded + b.tcp.counters.connectionsUploaded
        print("engine threads: \(moves) uploads asked, \(uploads) connections uploaded; engines slept "
              + "\(reports.0?.sleeps ?? 0) and \(reports.1?.sleeps ?? 0) times")
        #expect(!offload || moves >= Self.movesWanted, "connections moved between the threads mid-transfer")
    }
}
#endif
