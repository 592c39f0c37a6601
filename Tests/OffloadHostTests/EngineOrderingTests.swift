import Testing
#if canImport(Glibc)
import Glibc
#endif
import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink
import OffloadSim
import OffloadWire

/// One seeded scenario: a traffic source behind engine port 0, a sink behind port 1, the
/// engine and the slow path as simulation processes with the software slower than the
/// engine. Flows (UDP, TCP, RTP-over-UDP) start in bursts; each packet carries its flow
/// number and sequence number so the sink can check per-flow order.
struct OrderingScenario {
    var seed: UInt64
    var orderGuard = true
    var processing = SlowPath.Processing.partial
    var flows = 8
    var packetsPerFlow = 12
    var softwareWeight = 0.3
    var audit = false
    /// Loss on the source's wire into the engine.
    var sourceLoss = 0.0

    struct Outcome {
        var delivered = 0
        var orderViolations = 0
        var missing = 0
        var frames: [[UInt8]] = []
        var counters = EngineCounters()
        var buffered = 0
        var entriesInSoftware = 0
        var hostTested: UInt64 = 0
        var rtp: [Int: RTPFlowStatistics] = [:]
        var deliveredPerFlow: [Int: Int] = [:]
    }

    static let gatewayMAC = MACAddress.local(0xaa), sinkMAC = MACAddress.local(0xbb)
    static let translated = IPv4Address(10, 200, 0, 1)

    func run() -> Outcome {
        let sim = Simulation(seed: seed)
        var random = sim.makeRandom()
        var config = Engine<MemoryLink>.Configuration()
        config.orderGuard = orderGuard
        config.audit = AuditSwitch(audit)
        config.tableCapacity = 64
        config.bufferCount = 512
        config.queueCapacity = 64
        let (engine, wires) = Engine.onMemoryWires(configuration: config, portCount: 2, clock: sim.clock, seed: seed,
                                                   impairments: { Impairments(loss: $0 == 0 ? sourceLoss : 0) })
        var source = wires[0], sink = wires[1]
        let slowPath = SlowPath(exceptions: engine.exceptions, reinsertion: engine.reinsertion, processing: processing) { key in
            .forward(.init(outputPort: 1, destinationMAC: Self.sinkMAC, sourceMAC: Self.gatewayMAC,
                           translatedSource: Self.translated, translatedSourcePort: 20000 &+ key.sourcePort))
        }
        // Each flow starts at a random time in bursts, then sends its packets a few µs apart.
        var next = [Int](repeating: 0, count: flows)
        for flow in 0..<flows {
            let start = Int64(random.next() % 4) * 50_000
            for n in 0..<packetsPerFlow {
                let at = Instant(nanoseconds: start + Int64(n) * Int64(1_000 + random.next() % 3_000))
                sim.schedule(at: at) {
                    let frame = Self.frame(flow: flow, sequence: next[flow])
                    next[flow] += 1
                    try! frame.withUnsafeBytes { try source.transmit($0) }
                }
            }
        }
        var outcome = Outcome()
        var lastSeen = [Int](repeating: -1, count: flows)
        let sinkPool = BufferPool(count: 64, bufferSize: 2048, headroom: 0)
        // The software costs virtual time per step, so packets keep arriving while it works.
        // The clock, not the simulation: a step that holds its simulation keeps the whole
        // scenario alive after `run` (tens of thousands of seeds in one process ran out of maps).
        sim.addProcess("engine", cost: .nanoseconds(500)) { [clock = sim.clock] in engine.poll(now: clock.now) }
        sim.addProcess("software", weight: softwareWeight, cost: .microseconds(Int64(3 + random.next() % 10))) {
            slowPath.step(max: 2) > 0
        }
        sim.addProcess("sink") {
            (try? sink.receive(into: sinkPool, max: 32) { buffer in
                let bytes = buffer.bytes
                let flow = Int(bytes[bytes.count - 2]), sequence = Int(bytes[bytes.count - 1])
                if sequence <= lastSeen[flow] { outcome.orderViolations += 1 }
                lastSeen[flow] = max(lastSeen[flow], sequence)
                outcome.delivered += 1
                outcome.deliveredPerFlow[flow, default: 0] += 1
                outcome.frames.append(Array(bytes))
            }) ?? 0 > 0
        }
        sim.run(maxSteps: 1_000_000)
        outcome.missing = flows * packetsPerFlow - outcome.delivered
        outcome.counters = engine.counters
        outcome.hostTested = engine.reinsertion.tested
        for (key, stats) in engine.rtpStatistics { outcome.rtp[Int(key.sourcePort) - 30000] = stats }
        outcome.buffered = engine.buffered
        engine.table.forEach { _, stats in outcome.entriesInSoftware += Int(stats.inSoftwareCount) }
        return outcome
    }

