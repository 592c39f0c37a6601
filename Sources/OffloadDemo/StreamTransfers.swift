import OffloadCore
import OffloadTCP

/// The demo's TCP traffic: the client opens every connection at once, and each sends a
/// header (its number and length) and then its bytes as zero-copy messages, one fresh
/// application buffer each. The server checks every byte it reads against the payload,
/// and every completion must bring back, once and in order, the buffer it was sent with.
final class StreamTransfers {
    static let port: UInt16 = 5001
    static let headerSize = 8

    struct Sender {
        let socket: TCPSocket
        /// Stream bytes queued so far (header included).
        var queued = 0
        var messages: [MessageID] = []
        /// Where each message's buffer lies, to know it again when it comes back.
        var buffers: [MessageID: UInt] = [:]
        var completed: [MessageID] = []
        var completionRanges = 0
        var closed = false
    }

    struct Receiver {
        let socket: TCPSocket
        var header: [UInt8] = []
        var connection: Int?
        var expected = 0
        /// Payload bytes read and checked.
        var verified = 0
        var closed = false
    }

    let payload: DemoPayload
    let connections: Int
    let bytesPerConnection: Int
    let messageSize: Int
    private(set) var senders: [Sender] = []
    private(set) var receivers: [Receiver] = []
    /// What went wrong with the streams' bytes or connections, in words, for the report.
    private(set) var failures: [String] = []
    /// What went wrong with the messages' completions: failed, twice, out of order, or with
    /// a buffer other than their own.
    private(set) var completionFailures: [String] = []
    /// Counters of each side's connections, taken as they close.
    private(set) var clientCounters = TCPConnectionCounters()
    private(set) var serverCounters = TCPConnectionCounters()
    /// When the last connection's last byte was read (simulated time).
    private(set) var finishedAt: Instant?
    private var readBuffer = [UInt8](repeating: 0, count: 65_536)

    init(payload: DemoPayload, connections: Int, bytesPerConnection: Int, messageSize: Int) {
        self.payload = payload
        self.connections = connections
        self.bytesPerConnection = bytesPerConnection
        self.messageSize = messageSize
    }

    var streamLength: Int { Self.headerSize + bytesPerConnection }
    var bytesVerified: Int { receivers.reduce(0) { $0 + $1.verified } }
    var sendersDone: Int { senders.count(where: \.closed) }
    var receiversDone: Int { receivers.count(where: \.closed) }
    var isDone: Bool { sendersDone == connections && receiversDone == connections }

    /// Listens on the server and opens every connection from the client.
    func start(client: TCPStack, server: TCPStack, to address: IPv4Address, now: Instant) {
        do {
            try server.listen(port: Self.port, backlog: connections)
            for _ in 0..<connections {
                senders.append(Sender(socket: try client.connect(to: address, port: Self.port, now: now)))
            }
        } catch {
            failures.append("could not open the connections: \(error)")
        }
    }

    /// One turn of both applications; returns whether anything happened.
    func step(client: TCPStack, server: TCPStack, now: Instant) -> Bool {
        var worked = false
        for i in senders.indices where !senders[i].closed { worked = send(i, client) || worked }
        while let socket = server.accept(port: Self.port) {
            receivers.append(Receiver(socket: socket))
            worked = true
        }
        for i in receivers.indices where !receivers[i].closed { worked = receive(i, server) || worked }
        if finishedAt == nil && worked && bytesVerified == connections * bytesPerConnection { finishedAt = now }
        return worked
    }

    private func send(_ i: Int, _ tcp: TCPStack) -> Bool {
        var worked = false
        let socket = senders[i].socket
        if let error = tcp.connection(socket)?.error {
            failures.append("connection \(i): \(error)")
            tcp.close(socket)
            senders[i].closed = true
            return true
        }
        sending: while senders[i].queued < streamLength, tcp.connection(socket)?.canSend ?? false {
            let offset = senders[i].queued
            var buffer = TxBuffer(count: min(messageSize, streamLength - offset))
            buffer.withUnsafeMutableBytes { fill($0, connection: i, offset: offset) }
            let base = UInt(bitPattern: buffer.baseAddress)
            let length = buffer.count
            switch tcp.send(buffer, on: socket) {
            case .queued(let id):
                senders[i].queued += length
                senders[i].messages.append(id)
                senders[i].buffers[id] = base
                worked = true
            case .refused(.sendQueueFull, _):
                break sending  // the completions below make room
            case .refused(let error, _):
                failures.append("connection \(i): a send was refused: \(error)")
                tcp.close(socket)
                senders[i].closed = true
                return true
            }
        }
        let ranges = tcp.takeCompletions(of: socket) { completion in
            let id = completion.id
            if case .failed(let error) = completion.status {
                completionFailures.append("connection \(i): message \(id) failed: \(error)")
            }
            if senders[i].buffers.removeValue(forKey: id) != UInt(bitPattern: completion.buffer.baseAddress) {
                completionFailures.append("connection \(i): message \(id) came back with another buffer")
            }
            senders[i].completed.append(id)
        }
        if !ranges.isEmpty {
            senders[i].completionRanges += ranges.count
            worked = true
        }
        if senders[i].queued == streamLength && senders[i].completed.count == senders[i].messages.count {
            if let c = tcp.connection(socket) { add(c.counters, to: &clientCounters) }
            tcp.close(socket)
            senders[i].closed = true
            if senders[i].completed != senders[i].messages {
                completionFailures.append("connection \(i): messages completed out of order or not once each")
            }
            worked = true
        }
        return worked
    }

