import ArgumentParser
import OffloadCore
import OffloadTCP

#if canImport(Glibc)
import Glibc
#endif

struct SendCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Connect and send a file or N bytes as zero-copy messages; print throughput and completions.",
        discussion: """
            A file is mapped into memory and sent as messages that point into the mapping: the \
            stack never copies it, and each message comes back with its completion once the \
            peer has acknowledged it. What the peer sends back is read (and kept with --output).
            """)

    @OptionGroup var endpoint: TCPEndpointOptions

    @Option(help: "Where to connect: HOST:PORT.")
    var to: Destination

    @Option(help: "Send this file.")
    var file: String?

    @Option(help: "Send this many bytes of a pattern.")
    var bytes: Int?

    @Option(help: "Bytes per message.")
    var messageSize = 256 * 1024

    @Option(help: "Connections at once.")
    var connections = 1

    @Option(help: "Rounds of --connections connections, one after the other.")
    var rounds = 1

    @Option(help: "Write what the peer sends back to this file (one connection only).")
    var output: String?

    @Flag(help: "After the last round, wait for TIME_WAIT to end and report whether the stack is at rest.")
    var waitForRest = false

    struct Destination: ExpressibleByArgument, CustomStringConvertible {
        var address: IPv4Address
        var port: UInt16
        init?(argument: String) {
            let parts = argument.split(separator: ":")
            guard parts.count == 2, let a = IPv4Address(argument: String(parts[0])), let p = UInt16(parts[1]),
                  p > 0 else { return nil }
            address = a
            port = p
        }
        var description: String { "\(address):\(port)" }
    }

    func validate() throws {
        guard (file == nil) != (bytes == nil) else { throw ValidationError("give exactly one of --file and --bytes") }
        if let bytes, bytes < 0 { throw ValidationError("--bytes cannot be negative") }
        guard messageSize <= TCPConfiguration.largestMessage else {
            throw ValidationError("--message-size is at most \(TCPConfiguration.largestMessage) bytes")
        }
        guard messageSize > 0, connections > 0, rounds > 0 else {
            throw ValidationError("--message-size, --connections and --rounds must be positive")
        }
        if output != nil && connections != 1 { throw ValidationError("--output needs --connections 1") }
    }

    func run() throws {
        let data = try file.map { try MappedFile(path: $0) } ?? MappedFile(pattern: bytes ?? 0)
        var out: UnsafeMutablePointer<FILE>?
        if let output {
            guard let f = fopen(output, "w") else {
                throw RunError(message: "offload send: cannot write \(output): \(String(cString: strerror(errno)))")
            }
            out = f
        }
        defer { if let out { fclose(out) } }
        let application = SendApplication(destination: to, data: data, messageSize: messageSize,
                                          connections: connections, rounds: rounds, output: out,
                                          waitForRest: waitForRest)
        let banner = "offload send: \(data.count) bytes to \(to), \(connections) connection(s) × \(rounds) round(s), "
            + "from \(endpoint.host.address) on \(endpoint.host.link)"
        let stack = try TCPEndpoint(options: endpoint, name: "offload send").run(application, banner: banner)
        let t = application.reportedTotals
        let elapsed = application.elapsed
        endpoint.say("sent \(t.bytesSent) bytes in \(elapsed): \(String(format: "%.3f", gigabits(t.bytesSent, over: elapsed))) "
                     + "Gbit/s; received \(t.bytesReceived) bytes")
        endpoint.say("connections \(t.connections) (failed \(t.failed.count)); retransmitted segments "
                     + "\(t.segmentsRetransmitted) (timeouts \(t.timeouts), fast \(t.fastRetransmits)); completions "
                     + "\(t.completions) in \(t.completionRanges) ranges, \(application.failedCompletions) failed")
        if waitForRest {
            endpoint.say("stack at rest: \(stack.isQuiescent ? "yes" : "no") (connections \(stack.connectionCount), "
                         + "sockets \(stack.socketCount))")
        }
        for f in t.failed.prefix(10) { endpoint.say("failed: \(f)") }
        for u in application.unfinished.prefix(10) { endpoint.say("unfinished: \(u)") }
        guard application.finished, t.failed.isEmpty, application.failedCompletions == 0,
              !waitForRest || stack.isQuiescent else { throw ExitCode(1) }
    }
}

/// The bytes to send: a file mapped read-only, or a pattern in memory.
final class MappedFile {
    let base: UnsafeMutableRawPointer?
    let count: Int
    private let mapped: Bool

    init(path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw RunError(message: "offload send: cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { Glibc.close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw RunError(message: "offload send: cannot stat \(path)") }
        count = Int(info.st_size)
        mapped = count > 0
        if count > 0 {
            guard let p = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
                throw RunError(message: "offload send: cannot map \(path): \(String(cString: strerror(errno)))")
            }
            base = p
        } else {
            base = nil
        }
    }

