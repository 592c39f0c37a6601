import Foundation
import Testing
import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink
import OffloadTCP
import OffloadWire

/// TCP offload (seed 003) between two hosts behind their engines on a memory wire: the
/// engines run the established connections, the hosts post messages and get completions.
@Suite struct TCPOffloadTests {
    struct Outcome {
        var failure: String?
        var engineBytesSent: UInt64 = 0
        var uploads: UInt64 = 0
        var retransmitted: UInt64 = 0
        var superSegments: UInt64 = 0
    }

    /// One seed: A sends `bytes` in messages of random sizes to B, which echoes them; A
    /// closes once everything is back and completed, B when it reads the end. With `moves`,
    /// A's connection goes back to the host and to the engine again in the middle, and B's
    /// goes back for a while. Returns what failed, if anything.
    static func echo(seed: UInt64, bytes: Int, impairments: Impairments = .none, moves: Bool = false, tso: Bool = false,
                     witness: ((UnsafeRawBufferPointer) -> Void)? = nil, maxFrameSize: Int? = nil) throws -> Outcome {
        var tcp = TCPStack.Configuration()
        tcp.tcp.maximumSegmentLifetime = .seconds(5)
        tcp.seed = seed
        var engine = Engine<MemoryLink>.Configuration()
        engine.idleTimeouts = IdleTimeouts(tcp: .seconds(30))
        // Small, so that one poll's expiry scan covers the table.
        engine.tableCapacity = 64
        engine.expiryBudget = 1024
        let w = try TwoEndpoints(seed: seed, impairments: impairments, tso: tso, tcp: tcp, engine: engine,
                                 witness: witness, maxFrameSize: maxFrameSize)
        let (ta, tb) = (w.a.tcp, w.b.tcp)
        try tb.listen(port: 7)
        var random = SeededRandom(seed: seed)
        let data = (0..<bytes).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        let client = try ta.connect(to: w.b.host.address, port: 7, now: w.sim.clock.now)
        var server: TCPSocket?
        var sent = 0, back: [UInt8] = [], echoed = 0
        var completedIDs: [MessageID] = [], queuedIDs: [MessageID] = [], failures: [String] = []
        var echoCompleted: [MessageID] = [], echoQueued: [MessageID] = []
        var clientClosed = false, serverClosed = false
        var movedA = 0, movedB = 0
        var chunk = [UInt8](repeating: 0, count: 16_384)
        w.sim.addProcess("applications") {
            var worked = false
            if server == nil, let s = tb.accept(port: 7) { server = s; worked = true }
            if sent < data.count, let c = ta.connection(client), c.canSend {
                let n = min(data.count - sent, 1 + Int(random.next() % 5000))
                if case .queued(let id) = ta.send(TxBuffer(copying: data[sent..<(sent + n)]), on: client) {
                    queuedIDs.append(id)
                    sent += n
                    worked = true
                }
            }
            if moves {
                // A: back to the host at a third, to the engine again at two thirds.
                if movedA == 0 && sent >= data.count / 3 && ta.isOffloaded(client) { ta.upload(client); movedA = 1 }
                if movedA == 1 && sent >= 2 * data.count / 3 && !ta.isOffloaded(client) { ta.offload(client); movedA = 2 }
                if movedB == 0, let s = server, echoed >= data.count / 2, tb.isOffloaded(s) { tb.upload(s); movedB = 1 }
            }
            ta.takeCompletions(of: client) { c in
                completedIDs.append(c.id)
                if case .failed(let e) = c.status { failures.append("message \(c.id) failed: \(e)") }
            }
            let n = chunk.withUnsafeMutableBytes { ta.read(client, into: $0) }
            if n > 0 { back += chunk[0..<n]; worked = true }
            if !clientClosed && back.count == data.count && completedIDs.count == queuedIDs.count {
                ta.close(client)
                clientClosed = true
                worked = true
            }
            if let s = server {
                let m = chunk.withUnsafeMutableBytes { tb.read(s, into: $0) }
                if m > 0 {
                    echoed += m
                    switch tb.send(TxBuffer(copying: chunk[0..<m]), on: s) {
                    case .queued(let id): echoQueued.append(id)
                    case .refused(let e, _): failures.append("echo refused: \(e)")
                    }
                    worked = true
                }
                tb.takeCompletions(of: s) { c in
                    echoCompleted.append(c.id)
                    if case .failed(let e) = c.status { failures.append("echo \(c.id) failed: \(e)") }
                }
                if !serverClosed, let c = tb.connection(s), c.isAtEndOfInput {
                    tb.close(s)
                    serverClosed = true
                    worked = true
                }
            }
            return worked
        }
        let connection = ta.connection(client)
        let atRest = { ta.isQuiescent && tb.isQuiescent && serverClosed }
        w.sim.run(until: w.sim.clock.now + .seconds(900)) { !atRest() }
        // Let the engines' entries idle out (B9), so that nothing of the flow is left.
        _ = w.sim.schedule(after: .seconds(35)) {}
        w.sim.run(until: w.sim.clock.now + .seconds(40)) { w.a.engine.table.count + w.b.engine.table.count > 0 }
        var outcome = Outcome()
        outcome.engineBytesSent = w.a.engine.tcp.counters.payloadBytesSent
        outcome.superSegments = w.a.engine.tcp.counters.superSegmentsSent + w.b.engine.tcp.counters.superSegmentsSent
        outcome.uploads = w.a.engine.tcp.counters.uploads.total + w.b.engine.tcp.counters.uploads.total
        outcome.retransmitted = connection?.counters.segmentsRetransmitted ?? 0
        let prefix = "seed \(seed)"
        if back != data {
            outcome.failure = "\(prefix): echoed \(echoed), back \(back.count) of \(data.count)"
        } else if !failures.isEmpty {
            outcome.failure = "\(prefix): \(failures.prefix(3))"
        } else if completedIDs != queuedIDs || echoCompleted != echoQueued {
            outcome.failure = "\(prefix): completions \(completedIDs.count) of \(queuedIDs.count) and \(echoCompleted.count) "
                + "of \(echoQueued.count) echoed, not each once in order"
        } else if !atRest() {
            outcome.failure = "\(prefix): not at rest: A \(ta.connectionCount) connections, B \(tb.connectionCount)"
        } else if w.a.engine.tcp.count + w.b.engine.tcp.count > 0 {
            outcome.failure = "\(prefix): the engines still hold \(w.a.engine.tcp.count + w.b.engine.tcp.count) connections"
        } else if w.a.engine.buffered + w.b.engine.buffered > 0 {
            outcome.failure = "\(prefix): the engines still hold \(w.a.engine.buffered + w.b.engine.buffered) buffers"
        } else if w.a.engine.table.count + w.b.engine.table.count > 0 {
            outcome.failure = "\(prefix): \(w.a.engine.table.count + w.b.engine.table.count) entries left"
        } else if moves && (movedA < 2 || movedB < 1) {
            outcome.failure = "\(prefix): the connections did not move (A \(movedA), B \(movedB)); A offloaded \(ta.counters.connectionsOffloaded), engine A \(w.a.engine.tcp.counters.rows.filter { $0.1 > 0 })"
        } else if ta.counters.connectionsOffloaded == 0 || tb.counters.connectionsOffloaded == 0 {
            outcome.failure = "\(prefix): not offloaded (A \(ta.counters.connectionsOffloaded), B \(tb.counters.connectionsOffloaded))"
        }
        return outcome
    }