    /// The stream's bytes from `offset`: the header (connection number, payload length),
    /// then the payload.
    private func fill(_ out: UnsafeMutableRawBufferPointer, connection: Int, offset: Int) {
        var at = 0
        if offset < Self.headerSize {
            let header = Self.header(connection: connection, length: bytesPerConnection)
            let n = min(Self.headerSize - offset, out.count)
            for k in 0..<n { out[k] = header[offset + k] }
            at = n
        }
        guard at < out.count else { return }
        payload.fill(UnsafeMutableRawBufferPointer(rebasing: out[at...]), stream: connection,
                     offset: offset + at - Self.headerSize)
    }

    static func header(connection: Int, length: Int) -> [UInt8] {
        let c = UInt32(connection), l = UInt32(truncatingIfNeeded: length)
        return [UInt8(c >> 24), UInt8(c >> 16 & 0xff), UInt8(c >> 8 & 0xff), UInt8(c & 0xff),
                UInt8(l >> 24), UInt8(l >> 16 & 0xff), UInt8(l >> 8 & 0xff), UInt8(l & 0xff)]
    }

    private func receive(_ i: Int, _ tcp: TCPStack) -> Bool {
        let socket = receivers[i].socket
        var worked = false
        while true {
            let n = readBuffer.withUnsafeMutableBytes { tcp.read(socket, into: $0) }
            guard n > 0 else { break }
            worked = true
            readBuffer.withUnsafeBytes { check(UnsafeRawBufferPointer(rebasing: $0[0..<n]), receiver: i) }
        }
        if let c = tcp.connection(socket), c.isAtEndOfInput {
            let r = receivers[i]
            if r.connection == nil || r.verified != r.expected {
                failures.append("server connection \(i) ended after \(r.verified) of \(r.expected) bytes")
            }
            add(c.counters, to: &serverCounters)
            tcp.close(socket)
            receivers[i].closed = true
            worked = true
        }
        return worked
    }

    private func check(_ bytes: UnsafeRawBufferPointer, receiver i: Int) {
        var bytes = bytes
        if receivers[i].connection == nil {
            let n = min(Self.headerSize - receivers[i].header.count, bytes.count)
            receivers[i].header += bytes[0..<n]
            bytes = UnsafeRawBufferPointer(rebasing: bytes[n...])
            guard receivers[i].header.count == Self.headerSize else { return }
            let h = receivers[i].header.map(Int.init)
            let connection = h[0] << 24 | h[1] << 16 | h[2] << 8 | h[3]
            receivers[i].connection = connection
            receivers[i].expected = h[4] << 24 | h[5] << 16 | h[6] << 8 | h[7]
            if receivers[i].header != Self.header(connection: connection, length: bytesPerConnection)
                || connection >= connections {
                failures.append("server connection \(i): a header that no client connection sent")
            }
        }
        guard !bytes.isEmpty, let connection = receivers[i].connection else { return }
        let offset = receivers[i].verified
        if offset + bytes.count > receivers[i].expected || !payload.matches(bytes, stream: connection, offset: offset) {
            failures.append("connection \(connection): bytes \(offset)..<\(offset + bytes.count) are not the ones sent")
        }
        receivers[i].verified += bytes.count
    }

    /// The client's counters: of closed connections as they closed, of the others as they are.
    func clientTotals(_ tcp: TCPStack) -> TCPConnectionCounters {
        var total = clientCounters
        for sender in senders where !sender.closed {
            if let c = tcp.connection(sender.socket) { add(c.counters, to: &total) }
        }
        return total
    }

    private func add(_ c: TCPConnectionCounters, to total: inout TCPConnectionCounters) {
        total.segmentsSent += c.segmentsSent
        total.segmentsReceived += c.segmentsReceived
        total.bytesSent += c.bytesSent
        total.bytesRetransmitted += c.bytesRetransmitted
        total.segmentsRetransmitted += c.segmentsRetransmitted
        total.bytesReceived += c.bytesReceived
        total.outOfOrderSegments += c.outOfOrderSegments
        total.fastRetransmits += c.fastRetransmits
        total.retransmissionTimeouts += c.retransmissionTimeouts
        total.tailLossProbes += c.tailLossProbes
    }
}
