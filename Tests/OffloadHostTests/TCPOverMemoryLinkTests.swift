import Testing
import OffloadCore
import OffloadLink
import OffloadHost
import OffloadTCP

/// Two hosts with TCP over the memory link, whose impairments (loss, duplication,
/// reordering, corruption) act on whole Ethernet frames, run by the simulator: the same
/// transfers as the TCP simulation, through ARP, IPv4, checksums and the link.
@Suite struct TCPOverMemoryLinkTests {
    /// One seed: A sends `bytes` to B, which sends them back; both close. Returns a failure
    /// description, or nil when every byte came back and both stacks are at rest.
    struct Outcome {
        var failure: String?
        var retransmitted: UInt64 = 0
        var badChecksums: UInt64 = 0
    }

    static func echo(seed: UInt64, bytes: Int, impairments: Impairments) throws -> Outcome {
        var configuration = TCPStack.Configuration()
        configuration.tcp.maximumSegmentLifetime = .seconds(10)
        configuration.seed = seed
        let w = try TwoHosts(seed: seed, impairments: impairments, tcp: configuration)
        let (ta, tb) = (w.a.tcp!, w.b.tcp!)
        try tb.listen(port: 7)
        var random = SeededRandom(seed: seed)
        let data = (0..<bytes).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        let client = try ta.connect(to: w.b.address, port: 7, now: w.sim.clock.now)
        var server: TCPSocket?
        var sent = 0, echoed: [UInt8] = [], back: [UInt8] = [], completions = 0, failed = 0
        var clientClosed = false, serverClosed = false
        var chunk = [UInt8](repeating: 0, count: 16_384)
        w.sim.addProcess("applications") {
            var worked = false
            if server == nil, let s = tb.accept(port: 7) { server = s; worked = true }
            if sent < data.count, let c = ta.connection(client), c.canSend {
                let n = min(data.count - sent, 1 + Int(random.next() % 5000))
                if case .queued = ta.send(TxBuffer(copying: data[sent..<(sent + n)]), on: client) { sent += n; worked = true }
            }
            if sent == data.count && !clientClosed { ta.close(client); clientClosed = true; worked = true }
            ta.takeCompletions(of: client) { c in
                completions += 1
                if case .failed = c.status { failed += 1 }
            }
            let n = chunk.withUnsafeMutableBytes { ta.read(client, into: $0) }
            if n > 0 { back += chunk[0..<n]; worked = true }
            if let s = server {
                let m = chunk.withUnsafeMutableBytes { tb.read(s, into: $0) }
                if m > 0 {
                    echoed += chunk[0..<m]
                    _ = tb.send(TxBuffer(copying: chunk[0..<m]), on: s)
                    worked = true
                }
                tb.takeCompletions(of: s) { _ in }
                if !serverClosed, let c = tb.connection(s), c.isAtEndOfInput {
                    tb.close(s)
                    serverClosed = true
                    worked = true
                }
            }
            return worked
        }
        let connection = ta.connection(client)
        w.sim.run(until: w.sim.clock.now + .seconds(600)) { !(ta.isQuiescent && tb.isQuiescent && serverClosed) }
        var outcome = Outcome()
        outcome.retransmitted = connection?.counters.segmentsRetransmitted ?? 0
        outcome.badChecksums = w.a.counters[drop: .badChecksum] + w.b.counters[drop: .badChecksum]
        if back != data {
            outcome.failure = "seed \(seed): echoed \(echoed.count), back \(back.count) of \(data.count)"
        } else if failed > 0 || completions == 0 {
            outcome.failure = "seed \(seed): \(completions) completions, \(failed) failed"
        } else if !(ta.isQuiescent && tb.isQuiescent) {
            outcome.failure = "seed \(seed): not at rest: A \(ta.connectionCount) connections, B \(tb.connectionCount)"
        }
        return outcome
    }

    @Test func echoesThroughAnImpairedMemoryLink() throws {
        var failures: [String] = []
        var retransmitted: UInt64 = 0, badChecksums: UInt64 = 0
        for seed in UInt64(1)...100 {
            let impairments = Impairments(loss: Double(seed % 6) / 100, duplication: seed % 3 == 0 ? 0.01 : 0,
                                          reordering: seed % 2 == 0 ? 0.05 : 0, corruption: seed % 5 == 0 ? 0.005 : 0)
            let outcome = try Self.echo(seed: seed, bytes: 20_000 + Int(seed % 7) * 10_000, impairments: impairments)
            if let failure = outcome.failure { failures.append(failure) }
            retransmitted += outcome.retransmitted
            badChecksums += outcome.badChecksums
        }
        #expect(failures.isEmpty, "\(failures.count) seeds failed: \(failures.prefix(3))")
        #expect(retransmitted > 100, "the impairments made segments be resent: \(retransmitted)")
        #expect(badChecksums > 0, "corrupted frames were caught by their checksums: \(badChecksums)")
    }
}

extension TCPOverMemoryLinkTests {
    /// T5 on the host's own path: every payload slice handed to the link lies inside the
    /// application's buffer (the link gets a gather list, the stack copies nothing).
    @Test func payloadSlicesComeStraightFromTheApplicationsBuffer() throws {
        var configuration = TCPStack.Configuration()
        configuration.seed = 3
        let w = try TwoHosts(seed: 3, tcp: configuration)
        var slices: [(start: UInt, count: Int)] = []
        w.linkA.witnessPayloads { slices.append((UInt(bitPattern: $0.baseAddress), $0.count)) }
        let (ta, tb) = (w.a.tcp!, w.b.tcp!)
        try tb.listen(port: 9)
        let client = try ta.connect(to: w.b.address, port: 9, now: w.sim.clock.now)
        var message = TxBuffer(count: 300_000)
        message.withUnsafeMutableBytes { for i in $0.indices { $0[i] = UInt8(truncatingIfNeeded: i &* 13) } }
        let memory = UInt(bitPattern: message.baseAddress)..<(UInt(bitPattern: message.baseAddress) + 300_000)
        var queued = false, received = 0, server: TCPSocket?, completed = 0
        var sink = [UInt8](repeating: 0, count: 65_536)
        var pending: TxBuffer? = message
        w.sim.addProcess("applications") {
            var worked = false
            if !queued, let c = ta.connection(client), c.state == .established, let buffer = pending.take() {
                guard case .queued = ta.send(buffer, on: client) else { return false }
                queued = true
                worked = true
            }
            if server == nil { server = tb.accept(port: 9) }
            if let s = server {
                let n = sink.withUnsafeMutableBytes { tb.read(s, into: $0) }
                received += n
                worked = worked || n > 0
            }
            ta.takeCompletions(of: client) { completion in
                completed += 1
                #expect(UInt(bitPattern: completion.buffer.baseAddress) == memory.lowerBound)
            }
            return worked
        }
        w.sim.run(until: w.sim.clock.now + .seconds(10)) { completed == 0 || received < 300_000 }
        #expect(received == 300_000 && completed == 1)
        #expect(slices.reduce(0) { $0 + $1.count } >= 300_000)
        let outside = slices.filter { !memory.contains($0.start) || !memory.contains($0.start + UInt($0.count) - 1) }
        #expect(outside.isEmpty, "\(outside.count) of \(slices.count) payload slices lie outside the application's buffer")
    }
}