    @Test func anOffloadedEchoIsByteExactAndTheEngineCarriesIt() throws {
        let outcome = try Self.echo(seed: 1, bytes: 200_000)
        #expect(outcome.failure == nil, "\(outcome.failure ?? "")")
        #expect(outcome.engineBytesSent >= 200_000, "the engine sent \(outcome.engineBytesSent) payload bytes")
    }

    /// T4 with a device that segments: the engines send super-segments of up to 64 KiB,
    /// which the wire delivers whole; byte-exact under loss and reordering too.
    @Test func offloadedEchoesWithTSO() throws {
        let clean = try Self.echo(seed: 7, bytes: 2_000_000, tso: true)
        #expect(clean.failure == nil, "\(clean.failure ?? "")")
        #expect(clean.superSegments > 0, "no super-segment was sent")
        var failures: [String] = []
        let seeds = UInt64(environmentSetting("TCP_OFFLOAD_TSO_SEEDS") ?? 50)
        for seed in UInt64(1)...seeds {
            let impairments = Impairments(loss: Double(seed % 6) / 100, reordering: seed % 2 == 0 ? 0.05 : 0)
            let outcome = try Self.echo(seed: seed, bytes: 300_000, impairments: impairments, moves: seed % 3 == 0,
                                        tso: true)
            if let failure = outcome.failure { failures.append(failure) }
        }
        #expect(failures.isEmpty, "\(failures.count) seeds failed: \(failures.prefix(3))")
    }

    /// Loss, reordering and duplication, with connections moving between host and engine
    /// in the middle of the transfer on every other seed.
    @Test func offloadedEchoesSurviveImpairmentsAndMoves() throws {
        let first = UInt64(environmentSetting("TCP_OFFLOAD_FIRST") ?? 1)
        let seeds = UInt64(environmentSetting("TCP_OFFLOAD_SEEDS") ?? 1000)
        var failures: [String] = []
        var engineBytes: UInt64 = 0, uploads: UInt64 = 0, retransmitted: UInt64 = 0
        for seed in first...seeds {
            let impairments = Impairments(loss: Double(seed % 11) / 100, duplication: seed % 3 == 0 ? 0.01 : 0,
                                          reordering: seed % 4 == 1 ? 0.05 : 0)
            let outcome = try Self.echo(seed: seed, bytes: 10_000 + Int(seed % 5) * 10_000, impairments: impairments,
                                        moves: seed % 2 == 0)
            if let failure = outcome.failure { failures.append(failure) }
            engineBytes += outcome.engineBytesSent
            uploads += outcome.uploads
            retransmitted += outcome.retransmitted
        }
        #expect(failures.isEmpty, "\(failures.count) seeds failed: \(failures.prefix(3))")
        let count = seeds - first + 1
        #expect(retransmitted > count / 10, "the impairments made segments be resent: \(retransmitted)")
        #expect(uploads >= 2 * count, "connections went back to their hosts: \(uploads)")
        #expect(engineBytes > 0)
    }
}

extension TCPOffloadTests {
    /// `count` connections from A to B, each sending `messagesEach` messages of `size` bytes
    /// (fresh buffers) while B reads everything; each connection's messages and completions
    /// are kept. Servers are accepted in the clients' order (the handshakes cross one engine
    /// each way), so `received[i]` is client `i`'s.
    final class BulkSenders {
        let w: TwoEndpoints
        var queued: [[MessageID]], completed: [[MessageID]], received: [Int]

