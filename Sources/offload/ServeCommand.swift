import ArgumentParser
import OffloadCore
import OffloadTCP

#if canImport(Glibc)
import Glibc
#endif

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "A TCP endpoint on a link: accept connections and sink, echo or source data.",
        discussion: """
            The TAP device is created by this command; move its kernel side into a namespace \
            and give it an address there, then connect from the namespace (socat, or a \
            program of your own). Each finished connection prints a line; a summary follows at the end.
            """)

    enum Mode: String, ExpressibleByArgument, CaseIterable {
        case sink, echo, source
    }

    @OptionGroup var endpoint: TCPEndpointOptions

    @Option(help: "The TCP port to listen on.")
    var port: UInt16

    @Option(help: "sink: read and keep or discard; echo: send back what arrives; source: send --bytes, then close.")
    var mode: Mode = .sink

    @Option(help: "sink: write what every connection sends, one after the other, to this file.")
    var output: String?

    @Option(help: "source: bytes to send on every connection.")
    var bytes: Int = 1 << 30

    @Option(help: "Exit after this many connections have finished (default: run until SIGINT, SIGTERM or --duration).")
    var connections: Int?

    @Option(help: "The listen backlog: established connections not yet accepted.")
    var backlog = 128

    func validate() throws {
        guard port > 0 else { throw ValidationError("--port is 1 to 65535") }
        guard backlog > 0 else { throw ValidationError("--backlog must be positive") }
        guard bytes >= 0 else { throw ValidationError("--bytes cannot be negative") }
        if let connections, connections <= 0 { throw ValidationError("--connections must be positive") }
    }

    func run() throws {
        var file: UnsafeMutablePointer<FILE>?
        if let output {
            guard let f = fopen(output, "w") else {
                throw RunError(message: "offload serve: cannot write \(output): \(String(cString: strerror(errno)))")
            }
            file = f
        }
        defer { if let file { fclose(file) } }
        let application = ServeApplication(port: port, mode: mode, output: file, sourceBytes: bytes,
                                           connectionLimit: connections, backlog: backlog, say: endpoint.say)
        let stack = try TCPEndpoint(options: endpoint, name: "offload serve").run(
            application, banner: "offload serve: \(endpoint.host.address) port \(port), \(mode) mode, on \(endpoint.host.link)")
        let t = application.totals
        endpoint.say("served \(t.connections) connections: received \(t.bytesReceived) bytes, sent \(t.bytesSent) bytes, "
                     + "retransmitted segments \(t.segmentsRetransmitted) (timeouts \(t.timeouts), fast \(t.fastRetransmits)), "
                     + "completions \(t.completions) in \(t.completionRanges) ranges, failed \(t.failed.count)")
        let s = stack.counters
        endpoint.say("stack: syn cookies sent \(s.synCookiesSent), accepted \(s.synCookiesAccepted), rejected "
                     + "\(s.synCookiesRejected); SYNs dropped (backlog full) \(s.synsDroppedBacklogFull); resets sent "
                     + "\(s.resetsSent); open connections \(stack.connectionCount)")
        for f in t.failed.prefix(10) { endpoint.say("failed: \(f)") }
        if let limit = connections, t.connections < limit || !t.failed.isEmpty { throw ExitCode(1) }
    }
}

/// Accepts every connection on a port and serves it in the chosen mode.
final class ServeApplication: TCPApplication {
    final class Served {
        let socket: TCPSocket
        /// Read once the host has it back, for the report.
        let connection: TCPConnection
        let id: TCPConnectionID
        let started: Instant
        var sourceLeft: Int
        var closed = false
        init(socket: TCPSocket, connection: TCPConnection, id: TCPConnectionID, started: Instant, sourceLeft: Int) {
            self.socket = socket
            self.connection = connection
            self.id = id
            self.started = started
            self.sourceLeft = sourceLeft
        }
    }

    let port: UInt16
    let mode: ServeCommand.Mode
    let output: UnsafeMutablePointer<FILE>?
    let sourceBytes: Int
    let connectionLimit: Int?
    let backlog: Int
    /// Where the report's lines go (`TCPEndpointOptions.say`).
    let say: (String) -> Void
    private var listening = false
    private var served: [Served] = []
    private(set) var totals = TCPTotals()
    /// Source mode sends slices of this, as messages the completions hand back.
    private let pattern: UnsafeMutableRawBufferPointer
    private var scratch = [UInt8](repeating: 0, count: 256 * 1024)

