import OffloadCore
import OffloadTCP

/// One application on each end of a connection: it sends its bytes as messages of random
/// sizes (owned buffers), reads everything, checks every completion, and closes once all
/// its data is acknowledged... or at once, for the side that closes first.
final class TransferEnd {
    let stack: TCPStack
    var socket: TCPSocket?
    /// Kept past the socket's release, for its counters.
    var connection: TCPConnection?
    let outgoing: [UInt8]
    var sentUpTo = 0
    var received: [UInt8] = []
    /// Message id → where its bytes start in `outgoing`, for checking what comes back.
    var messageStarts: [MessageID: (start: Int, count: Int)] = [:]
    var completed: [MessageID: Int] = [:]
    var failedCompletions = 0
    var wrongBuffers = 0
    var refusals: [TCPError] = []
    var closed = false
    var sawEnd = false
    var random: SeededRandom

    init(stack: TCPStack, outgoing: [UInt8], seed: UInt64) {
        self.stack = stack
        self.outgoing = outgoing
        random = SeededRandom(seed: seed)
    }

    var allCompleted: Bool { completed.count == messageStarts.count && sentUpTo == outgoing.count }

    /// One turn of the application: send what it can, read what arrived, take completions,
    /// close when everything it had is queued.
    func turn() {
        guard let socket else { return }
        if connection == nil { connection = stack.connection(socket) }
        while sentUpTo < outgoing.count, let c = stack.connection(socket), c.canSend {
            let size = min(outgoing.count - sentUpTo, 1 + Int(random.next() % 9000))
            guard c.unacknowledgedBytes + size <= c.configuration.sendQueueLimit else { break }
            let buffer = TxBuffer(copying: outgoing[sentUpTo..<(sentUpTo + size)])
            switch stack.send(buffer, on: socket) {
            case .queued(let id):
                messageStarts[id] = (sentUpTo, size)
                sentUpTo += size
            case .refused(let error, _):
                refusals.append(error)
                return
            }
        }
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = chunk.withUnsafeMutableBytes { stack.read(socket, into: $0) }
            if n == 0 { break }
            received.append(contentsOf: chunk[0..<n])
        }
        if let c = stack.connection(socket), c.isAtEndOfInput { sawEnd = true }
        stack.takeCompletions(of: socket) { completion in
            completed[completion.id, default: 0] += 1
            if case .failed = completion.status { failedCompletions += 1 }
            if let m = messageStarts[completion.id] {
                let same = completion.buffer.count == m.count
                    && completion.buffer.bytes.elementsEqual(outgoing[m.start..<(m.start + m.count)])
                if !same { wrongBuffers += 1 }
            } else {
                wrongBuffers += 1
            }
        }
        if !closed && sentUpTo == outgoing.count {
            closed = true
            stack.close(socket)
        }
    }
}

/// The outcome of one seeded transfer both ways.
struct TransferOutcome: CustomStringConvertible {
    var seed: UInt64
    var finished: Bool
    var bytesExact: Bool
    var completionsExact: Bool
    var quiescent: Bool
    var badSegments: Int
    var retransmitted: UInt64
    var lostRetransmissions: UInt64
    var virtualSeconds: Double
    var detail: String

    var passed: Bool { finished && bytesExact && completionsExact && quiescent && badSegments == 0 }
    var description: String {
        "seed \(seed): finished \(finished), bytes \(bytesExact), completions \(completionsExact), "
            + "quiescent \(quiescent), bad \(badSegments), retransmitted \(retransmitted), "
            + "\(virtualSeconds) s; \(detail)"
    }
}

func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
    var r = SeededRandom(seed: seed)
    var bytes = [UInt8](repeating: 0, count: count)
    var i = 0
    while i < count {
        let v = r.next()
        for k in 0..<min(8, count - i) { bytes[i + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(k))) }
        i += 8
    }
    return bytes
}

/// A connects to B; each sends its bytes; both close; TIME_WAIT (MSL 10 s, far above the RTOs of a lossy run) runs out. Checks
/// every byte, every completion exactly once, and that both stacks end with nothing held.
func runTransfer(seed: UInt64, impairments: TCPWorld.Impairments, bytesAToB: Int, bytesBToA: Int,
                 trace: Bool = false, pollBudget: Int? = nil,
                 configure: (inout TCPStack.Configuration) -> Void = { _ in }) -> TransferOutcome {
    let world = TCPWorld(seed: seed, impairments: impairments) { c in
        c.tcp.maximumSegmentLifetime = .seconds(10)
        configure(&c)
    }
    let start = world.now
    world.trace = trace
    world.pollBudget = pollBudget
    try! world.b.listen(port: 80)
    let endA = TransferEnd(stack: world.a, outgoing: pattern(bytesAToB, seed: seed), seed: seed &+ 10)
    let endB = TransferEnd(stack: world.b, outgoing: pattern(bytesBToA, seed: seed &+ 3), seed: seed &+ 11)
    endA.socket = try! world.a.connect(to: TCPWorld.addressB, port: 80, now: world.now)
    let finished = world.run(for: .seconds(900)) {
        if endB.socket == nil { endB.socket = world.b.accept(port: 80) }
        endA.turn()
        endB.turn()
        return endA.sawEnd && endB.sawEnd && endA.allCompleted && endB.allCompleted
            && world.a.isQuiescent && world.b.isQuiescent
    }
    let completionsExact = [endA, endB].allSatisfy { e in
        e.failedCompletions == 0 && e.wrongBuffers == 0 && e.completed.values.allSatisfy { $0 == 1 }
            && e.completed.count == e.messageStarts.count
    }
    var retransmitted: UInt64 = 0, lostRetransmissions: UInt64 = 0
    for e in [endA, endB] {
        if let c = e.connection {
            retransmitted += c.counters.segmentsRetransmitted
            lostRetransmissions += c.counters.lostRetransmissions
        }
    }
    let detail = "A→B \(endB.received.count)/\(bytesAToB), B→A \(endA.received.count)/\(bytesBToA), "
        + "A \(world.a.connectionCount) conns \(world.a.socketCount) sockets, "
        + "B \(world.b.connectionCount) conns \(world.b.socketCount) sockets, refusals \(endA.refusals + endB.refusals), "
        + "errors A \(endA.connection?.error.map { "\($0)" } ?? "none") B \(endB.connection?.error.map { "\($0)" } ?? "none"), "
        + "failed completions \(endA.failedCompletions + endB.failedCompletions), wrong buffers \(endA.wrongBuffers + endB.wrongBuffers)"
        + (trace ? "\nA \(endA.connection.map { "\($0.counters)" } ?? "")\nB \(endB.connection.map { "\($0.counters)" } ?? "")" : "")
    return TransferOutcome(
        seed: seed, finished: finished,
        bytesExact: endB.received == endA.outgoing && endA.received == endB.outgoing,
        completionsExact: completionsExact, quiescent: world.a.isQuiescent && world.b.isQuiescent,
        badSegments: world.badSegments, retransmitted: retransmitted, lostRetransmissions: lostRetransmissions,
        virtualSeconds: Double((world.now - start).nanoseconds) / 1e9, detail: detail)
}