        init(_ w: TwoEndpoints, count: Int, size: Int, messagesEach: Int = .max) throws {
            self.w = w
            queued = Array(repeating: [], count: count)
            completed = Array(repeating: [], count: count)
            received = Array(repeating: 0, count: count)
            let (ta, tb) = (w.a.tcp, w.b.tcp)
            try tb.listen(port: 9)
            let clients = try (0..<count).map { _ in try ta.connect(to: w.b.host.address, port: 9, now: w.sim.clock.now) }
            var servers: [TCPSocket] = []
            var sink = [UInt8](repeating: 0, count: 65_536)
            let bytes = [UInt8](repeating: 7, count: size)
            w.sim.addProcess("applications") { [unowned self] in
                var worked = false
                while let s = tb.accept(port: 9) { servers.append(s); worked = true }
                for (i, c) in clients.enumerated() {
                    if queued[i].count < messagesEach, ta.connection(c)?.canSend ?? false,
                       case .queued(let id) = ta.send(TxBuffer(copying: bytes), on: c) {
                        queued[i].append(id)
                        worked = true
                    }
                    _ = ta.takeCompletions(of: c) { completion in
                        if case .failed(let e) = completion.status { Issue.record("message \(completion.id) failed: \(e)") }
                        completed[i].append(completion.id)
                    }
                }
                for (i, s) in servers.enumerated() {
                    let n = sink.withUnsafeMutableBytes { tb.read(s, into: $0) }
                    if n > 0 { received[i] += n; worked = true }
                }
                return worked
            }
        }
    }

    /// With a small events ring the engine reports completions as far as it has room, the
    /// oldest first, and the rest at later polls: still each once, in order. Eight
    /// connections' ACKs arrive in the same polls, so the ring of four is often full.
    @Test func completionsWaitForRoomInASmallEventsRing() throws {
        var engine = Engine<MemoryLink>.Configuration()
        engine.tcpEventCapacity = 4
        let w = try TwoEndpoints(seed: 5, engine: engine)
        let run = try BulkSenders(w, count: 8, size: 4096, messagesEach: 64)
        let total = 8 * 64 * 4096
        w.sim.run(until: w.sim.clock.now + .seconds(60)) {
            run.received.reduce(0, +) < total || zip(run.queued, run.completed).contains { $0.0.count != $0.1.count }
        }
        #expect(run.received.reduce(0, +) == total)
        #expect(run.completed == run.queued, "every message completed once, in order, on its own connection")
        #expect(w.a.engine.tcp.counters.completionsDelayed > 0, "the ring was never short of room: the case is not exercised")
    }

    /// Connections share the engine's segment budget: with room for a few segments per poll,
    /// a bulk sender that is visited first cannot keep the others from sending.
    @Test func offloadedConnectionsShareEachPollsBudget() throws {
        var engine = Engine<MemoryLink>.Configuration()
        engine.tcpPollBudget = 4
        let w = try TwoEndpoints(seed: 3, engine: engine)
        let run = try BulkSenders(w, count: 3, size: 65_536)
        w.sim.run(until: w.sim.clock.now + .seconds(10)) { run.received.reduce(0, +) < 24 << 20 }
        let received = run.received
        #expect(w.a.engine.tcp.count == 3, "the engine runs all three connections")
        let total = received.reduce(0, +)
        #expect(total >= 24 << 20, "received \(received)")
        // Round robin: each gets a fair part (a third, give or take what one window holds).
        #expect(received.allSatisfy { $0 >= total / 6 }, "received \(received)")
    }

    /// T3 and T5: an offloaded transfer's payload leaves the engine as slices of the
    /// application's buffer (the memory wire records where each came from), and neither
    /// the host nor the engine copies a payload byte on the way.
    @Test func offloadedSegmentsGatherFromTheApplicationsBuffer() throws {
        var slices: [(start: UInt, count: Int)] = []
        let w = try TwoEndpoints(seed: 3) { slices.append((UInt(bitPattern: $0.baseAddress), $0.count)) }
        let (ta, tb) = (w.a.tcp, w.b.tcp)
        try tb.listen(port: 9)
        let client = try ta.connect(to: w.b.host.address, port: 9, now: w.sim.clock.now)
        let size = 300_000
        var message = TxBuffer(count: size)
        message.withUnsafeMutableBytes { for i in $0.indices { $0[i] = UInt8(truncatingIfNeeded: i &* 13) } }
        let memory = UInt(bitPattern: message.baseAddress)..<(UInt(bitPattern: message.baseAddress) + UInt(size))
        var pending: TxBuffer? = message
        var received: [UInt8] = [], server: TCPSocket?, completed = 0, closed = false
        var sink = [UInt8](repeating: 0, count: 65_536)
        w.sim.addProcess("applications") {
            var worked = false
            if pending != nil, ta.isOffloaded(client), let buffer = pending.take() {
                guard case .queued = ta.send(buffer, on: client) else { return false }
                worked = true
            }
            if server == nil { server = tb.accept(port: 9) }
            if let s = server {
                let n = sink.withUnsafeMutableBytes { tb.read(s, into: $0) }
                received += sink[0..<n]
                worked = worked || n > 0
            }
            ta.takeCompletions(of: client) { completion in
                completed += 1
                #expect(UInt(bitPattern: completion.buffer.baseAddress) == memory.lowerBound)
            }
            if completed == 1 && !closed { ta.close(client); closed = true }
            return worked
        }
        w.sim.run(until: w.sim.clock.now + .seconds(10)) { completed == 0 || received.count < size }
        #expect(received.count == size && completed == 1)
        #expect(received == (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 13) })
        #expect(w.a.engine.tcp.counters.payloadBytesSent >= UInt64(size), "the engine sent the payload")
        #expect(w.a.policy.payloadBytesCopied == 0, "the host copied \(w.a.policy.payloadBytesCopied) payload bytes")
        #expect(slices.reduce(0) { $0 + $1.count } >= size)
        let outside = slices.filter { !memory.contains($0.start) || !memory.contains($0.start + UInt($0.count) - 1) }
        #expect(outside.isEmpty, "\(outside.count) of \(slices.count) payload slices lie outside the application's buffer")
    }