    init(port: UInt16, mode: ServeCommand.Mode, output: UnsafeMutablePointer<FILE>?, sourceBytes: Int,
         connectionLimit: Int?, backlog: Int, say: @escaping (String) -> Void) {
        self.say = say
        self.port = port
        self.mode = mode
        self.output = output
        self.sourceBytes = sourceBytes
        self.connectionLimit = connectionLimit
        self.backlog = backlog
        pattern = .allocate(byteCount: 1 << 20, alignment: 64)
        fillPattern(pattern.baseAddress!, count: pattern.count)
    }

    deinit { pattern.deallocate() }

    var isDone: Bool { connectionLimit.map { totals.connections >= $0 } ?? false }

    func turn(_ stack: TCPStack, now: Instant) {
        if !listening {
            do { try stack.listen(port: port, backlog: backlog) } catch {
                say("offload serve: \(error)")
                totals.failed.append("listen: \(error)")
                totals.connections = connectionLimit ?? 0
                return
            }
            listening = true
        }
        while let socket = stack.accept(port: port), let connection = stack.connection(socket),
              let status = stack.status(socket) {
            served.append(Served(socket: socket, connection: connection, id: status.id, started: now,
                                 sourceLeft: mode == .source ? sourceBytes : 0))
        }
        // With --output, connections are written one after the other: only the oldest is
        // read; the others wait, their windows closing, until it is done.
        let oldest = served.first.map { ObjectIdentifier($0) }
        served.removeAll { serve($0, stack: stack, now: now, mayRead: output == nil || ObjectIdentifier($0) == oldest) }
    }

    /// One connection's turn; true when it is finished and released.
    private func serve(_ s: Served, stack: TCPStack, now: Instant, mayRead: Bool) -> Bool {
        // The connection's own state is the engine's while it is offloaded: the status is ours.
        guard let status = stack.status(s.socket) else { return finish(s, now: now) }
        switch mode {
        case .sink:
            guard mayRead else { break }
            stack.read(s.socket, max: Int.max) { piece in
                if let output { fwrite(piece.baseAddress, 1, piece.count, output) }
            }
        case .echo:
            // Read only what the send queue has room for: bytes read are sent back.
            while let current = stack.status(s.socket), current.canSend, current.hasRoom(for: scratch.count) {
                let n = scratch.withUnsafeMutableBytes { stack.read(s.socket, into: $0) }
                guard n > 0 else { break }
                if case .refused(let error, _) = stack.send(TxBuffer(copying: scratch[0..<n]), on: s.socket) {
                    totals.failed.append("\(s.id): echo: \(error)")
                }
            }
            if !status.canSend { stack.read(s.socket, max: Int.max) { _ in } }
        case .source:
            stack.read(s.socket, max: Int.max) { _ in }
            while s.sourceLeft > 0, let current = stack.status(s.socket), current.canSend {
                let size = min(s.sourceLeft, 64 * 1024)
                guard current.hasRoom(for: size) else { break }
                let buffer = TxBuffer(unowned: pattern.baseAddress!, count: size)
                guard case .queued = stack.send(buffer, on: s.socket) else { break }
                s.sourceLeft -= size
            }
        }
        let ranges = stack.takeCompletions(of: s.socket) { _ in }
        totals.completionRanges += ranges.count
        totals.completions += ranges.reduce(0) { $0 + $1.count }
        let finishedSending = mode != .source || s.sourceLeft == 0
        if !s.closed, let c = stack.status(s.socket),
           c.isAtEndOfInput && finishedSending && (mode != .echo || c.readableBytes == 0) || c.state == .closed {
            s.closed = true
            stack.close(s.socket)
        }
        guard s.closed, stack.status(s.socket) == nil else { return false }
        return finish(s, now: now)
    }

    /// A connection released: the host has it back, so its counters can be read.
    private func finish(_ s: Served, now: Instant) -> Bool {
        let c = s.connection
        totals.add(c)
        let received = c.counters.bytesReceived, sent = c.counters.bytesSent - c.counters.bytesRetransmitted
        say("connection \(c.id): received \(received) bytes, sent \(sent) bytes in \(now - s.started), "
            + "retransmitted segments \(c.counters.segmentsRetransmitted)\(c.error.map { ", \($0)" } ?? "")")
        return true
    }
}