    init(pattern count: Int) {
        self.count = count
        mapped = false
        guard count > 0 else {
            base = nil
            return
        }
        let p = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 64)
        fillPattern(p, count: count)
        base = p
    }

    deinit {
        guard let base else { return }
        if mapped { munmap(base, count) } else { base.deallocate() }
    }
}

/// Opens connections in rounds; each sends all of the data as messages pointing into it,
/// reads what comes back, and closes.
final class SendApplication: TCPApplication {
    final class Sending {
        let socket: TCPSocket
        /// Read once the host has it back, for the report.
        let connection: TCPConnection
        let id: TCPConnectionID
        var offset = 0
        var closed = false
        /// As of its last turn (the connection is the engine's while offloaded).
        var status: TCPSocketStatus?
        init(socket: TCPSocket, connection: TCPConnection) {
            self.socket = socket
            self.connection = connection
            id = connection.id
        }
    }

    let destination: SendCommand.Destination
    let data: MappedFile
    let messageSize: Int
    let connectionsPerRound: Int
    let rounds: Int
    let output: UnsafeMutablePointer<FILE>?
    let waitForRest: Bool
    private var round = 0
    private var active: [Sending] = []
    private(set) var totals = TCPTotals()
    private(set) var failedCompletions = 0
    private(set) var finished = false
    private var started: Instant?
    private var ended: Instant?
    private var restDeadline: Instant?
    private var rested = false

    init(destination: SendCommand.Destination, data: MappedFile, messageSize: Int, connections: Int, rounds: Int,
         output: UnsafeMutablePointer<FILE>?, waitForRest: Bool) {
        self.destination = destination
        self.data = data
        self.messageSize = messageSize
        connectionsPerRound = connections
        self.rounds = rounds
        self.output = output
        self.waitForRest = waitForRest
    }

    /// The connections still running, for the report of a run that was cut short.
    var unfinished: [String] {
        active.map { "\($0.id) \($0.status.map { "\($0.state), \($0.unacknowledgedBytes) bytes unacknowledged" } ?? "released")" }
    }

    var isDone: Bool { finished && (!waitForRest || rested) || !totals.failed.isEmpty && active.isEmpty }
    /// From the first connection to the last one's end, or to the last turn of a run cut short.
    var elapsed: Duration { started.flatMap { s in (ended ?? lastTurn).map { $0 - s } } ?? .zero }
    /// The totals with the connections still running counted too (a run cut short).
    var reportedTotals: TCPTotals {
        var t = totals
        for s in active { t.add(s.connection, finished: false) }
        return t
    }
    private var lastTurn: Instant?

    func turn(_ stack: TCPStack, now: Instant) {
        lastTurn = now
        if finished {
            if restDeadline == nil {
                restDeadline = now + stack.configuration.tcp.maximumSegmentLifetime * 2 + .seconds(2)
            }
            rested = stack.isQuiescent || now >= restDeadline!
            return
        }
        if active.isEmpty {
            guard round < rounds else {
                finished = true
                ended = now
                return
            }
            round += 1
            if started == nil { started = now }
            for _ in 0..<connectionsPerRound {
                do {
                    let socket = try stack.connect(to: destination.address, port: destination.port, now: now)
                    active.append(Sending(socket: socket, connection: stack.connection(socket)!))
                } catch {
                    totals.failed.append("connect: \(error)")
                }
            }
        }
        active.removeAll { step($0, stack: stack, now: now) }
        if active.isEmpty && !totals.failed.isEmpty {
            finished = true
            ended = now
        }
    }

    /// One connection's turn; true when it is finished and released.
    private func step(_ s: Sending, stack: TCPStack, now: Instant) -> Bool {
        // The connection's own state is the engine's while it is offloaded: the status is ours.
        while s.offset < data.count, let status = stack.status(s.socket), status.canSend {
            let size = min(messageSize, data.count - s.offset)
            guard status.hasRoom(for: size) else { break }
            let buffer = TxBuffer(unowned: data.base! + s.offset, count: size)
            guard case .queued = stack.send(buffer, on: s.socket) else { break }
            s.offset += size
        }
        stack.read(s.socket, max: Int.max) { piece in
            if let output { fwrite(piece.baseAddress, 1, piece.count, output) }
        }
        let ranges = stack.takeCompletions(of: s.socket) { completion in
            if case .failed = completion.status { failedCompletions += 1 }
        }
        totals.completionRanges += ranges.count
        totals.completions += ranges.reduce(0) { $0 + $1.count }
        s.status = stack.status(s.socket)
        let state = s.status?.state ?? .closed
        if !s.closed && (s.offset == data.count || state == .closed) {
            s.closed = true
            stack.close(s.socket)
        }
        // Done once our data is acknowledged and the peer has closed too (its FIN seen).
        guard s.closed, state == .closed || state == .timeWait, s.status?.unacknowledgedBytes ?? 0 == 0 || state == .closed
        else { return false }
        stack.read(s.socket, max: Int.max) { piece in
            if let output { fwrite(piece.baseAddress, 1, piece.count, output) }
        }
        totals.add(s.connection)
        return true
    }
}