    /// The same transfer with offload off: the host's software sends it, copying each
    /// segment into a frame of its own, so the copy counter does count (it can fail).
    @Test func theHostsOwnPathCopiesAndIsCounted() throws {
        let w = try TwoEndpoints(seed: 4, offload: false)
        let (ta, tb) = (w.a.tcp, w.b.tcp)
        try tb.listen(port: 9)
        let client = try ta.connect(to: w.b.host.address, port: 9, now: w.sim.clock.now)
        var pending: TxBuffer? = TxBuffer(count: 50_000)
        var received = 0, server: TCPSocket?
        var sink = [UInt8](repeating: 0, count: 65_536)
        w.sim.addProcess("applications") {
            if pending != nil, let c = ta.connection(client), c.state == .established, let buffer = pending.take() {
                _ = ta.send(buffer, on: client)
            }
            if server == nil { server = tb.accept(port: 9) }
            if let s = server { received += sink.withUnsafeMutableBytes { tb.read(s, into: $0) } }
            ta.takeCompletions(of: client) { _ in }
            return false
        }
        w.sim.run(until: w.sim.clock.now + .seconds(10)) { received < 50_000 }
        #expect(received == 50_000)
        #expect(w.a.policy.payloadBytesCopied >= 50_000)
        #expect(w.a.engine.tcp.counters.payloadBytesSent == 0 && ta.counters.connectionsOffloaded == 0)
    }
}

extension TCPOffloadTests {
    /// The engine's memory per offloaded connection, message contexts aside: control block,
    /// offload slot and connection-table entry (the target is 512 bytes).
    @Test func theEngineKeepsLittlePerConnection() {
        let bytes = TCPOffloadTable.bytesPerConnection
        print("engine bytes per offloaded connection: \(bytes.total) (control block \(bytes.controlBlock), "
              + "slot \(bytes.slot), entry \(bytes.entry))")
        #expect(bytes.total <= 512)
    }
}

extension TCPOffloadTests {
    /// T1, out of resources: with one slot in each engine and an events ring of two, the
    /// connections the engine cannot take come straight back (`noResources`) and run in the
    /// host's software, answers wait for room in order, and every transfer completes.
    @Test func connectionsTheEngineHasNoRoomForStayWithTheHost() throws {
        var engine = Engine<MemoryLink>.Configuration()
        engine.tcpOffloadSlots = 1
        engine.tcpEventCapacity = 2
        let w = try TwoEndpoints(seed: 11, engine: engine)
        let (ta, tb) = (w.a.tcp, w.b.tcp)
        try tb.listen(port: 7)
        let size = 100_000
        let clients = try (0..<3).map { _ in try ta.connect(to: w.b.host.address, port: 7, now: w.sim.clock.now) }
        let data = (0..<size).map { UInt8(truncatingIfNeeded: $0) }
        var sent = [false, false, false]
        var servers: [TCPSocket] = [], received: [TCPSocket: Int] = [:], completed = 0
        var sink = [UInt8](repeating: 0, count: 65_536)
        w.sim.addProcess("applications") {
            var worked = false
            for (i, client) in clients.enumerated() where !sent[i] {
                guard let c = ta.connection(client), c.state == .established else { continue }
                if case .refused(let e, _) = ta.send(TxBuffer(copying: data), on: client) { Issue.record("refused: \(e)") }
                sent[i] = true
                worked = true
            }
            while let s = tb.accept(port: 7) { servers.append(s); worked = true }
            for s in servers {
                let n = sink.withUnsafeMutableBytes { tb.read(s, into: $0) }
                received[s, default: 0] += n
                worked = worked || n > 0
            }
            for client in clients { ta.takeCompletions(of: client) { _ in completed += 1 } }
            return worked
        }
        w.sim.run(until: w.sim.clock.now + .seconds(30)) { completed < 3 || received.values.reduce(0, +) < 3 * size }
        #expect(completed == 3 && received.values.sorted() == [size, size, size], "received \(received.values)")
        let a = w.a.engine.tcp.counters, b = w.b.engine.tcp.counters
        #expect(a.offloaded == 1 && b.offloaded == 1, "one connection each engine has room for")
        #expect(a.uploads[.noResources] == 2 && b.uploads[.noResources] == 2)
        #expect(a.messagesCompleted == 1 && a.eventsDelayed > 0, "the offloaded connection's completion waited its turn")
        // The stack counts the offers; two came back.
        #expect(ta.counters.connectionsOffloaded == 3 && ta.counters.connectionsUploaded == 2)
    }
}

extension TCPOffloadTests {
    /// A peer that announces a tiny MSS gets a floor (as Linux's tcp_min_snd_mss): every
    /// segment, and every TSO piece beside 40 bytes of options, still has room for data.
    @Test func aTinyPeerMSSHasAFloor() {
        let id = TCPConnectionID(local: IPv4Address(10, 0, 0, 1), localPort: 7, remote: IPv4Address(10, 0, 0, 2),
                                 remotePort: 9)
        let syn = TCPRepr(sourcePort: 9, destinationPort: 7, sequenceNumber: 1, flags: .syn, windowSize: 1000,
                          maxSegmentSize: 10)
        let c = TCPConnection(accepting: syn, id: id, initialSendSequence: SequenceNumber(5),
                              configuration: TCPConfiguration(), now: .zero)
        #expect(c.block.constant.remoteMSS == TCPConnection.minimumRemoteMSS)
        #expect(TCPConnection.minimumRemoteMSS - TCPPacket.maximumHeaderLength + TCPPacket.minimumHeaderLength > 0)
    }
}