    /// Flow `flow`'s packet `sequence`: UDP for even flows (every fourth an RTP stream), TCP
    /// for odd ones; the last two payload bytes are the flow and sequence numbers.
    static func frame(flow: Int, sequence: Int) -> [UInt8] {
        let src = IPv4Address(10, 1, 0, UInt8(1 + flow)), dst = IPv4Address(10, 2, 0, 1)
        var payload = [UInt8](repeating: 0, count: 24)
        if flow % 4 == 0 { payload[0] = 0x80; payload[1] = 0; payload[3] = UInt8(sequence) }  // RTP v2 header
        payload[22] = UInt8(flow); payload[23] = UInt8(sequence)
        let tcp = flow % 2 == 1
        let l4 = tcp ? 20 : 8
        var frame = [UInt8](repeating: 0, count: 14 + 20 + l4 + payload.count)
        frame.withUnsafeMutableBytes { raw in
            EthernetRepr(destination: gatewayMAC, source: .local(1), etherType: .ipv4).emit(into: raw)
            IPv4Repr(source: src, destination: dst, protocol: tcp ? .tcp : .udp, payloadLength: l4 + payload.count)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
            let segment = UnsafeMutableRawBufferPointer(rebasing: raw[34...])
            for (i, b) in payload.enumerated() { segment[l4 + i] = b }
            if tcp {
                TCPRepr(sourcePort: UInt16(30000 + flow), destinationPort: 80, sequenceNumber: UInt32(sequence * 24),
                        acknowledgmentNumber: 1, flags: .ack, windowSize: 1000, payloadLength: payload.count)
                    .emit(into: segment, source: src, destination: dst, checksums: .verify)
            } else {
                UDPRepr(sourcePort: UInt16(30000 + flow), destinationPort: 5004, payloadLength: payload.count)
                    .emit(into: segment, source: src, destination: dst, checksums: .verify)
            }
        }
        return frame
    }
}