extension TCPOffloadTests {
    /// B9 and T1 together: an offloaded connection outlives its connection-table entry. An
    /// entry that idles out while its connection is still in the engine is put back at once,
    /// so the connection's next segments still reach the engine, which carries them.
    @Test func anIdleOffloadedConnectionKeepsItsEntry() throws {
        var engine = Engine<MemoryLink>.Configuration()
        engine.idleTimeouts = IdleTimeouts(tcp: .seconds(2))
        engine.tableCapacity = 64
        engine.expiryBudget = 1024
        let w = try TwoEndpoints(seed: 5, engine: engine)
        let (ta, tb) = (w.a.tcp, w.b.tcp)
        try tb.listen(port: 7)
        let client = try ta.connect(to: w.b.host.address, port: 7, now: w.sim.clock.now)
        var server: TCPSocket?
        var received = 0
        var sink = [UInt8](repeating: 0, count: 65_536)
        w.sim.addProcess("applications") {
            if server == nil { server = tb.accept(port: 7) }
            guard let server else { return false }
            let n = sink.withUnsafeMutableBytes { tb.read(server, into: $0) }
            received += n
            return n > 0
        }
        func transfer(_ size: Int) {
            _ = ta.send(TxBuffer(copying: [UInt8](repeating: 7, count: size)), on: client)
            let target = received + size
            w.sim.run(until: w.sim.clock.now + .seconds(5)) { received < target }
        }
        w.sim.run(until: w.sim.clock.now + .seconds(5)) { !(server.map { tb.isOffloaded($0) } ?? false) || !ta.isOffloaded(client) }
        transfer(10_000)
        let expiredBefore = w.a.engine.counters.expired + w.b.engine.counters.expired
        let sentBefore = w.a.engine.tcp.counters.payloadBytesSent
        // Ten seconds of silence, the engines polled every half second: their entries idle out.
        for t in 1...20 { _ = w.sim.schedule(after: .milliseconds(Int64(t * 500))) {} }
        w.sim.run(until: w.sim.clock.now + .seconds(10)) { true }
        #expect(w.a.engine.counters.expired + w.b.engine.counters.expired >= expiredBefore + 2,
                "both offloaded entries idled out")
        #expect(w.a.engine.table.count > 0 && w.b.engine.table.count > 0, "and were put back")
        transfer(100_000)
        #expect(received == 110_000)
        #expect(ta.isOffloaded(client) && server.map { tb.isOffloaded($0) } == true, "both still in the engines")
        #expect(w.a.engine.tcp.counters.payloadBytesSent >= sentBefore + 100_000, "the engine carried the data")
    }
}

extension TCPOffloadTests {
    /// T10 in the engine (RFC 5961 3.2): a blind RST, outside the window or inside it but not
    /// at RCV.NXT, is dropped or challenged by the engine's own state machine, and the
    /// connection stays offloaded. Only a RST exactly at RCV.NXT sends the connection back to
    /// the host, which ends it.
    @Test func onlyAResetAtTheExpectedSequenceLeavesTheEngine() throws {
        let w = try TwoEndpoints(seed: 9)
        let (ta, tb) = (w.a.tcp, w.b.tcp)
        try tb.listen(port: 7)
        let client = try ta.connect(to: w.b.host.address, port: 7, now: w.sim.clock.now)
        var server: TCPSocket?
        w.sim.addProcess("applications") {
            if server == nil { server = tb.accept(port: 7) }
            return false
        }
        w.sim.run(until: w.sim.clock.now + .seconds(5)) {
            !(ta.isOffloaded(client) && server.map { tb.isOffloaded($0) } == true)
        }
        let connection = try #require(ta.connection(client))
        #expect(ta.isOffloaded(client))

        /// A RST from B's side of the connection at `offset` bytes past A's RCV.NXT, put on
        /// the wire by B's port.
        func reset(at offset: UInt32) throws {
            let headers = try #require(w.b.host.frameHeaders(to: w.a.host.address, now: w.sim.clock.now))
            let rst = TCPRepr(sourcePort: 7, destinationPort: connection.id.localPort,
                              sequenceNumber: connection.block.delegated.receiveNext.rawValue &+ offset,
                              flags: .rst, windowSize: 0)
            var frame = [UInt8](repeating: 0, count: 128)
            let length = frame.withUnsafeMutableBytes {
                headers.write(rst, payload: UnsafeBufferPointer(start: nil, count: 0), identification: 1,
                              partialChecksum: false, into: $0).length
            }
            try w.b.engine.withPort(0) { port in
                try frame.withUnsafeBytes { bytes in
                    try port.transmit(header: UnsafeRawBufferPointer(rebasing: bytes[0..<length]), payloads: .none,
                                      metadata: .none)
                }
            }
            // The processes sleep until something wakes them: the frame on the wire is that.
            w.sim.wake()
            w.sim.run(until: w.sim.clock.now + .milliseconds(100))
        }
        let window = UInt32(connection.block.delegated.receiveAdvertisedEdge - connection.block.delegated.receiveNext)

        try reset(at: window + 100_000) // outside the window: dropped
        #expect(ta.isOffloaded(client) && connection.counters.challengeACKs == 0)
        try reset(at: 1_000) // inside, not at RCV.NXT: a challenge ACK from the engine
        #expect(ta.isOffloaded(client) && connection.counters.challengeACKs == 1)
        #expect(w.a.engine.tcp.counters.uploads[.reset] == 0, "no blind reset reached the host")

        try reset(at: 0) // exactly at RCV.NXT: the connection goes back to the host, which ends it
        #expect(w.a.engine.tcp.counters.uploads[.reset] == 1 && !ta.isOffloaded(client))
        #expect(ta.status(client)?.error == .connectionReset, "\(String(describing: ta.status(client)))")
    }
}

extension TCPOffloadTests {
    /// A connection the host runs (offload off) keeps its entry while it is busy: each of
    /// its packets delivered to the host is a hit. They were not, and a transfer longer
    /// than the TCP idle timeout lost its entry on the way (its next packet a miss, a new
    /// flow to set up).
    @Test func aBusyHostConnectionKeepsItsEntry() throws {
        var tcp = TCPStack.Configuration()
        tcp.seed = 3
        var engine = Engine<MemoryLink>.Configuration()
        engine.idleTimeouts = IdleTimeouts(tcp: .seconds(1))
        engine.tableCapacity = 64
        engine.expiryBudget = 1024
        // 2 Mbit/s: the 1 MB takes about 4 s, four idle timeouts.
        let w = try TwoEndpoints(seed: 3, impairments: Impairments(rateBitsPerSecond: 2_000_000), offload: false,
                                 tcp: tcp, engine: engine)
        let (ta, tb) = (w.a.tcp, w.b.tcp)
        try tb.listen(port: 7)
        let client = try ta.connect(to: w.b.host.address, port: 7, now: w.sim.clock.now)
        let data = [UInt8](repeating: 7, count: 1_000_000)
        var sent = 0, received = 0, server: TCPSocket?
        var sink = [UInt8](repeating: 0, count: 65_536)
        w.sim.addProcess("applications") {
            var worked = false
            if server == nil, let s = tb.accept(port: 7) { server = s; worked = true }
            if sent < data.count, let c = ta.connection(client), c.canSend {
                let end = min(sent + 16_384, data.count)
                if case .queued = ta.send(TxBuffer(copying: data[sent..<end]), on: client) {
                    sent = end
                    worked = true
                }
            }
            if let s = server {
                let n = sink.withUnsafeMutableBytes { tb.read(s, into: $0) }
                received += n
                worked = worked || n > 0
            }
            return worked
        }
        let start = w.sim.clock.now
        // Time moves on while the applications wait for the wire.
        for tick in 1...400 { w.sim.schedule(at: start + .milliseconds(Int64(tick) * 50)) {} }
        w.sim.run(until: start + .seconds(20)) { received < data.count }
        #expect(received == data.count)
        #expect(w.sim.clock.now - start > .seconds(3), "the transfer outlasted the idle timeout")
        #expect(w.a.engine.counters.expired == 0 && w.b.engine.counters.expired == 0,
                "expired: \(w.a.engine.counters.expired), \(w.b.engine.counters.expired)")
    }
}

extension TCPOffloadTests {
    /// The engine builds an offloaded connection's segments with the headers the host gave
    /// it at offload. When the peer answers ARP from a new MAC address (a failover's
    /// gratuitous ARP), the host tells the engine, and the connection's next segments go to
    /// the new address. They went on to the old one, for as long as the connection lived.
    @Test func anOffloadedConnectionFollowsItsPeersNewMAC() throws {
        let moved = MACAddress.local(9)
        var destinations: [MACAddress] = []
        let w = try TwoEndpoints(seed: 4, observe: { frame, from in
            // A's TCP segments that carry data: Ethernet, IPv4 (20 bytes), TCP longer than 20 bytes.
            guard from == 0, frame.count > 54, frame[12] == 0x08, frame[13] == 0, frame[23] == 6,
                  frame.count > 34 + Int(frame[46] >> 4) * 4 else { return }
            destinations.append(MACAddress(frame[0], frame[1], frame[2], frame[3], frame[4], frame[5]))
        })
        let (ta, tb) = (w.a.tcp, w.b.tcp)
        try tb.listen(port: 7)
        let client = try ta.connect(to: w.b.host.address, port: 7, now: w.sim.clock.now)
        var server: TCPSocket?
        var sink = [UInt8](repeating: 0, count: 65_536)
        var received = 0
        w.sim.addProcess("applications") {
            if server == nil { server = tb.accept(port: 7) }
            guard let s = server else { return false }
            let n = sink.withUnsafeMutableBytes { tb.read(s, into: $0) }
            received += n
            return n > 0
        }
        func send(_ bytes: Int) {
            _ = ta.send(TxBuffer(copying: [UInt8](repeating: 1, count: bytes)), on: client)
            w.sim.wake()
            w.sim.run(until: w.sim.clock.now + .seconds(2))
        }
        w.sim.run(until: w.sim.clock.now + .seconds(5)) { !ta.isOffloaded(client) }
        #expect(ta.isOffloaded(client))
        send(10_000)
        #expect(!destinations.isEmpty && destinations.allSatisfy { $0 == w.b.host.configuration.hardwareAddress })

        // B's address moves to another machine's MAC: a gratuitous ARP reply from it, on
        // the wire by B's port.
        var arp = [UInt8](repeating: 0, count: 60)
        arp.withUnsafeMutableBytes { raw in
            EthernetRepr(destination: .broadcast, source: moved, etherType: .arp).emit(into: raw)
            ARPRepr(operation: .reply, senderHardwareAddress: moved, senderProtocolAddress: w.b.host.address,
                    targetHardwareAddress: .broadcast, targetProtocolAddress: w.b.host.address)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]))
        }
        try w.b.engine.withPort(0) { port in try arp.withUnsafeBytes { try port.transmit($0) } }
        w.sim.wake()
        w.sim.run(until: w.sim.clock.now + .milliseconds(100))
        destinations.removeAll()
        send(10_000)
        #expect(ta.isOffloaded(client), "still the engine's connection")
        #expect(w.a.engine.tcp.counters.payloadBytesSent >= 20_000, "the engine carried the data")
        #expect(!destinations.isEmpty)
        #expect(destinations.allSatisfy { $0 == moved }, "\(Set(destinations.map { "\($0)" }))")
        #expect(received == 20_000)
    }
}