@Suite struct EngineOrderingTests {
    /// 1000 seeds by default; `ORDERING_FIRST` and `ORDERING_SEEDS` run another range (a
    /// release build of the tests runs tens of thousands in minutes).
    @Test func thousandSeedsKeepPerFlowOrderWithTheGuard() {
        let first = environmentSetting("ORDERING_FIRST") ?? 0, seeds = environmentSetting("ORDERING_SEEDS") ?? 1000
        var fastPath: UInt64 = 0, slowPath: UInt64 = 0, seedsWithDrops = 0
        for seed in first..<(first + seeds) {
            let o = OrderingScenario(seed: UInt64(seed)).run()
            #expect(o.orderViolations == 0, "seed \(seed)")
            let c = o.counters
            #expect(c.received == c.fastPath + c.reinsertedOut + c.totalDrops, "seed \(seed): \(c.table)")
            // Only the bounded exception queue may drop (B10): when a seed's flows all start
            // together and the software is slow, more packets can wait for it than the queue's
            // 64 places. Every packet that did not arrive is one it dropped, counted.
            #expect(c.totalDrops == c[drop: .exceptionQueueFull] && o.missing == Int(c.totalDrops),
                    "seed \(seed): \(o.missing) missing; \(c.table)")
            #expect(o.buffered == 0 && o.entriesInSoftware == 0, "seed \(seed)")
            fastPath += c.fastPath
            slowPath += c.reinsertedOut
            if c.totalDrops > 0 { seedsWithDrops += 1 }
            if o.orderViolations > 0 || o.missing != Int(c.totalDrops) { break }
        }
        print("\(seeds) seeds from \(first) with the order guard: \(fastPath) packets on the fast path, "
              + "\(slowPath) through the software; \(seedsWithDrops) seeds filled the exception queue")
        // Both paths carried real traffic (at least 10 packets a seed each): the handoff was
        // exercised; a full queue is rare.
        #expect(fastPath > 10 * UInt64(seeds) && slowPath > 10 * UInt64(seeds), "fast \(fastPath) slow \(slowPath)")
        #expect(seedsWithDrops * 1000 <= seeds, "\(seedsWithDrops) of \(seeds) seeds dropped packets")
    }

    @Test func withoutTheGuardTheSameScenariosReorder() {
        var violations = 0
        for seed in 0..<200 {
            let o = OrderingScenario(seed: UInt64(seed), orderGuard: false).run()
            violations += o.orderViolations
            #expect(o.missing == 0 && o.buffered == 0 && o.entriesInSoftware == 0, "seed \(seed)")
        }
        print("200 seeds without the order guard: \(violations) per-flow order violations")
        #expect(violations > 0, "the guard made no difference: the test does not exercise it")
    }

    @Test func auditModeKeepsOrderAndChecksEveryReinsertion() {
        for seed in 0..<100 {
            for processing in [SlowPath.Processing.partial, .complete] {
                var scenario = OrderingScenario(seed: UInt64(seed))
                scenario.audit = true
                scenario.processing = processing
                let o = scenario.run()
                let c = o.counters
                #expect(o.orderViolations == 0 && o.missing == 0 && c.totalDrops == 0, "seed \(seed)")
                #expect(o.buffered == 0 && o.entriesInSoftware == 0)
                // Every re-inserted packet carried a mark. Partial processing leaves it as the
                // engine classified it (valid); complete processing rewrites its headers, so
                // its mark no longer matches and the engine tests it instead.
                if processing == .partial {
                    #expect(c.auditValidMarks == c.reinsertedOut && c.auditInvalidMarks == 0)
                } else {
                    #expect(c.auditInvalidMarks == c.reinsertedOut && c.auditValidMarks == 0)
                }
                #expect(c.auditFailures.total == 0)
            }
        }
    }

    @Test func rtpFlowsGetTheirStatistics() {
        for seed in 0..<50 {
            let o = OrderingScenario(seed: UInt64(seed)).run()
            #expect(Set(o.rtp.keys) == Set(stride(from: 0, to: 8, by: 4)), "seed \(seed): RTP flows are 0 and 4")
            for (_, stats) in o.rtp {
                #expect(stats.packets == 12 && stats.lost == 0 && stats.gaps == 0 && stats.reordered == 0)
            }
        }
        var lost: Int64 = 0
        for seed in 0..<50 {
            var lossy = OrderingScenario(seed: UInt64(seed))
            lossy.sourceLoss = 0.1
            let o = lossy.run()
            for (flow, stats) in o.rtp {
                let missing = 12 - (o.deliveredPerFlow[flow] ?? 0)
                // Loss after the last packet that arrived cannot be seen (RFC 3550 counts up to the highest).
                #expect(stats.lost >= 0 && stats.lost <= Int64(missing), "seed \(seed) flow \(flow)")
                #expect(stats.reordered == 0)
                lost += stats.lost
            }
        }
        #expect(lost > 0, "10% loss showed up as RTP sequence gaps")
    }

    @Test func completeAndPartialProcessingGiveIdenticalFrames() {
        for seed in 0..<50 {
            var partial = OrderingScenario(seed: UInt64(seed)); partial.processing = .partial
            var complete = OrderingScenario(seed: UInt64(seed)); complete.processing = .complete
            let p = partial.run(), c = complete.run()
            // Same frames per flow, in the same per-flow order (interleaving across flows may differ).
            func byFlow(_ frames: [[UInt8]]) -> [Int: [[UInt8]]] {
                Dictionary(grouping: frames) { Int($0[$0.count - 2]) }
            }
            #expect(byFlow(p.frames) == byFlow(c.frames), "seed \(seed)")
            #expect(p.counters.completedByEngine > 0 && c.counters.completedByEngine == 0)
        }
    }
}