extension TCPOffloadTests {
    /// A link whose MTU is below Ethernet's 1500 (a tunnel, a cloud network's 1460): each
    /// host advertises the MSS its link leaves after the headers, so every segment fits the
    /// wire. Both advertised 1460, and every full segment was too large for it: the echo
    /// never got through.
    @Test func aLinkWithASmallerMTUGetsASmallerMSS() throws {
        let outcome = try Self.echo(seed: 5, bytes: 100_000, maxFrameSize: 1400 + 14)
        #expect(outcome.failure == nil, "\(outcome.failure ?? "")")
    }

    /// Path MTU discovery (RFC 1191): a hop in A's path takes 1000-byte packets and answers
    /// bigger ones, DF set, with "fragmentation needed". A's connection lowers its segment
    /// size and sends its flight again, on the host's path and on the engine's (the host
    /// takes the ICMP in and tells the engine). Our TCP ignored the message, and the
    /// transfer stalled in retransmissions of segments that could never pass.
    @Test(arguments: [false, true])
    func aConnectionFollowsFragmentationNeeded(offload: Bool) throws {
        var largestAfter = 0, answered = 0
        let w = try TwoEndpoints(seed: 4, offload: offload, observe: { frame, from in
            guard from == 0, frame.count > 34, frame[23] == 6 else { return }
            if frame.count > 1014 { answered += 1 } else { largestAfter = max(largestAfter, frame.count) }
        }, pathAnswer: { TwoEndpoints.fragmentationNeeded($0, mtu: 1000) })
        let (ta, tb) = (w.a.tcp, w.b.tcp)
        try tb.listen(port: 7)
        var server: TCPSocket?
        let bytes = 300_000
        let client = try ta.connect(to: w.b.host.address, port: 7, now: w.sim.clock.now)
        var queued = false, received = 0
        w.sim.addProcess("applications") {
            if server == nil { server = tb.accept(port: 7) }
            if !queued, ta.status(client)?.state == .established {
                guard case .queued = ta.send(TxBuffer(copying: [UInt8](repeating: 5, count: bytes)), on: client) else {
                    return false
                }
                queued = true
            }
            if let s = server { received += tb.read(s, max: 1 << 20) { _ in } }
            return false
        }
        for tick in 1...40 { w.sim.schedule(at: w.sim.clock.now + .milliseconds(250 * Int64(tick))) {} }
        w.sim.run(until: w.sim.clock.now + .seconds(10)) { received < bytes }
        #expect(received == bytes, "\(received) of \(bytes) bytes")
        #expect(answered > 0, "the hop answered some segments")
        #expect(largestAfter <= 1014)
        #expect(ta.isOffloaded(client) == offload)
    }

    /// RFC 1122 4.2.3.9: a router's port (or protocol) unreachable for our SYN ends the
    /// connect at once, refused, as Linux's does; net and host unreachable are soft errors,
    /// and the SYN is tried again. It went on retrying its SYN to the timeout.
    @Test(arguments: [(UInt8(3), true), (UInt8(2), true), (UInt8(1), false), (UInt8(0), false)])
    func aRefusedSYNEndsTheConnect(code: UInt8, refused: Bool) throws {
        let w = try TwoEndpoints(seed: 8, offload: true, pathAnswer: { frame in
            TwoEndpoints.unreachable(frame, code: code) { ip in
                ip.protocol == .tcp && ip.payload.count > 13 && ip.payload[13] & 0x02 != 0  // a SYN
            }
        })
        let ta = w.a.tcp
        try w.b.tcp.listen(port: 7)
        let client = try ta.connect(to: w.b.host.address, port: 7, now: w.sim.clock.now)
        for tick in 1...8 { w.sim.schedule(at: w.sim.clock.now + .milliseconds(250 * Int64(tick))) {} }
        w.sim.run(until: w.sim.clock.now + .seconds(2)) { ta.status(client)?.state == .synSent }
        if refused {
            #expect(ta.status(client)?.state == .closed && ta.status(client)?.error == .connectionRefused,
                    "\(String(describing: ta.status(client)))")
        } else {
            #expect(ta.status(client)?.state == .synSent, "a soft error: still trying")
        }
    }

    /// RFC 5927 4.1: a "fragmentation needed" is believed only when it quotes a sequence
    /// number in flight (one an off-path sender cannot know), only to lower the segment
    /// size, and never for an MTU below IPv4's 68.
    @Test func fragmentationNeededIsBelievedOnlyForASegmentInFlight() throws {
        let w = try TwoEndpoints(seed: 6, offload: false)
        let (ta, tb) = (w.a.tcp, w.b.tcp)
        try tb.listen(port: 7)
        let client = try ta.connect(to: w.b.host.address, port: 7, now: w.sim.clock.now)
        w.sim.run(until: w.sim.clock.now + .seconds(1)) { ta.status(client)?.state != .established }
        let connection = try #require(ta.connection(client))
        guard case .queued = ta.send(TxBuffer(copying: [UInt8](repeating: 1, count: 50_000)), on: client) else {
            Issue.record("queued"); return
        }
        _ = w.a.turn(now: w.sim.clock.now)
        let d = connection.block.delegated
        try #require(d.sendUnacknowledged < d.sendMax, "data in flight")
        let before = connection.block.constant.segmentSize
        #expect(!connection.pathMTUDecreased(to: 1000, quotedSequence: d.sendMax + 100_000))
        #expect(!connection.pathMTUDecreased(to: 1000, quotedSequence: d.sendUnacknowledged - 1))
        #expect(!connection.pathMTUDecreased(to: 60, quotedSequence: d.sendUnacknowledged))
        #expect(!connection.pathMTUDecreased(to: 9000, quotedSequence: d.sendUnacknowledged))
        #expect(connection.block.constant.segmentSize == before && connection.counters.pathMTUDecreases == 0)
        #expect(connection.pathMTUDecreased(to: 1000, quotedSequence: d.sendUnacknowledged))
        #expect(connection.block.constant.segmentSize == 960 - (connection.block.constant.timestamps ? 12 : 0))
    }

    /// After the link's MTU shrinks while the hosts run (`ip link set … mtu`; the engines
    /// read it each second), a new connection advertises the MSS the new MTU leaves, both
    /// ways, and the connection already open sends smaller segments too, as Linux's do:
    /// every frame fits. The new one advertised the MSS of the MTU the link had when the
    /// host started, and the open one kept its 1514-byte frames.
    @Test(arguments: [false, true])
    func connectionsTakeTheLinksNewMTU(offload: Bool) throws {
        var synMSS: [UInt16] = [], largest = 0
        let w = try TwoEndpoints(seed: 9, offload: offload, observe: { frame, _ in
            guard frame.count > 54, frame[23] == 6 else { return }
            largest = max(largest, frame.count)
            let tcp = 14 + Int(frame[14] & 0x0f) * 4
            guard frame[tcp + 13] & 0x02 != 0, frame[tcp + 20] == 2 else { return }  // a SYN, its first option the MSS
            synMSS.append(UInt16(frame[tcp + 22]) << 8 | UInt16(frame[tcp + 23]))
        })
        let (ta, tb) = (w.a.tcp, w.b.tcp)
        try tb.listen(port: 7)
        var accepted: [TCPSocket] = []
        w.sim.addProcess("applications") {
            if let s = tb.accept(port: 7) { accepted.append(s) }
            return false
        }
        let first = try ta.connect(to: w.b.host.address, port: 7, now: w.sim.clock.now)
        w.sim.run(until: w.sim.clock.now + .seconds(1)) { ta.status(first)?.state != .established || accepted.isEmpty }
        #expect(synMSS == [1460, 1460])

        w.linkA.setMTU(1000)
        w.linkB.setMTU(1000)
        // Time passes (the engines read their ports' MTUs each second).
        for tick in 1...4 { w.sim.schedule(at: w.sim.clock.now + .milliseconds(500 * Int64(tick))) {} }
        w.sim.run(until: w.sim.clock.now + .seconds(2)) { true }
        largest = 0
        let second = try ta.connect(to: w.b.host.address, port: 7, now: w.sim.clock.now)
        w.sim.run(until: w.sim.clock.now + .seconds(1)) { ta.status(second)?.state != .established || accepted.count < 2 }
        #expect(synMSS.suffix(2) == [960, 960], "\(synMSS)")
        for socket in [first, second] {
            guard case .queued = ta.send(TxBuffer(copying: [UInt8](repeating: 7, count: 20_000)), on: socket) else {
                Issue.record("the message is queued"); return
            }
        }
        var received = 0
        w.sim.run(until: w.sim.clock.now + .seconds(5)) {
            for s in accepted { received += tb.read(s, max: 1 << 20) { _ in } }
            return received < 40_000
        }
        #expect(received == 40_000)
        #expect(largest <= 1014, "the largest frame after the change: \(largest) bytes")
    }
}

extension TCPOffloadTests {
    /// A message the stack cannot take is refused with its reason, and the buffer handed
    /// back, on the host's path and the engine's: an empty one, and one larger than
    /// `largestMessage` (data in flight must span less than half the sequence space). An
    /// empty buffer trapped when it was made, and a 2 GiB message trapped in the send queue.
    @Test(arguments: [false, true])
    func messagesTheStackCannotTakeAreRefusedWithTheirReason(offload: Bool) throws {
        let w = try TwoEndpoints(seed: 11, offload: offload)
        let (ta, tb) = (w.a.tcp, w.b.tcp)
        try tb.listen(port: 7)
        let client = try ta.connect(to: w.b.host.address, port: 7, now: w.sim.clock.now)
        w.sim.addProcess("applications") { _ = tb.accept(port: 7); return false }
        w.sim.run(until: w.sim.clock.now + .seconds(5)) { ta.status(client)?.state != .established || ta.isOffloaded(client) != offload }
        #expect(ta.isOffloaded(client) == offload)
        guard case .refused(.emptyMessage, _) = ta.send(TxBuffer(count: 0), on: client) else {
            Issue.record("an empty message is refused as empty"); return
        }
        // Memory the stack must not read: the message is refused before any of it is.
        let memory = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 1)
        defer { memory.deallocate() }
        let huge = TxBuffer(unowned: memory, count: TCPConfiguration.largestMessage + 1)
        guard case .refused(.messageTooLarge(let limit), let back) = ta.send(huge, on: client) else {
            Issue.record("a message past the limit is refused as too large"); return
        }
        #expect(limit == TCPConfiguration.largestMessage && back.count == limit + 1, "and the buffer comes back")
        #expect(ta.status(client)?.sendRoom == TCPConfiguration.largestMessage)
    }
}

extension TCPOffloadTests {
    /// A connection closed in SYN-SENT with nothing queued ends there, with an engine as
    /// without one (RFC 9293 3.10.4): its socket is released and no SYN follows. With an
    /// engine it went on retrying its SYN, to be offloaded and closed once a peer answered.
    @Test(arguments: [false, true])
    func aConnectionClosedInSynSentWithNothingQueuedEnds(offload: Bool) throws {
        // Nothing crosses the wire: the SYN gets no answer.
        let w = try TwoEndpoints(seed: 12, impairments: Impairments(loss: 1), offload: offload)
        let ta = w.a.tcp
        let client = try ta.connect(to: w.b.host.address, port: 7, now: w.sim.clock.now)
        w.sim.run(until: w.sim.clock.now + .seconds(2))
        #expect(ta.status(client)?.state == .synSent, "no answer yet")
        ta.close(client)
        w.sim.run(until: w.sim.clock.now + .seconds(10))
        #expect(ta.status(client) == nil, "the socket is released")
        #expect(ta.connectionCount == 0)
    }
}