/// The same kind of scenario with the software on a real thread: the engine's poll loop
/// (with the traffic source and the sink, which share its memory wires) runs on the test's
/// thread.
func threadedScenario(seed: UInt64, orderGuard: Bool) throws -> (violations: Int, delivered: Int, counters: EngineCounters,
                                                                 buffered: Int) {
    let clock = MonotonicClock()
    var config = Engine<MemoryLink>.Configuration()
    config.orderGuard = orderGuard
    config.tableCapacity = 256
    config.queueCapacity = 2048
    let (engine, wires) = Engine.onMemoryWires(configuration: config, portCount: 2, clock: clock, seed: seed)
    var source = wires[0], sink = wires[1]
    let slowPath = SlowPath(exceptions: engine.exceptions, reinsertion: engine.reinsertion, processing: .partial) { key in
        .forward(.init(outputPort: 1, destinationMAC: OrderingScenario.sinkMAC, sourceMAC: OrderingScenario.gatewayMAC,
                       translatedSource: OrderingScenario.translated))
    }
    let software = try SoftwareThread(slowPath: slowPath, engineWakeup: nil)
    software.start()
    defer { software.stop() }

    let flows = 32, perFlow = 40
    var random = SeededRandom(seed: seed)
    var next = [Int](repeating: 0, count: flows)
    var lastSeen = [Int](repeating: -1, count: flows)
    var violations = 0, delivered = 0
    let sinkPool = BufferPool(count: 64, bufferSize: 2048, headroom: 0)
    let deadline = clock.now + .seconds(20)
    // Until every packet is accounted for: delivered, or dropped with a counted reason.
    while delivered + Int(engine.counters.totalDrops) < flows * perFlow, clock.now < deadline {
        // A few packets from random flows that still have some, in per-flow order.
        for _ in 0..<Int(random.next() % 8) {
            let flow = Int(random.next() % UInt64(flows))
            guard next[flow] < perFlow else { continue }
            let frame = OrderingScenario.frame(flow: flow, sequence: next[flow])
            next[flow] += 1
            try frame.withUnsafeBytes { try source.transmit($0) }
        }
        let before = engine.counters.totalToSoftware
        engine.poll(now: clock.now)
        if engine.counters.totalToSoftware != before { software.wakeup.wake() }
        _ = try sink.receive(into: sinkPool, max: 64) { buffer in
            let bytes = buffer.bytes
            let flow = Int(bytes[bytes.count - 2]), sequence = Int(bytes[bytes.count - 1])
            if sequence <= lastSeen[flow] { violations += 1 }
            lastSeen[flow] = max(lastSeen[flow], sequence)
            delivered += 1
        }
    }
    return (violations, delivered, engine.counters, engine.buffered)
}

@Suite(.serialized) struct ThreadedOrderingTests {
    @Test func orderHoldsWithTheSoftwareOnItsOwnThread() throws {
        var slow: UInt64 = 0, fast: UInt64 = 0
        for seed in 0..<20 {
            let r = try threadedScenario(seed: UInt64(seed), orderGuard: true)
            #expect(r.violations == 0, "seed \(seed)")
            #expect(r.delivered == 32 * 40, "seed \(seed): \(r.counters.table)")
            #expect(r.counters.received == r.counters.fastPath + r.counters.reinsertedOut + r.counters.totalDrops)
            #expect(r.buffered == 0)
            slow += r.counters.reinsertedOut
            fast += r.counters.fastPath
        }
        print("two threads, 20 seeds with the guard: \(fast) fast path, \(slow) through the software thread")
        #expect(slow > 0 && fast > 0)
    }

    @Test func withoutTheGuardReorderingIsMeasured() throws {
        var violations = 0
        for seed in 0..<20 {
            let r = try threadedScenario(seed: UInt64(seed), orderGuard: false)
            violations += r.violations
            #expect(r.delivered == 32 * 40, "seed \(seed): \(r.counters.table)")
        }
        // Thread timing decides how much: report it, assert only that nothing was lost.
        print("two threads, 20 seeds without the guard: \(violations) order violations")
    }

    /// While the software's thread sleeps, the engine's thread runs a step itself: a lone
    /// new flow's packet needs no wake-up, and the sleeping thread is left asleep.
    @Test func theEngineStepsInWhileTheSoftwareSleeps() throws {
        let clock = MonotonicClock()
        let (engine, wires) = Engine.onMemoryWires(configuration: .init(), portCount: 2, clock: clock)
        var source = wires[0], sink = wires[1]
        let slowPath = SlowPath(exceptions: engine.exceptions, reinsertion: engine.reinsertion, processing: .partial) { _ in
            .forward(.init(outputPort: 1, destinationMAC: OrderingScenario.sinkMAC, sourceMAC: OrderingScenario.gatewayMAC))
        }
        let software = try SoftwareThread(slowPath: slowPath, engineWakeup: nil)
        #expect(software.stepIfAsleep(max: 32) == nil, "not started, so not asleep")
        software.start()
        defer { software.stop() }
        let deadline = clock.now + .seconds(5)
        while !software.wakeup.isSleeping, clock.now < deadline { usleep(1000) }
        try #require(software.wakeup.isSleeping, "the idle software thread goes to sleep")
        try OrderingScenario.frame(flow: 1, sequence: 0).withUnsafeBytes { try source.transmit($0) }
        engine.poll(now: clock.now)
        #expect(engine.exceptions.count == 1)
        #expect(software.stepIfAsleep(max: 32) == 1, "handled on this thread")
        #expect(engine.exceptions.count == 0 && software.wakeup.isSleeping)
        engine.poll(now: clock.now)
        let delivered = try sink.receive(into: BufferPool(count: 4, bufferSize: 2048, headroom: 0), max: 4) { _ in }
        #expect(delivered == 1 && engine.buffered == 0)
    }
}
