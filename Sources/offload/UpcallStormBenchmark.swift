import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink
import OffloadWire

/// B10, the upcall storm: established flows through the engine's poll loop while new flows
/// arrive, each of which misses and goes up to the software. Everything runs on one core:
/// per round the source offers a burst of 32 frames (a fixed fraction of them first packets
/// of new flows, spread evenly), the engine polls once, the slow path takes up to a burst
/// from the exception queue, and the sink is drained. The offered load is closed-loop (as
/// fast as the loop goes), so the established figure is what is left of the core for
/// established flows once the storm has had its share: the ratio to the no-storm figure of
/// the same run is the measure.
///
/// Each storm fraction has its own engine with `flows` established flows; the fractions take
/// turns in short rounds, so that the machine's other load falls on all of them alike. The
/// table is sized for the storm (1M entries): new flows are TCP connections (a SYN each),
/// whose entries idle out after 250 ms here (the expiry scan takes about as long again),
/// while the established flows are UDP with the default 30 s, so that none of them idles out
/// between its packets. The established figure can be lower than the fast-path benchmark's,
/// whose table holds only its own flows and runs no expiry.
///
/// New flows come from distinct sources, as in a scan or a spoofed-source SYN flood, so
/// per-source fairness lets them in: what limits them is the bounded exception queue. In
/// this closed loop the software takes a burst per poll and the engine reads a burst of its
/// messages (16 new flows) per poll, so up to 50% new flows it keeps up and nothing is
/// dropped: the storm's cost shows as established throughput lost, about 1 µs of the core
/// per new flow (the flow-setup benchmark's figure). At 90% it cannot keep up: the queue
/// bound drops the excess, and the established flows, a tenth of the offered packets then,
/// still lose none. "Established lost" counts established packets offered but not sent by
/// the fast path (dropped, or sent through the software after an entry idled out).
enum UpcallStormBenchmark {
    /// Shares of the offered packets that are new flows.
    static let stormFractions = [0.0, 0.01, 0.1, 0.5, 0.9]
    static let rounds = 5

    struct Figures {
        var storm = 0.0
        var seconds = 0.0
        var established: UInt64 = 0
        var establishedOffered = 0
        var newOffered = 0
        var newSetUp: UInt64 = 0
        var queueFull: UInt64 = 0
        var overShare: UInt64 = 0
        var otherDrops: UInt64 = 0
        var tableFull: UInt64 = 0

        var establishedMpps: Double { Double(established) / seconds / 1e6 }

        static func += (a: inout Figures, b: Figures) {
            a.seconds += b.seconds; a.established += b.established; a.newOffered += b.newOffered
            a.establishedOffered += b.establishedOffered
            a.newSetUp += b.newSetUp; a.queueFull += b.queueFull; a.overShare += b.overShare
            a.otherDrops += b.otherDrops; a.tableFull += b.tableFull
        }
    }

    static func run(flows: Int, seconds: Double) -> [BenchResult] {
        let rigs = stormFractions.map { StormRig(flows: flows, storm: $0) }
        for rig in rigs { _ = rig.drive(seconds: min(0.2, seconds / 5)) }  // warm-up
        var figures = stormFractions.map { Figures(storm: $0) }
        for _ in 0..<rounds {
            for (i, rig) in rigs.enumerated() { figures[i] += rig.drive(seconds: seconds / Double(rounds)) }
        }
        let calm = figures[0].establishedMpps
        return figures.map { f in
            let per = { (n: Double) in format(n / f.seconds / 1e6) }
            var detail = "new flows: offered \(per(Double(f.newOffered))) M/s, set up \(per(Double(f.newSetUp))) M/s, "
                + "dropped \(f.queueFull) queue full, \(f.overShare) over share"
            if f.otherDrops > 0 { detail += ", \(f.otherDrops) other drops" }
            detail += "; established lost \(f.establishedOffered - Int(f.established))"
            if f.tableFull > 0 { detail += ", \(f.tableFull) table full (no entry)" }
            return BenchResult(name: "storm \(format(f.storm * 100))% new, \(flows / 1000)k", value: f.establishedMpps,
                               unit: "Mpps", reference: ("no storm", calm), target: "-", detail: detail)
        }
    }
}

/// One storm fraction's engine, slow path, source and sink.
final class StormRig {
    let storm: Double
    let flows: Int
    var bench: EngineBench
    let slowPath: SlowPath
    let frames: UnsafeMutableRawBufferPointer
    let newFrame: UnsafeMutableRawBufferPointer
    var newSource: UInt32 = 0x0b00_0000, newPort: UInt16 = 5000
    let sinkPool = BufferPool(count: 256, bufferSize: 2048, headroom: 0)
    var random = SeededRandom(seed: 7)
    /// Which packets are new: a 32-bit fixed-point accumulator, so the share is exact and even.
    let step: UInt64
    var accumulator: UInt64 = 0
    var newOffered = 0
    var establishedOffered = 0
    /// The engine's time stands still while other rigs run (their turns would otherwise idle
    /// the established flows out): how long this rig has been paused, and since when.
    var paused = Duration.zero
    var lastStop: Instant?

    init(flows: Int, storm: Double) {
        self.storm = storm
        self.flows = flows
        step = UInt64(storm * 4_294_967_296.0)
        bench = EngineBench(tableCapacity: 1 << 20) { config in
            // The engine's defaults: the exception queue, not the buffer pool, is the bound.
            config.bufferCount = 4096
            config.queueCapacity = 1024
            config.expiryBudget = 64
            config.idleTimeouts = IdleTimeouts(tcp: .milliseconds(250), udp: .seconds(30))
        }
        let engine = bench.engine, clock = bench.clock
        slowPath = SlowPath(exceptions: engine.exceptions, reinsertion: engine.reinsertion, processing: .partial) {
            EngineBench.natForward(sourcePort: $0.sourcePort)
        }
        // The established flows: a frame each, and an entry installed through the software's queue.
        let frameSize = EngineBench.frameSize
        frames = .allocate(byteCount: flows * frameSize, alignment: 64)
        for flow in 0..<flows {
            let frame = UnsafeMutableRawBufferPointer(rebasing: frames[flow * frameSize..<(flow + 1) * frameSize])
            let src = IPv4Address(rawValue: 0x0a00_0000 | UInt32(flow >> 16))
            let sport = UInt16(truncatingIfNeeded: flow)
            EngineBench.emitUDP(into: frame, source: src, sourcePort: sport)
            let key = FlowKey(ingressPort: 0, protocol: 17, source: src, destination: EngineBench.destination,
                              sourcePort: sport, destinationPort: 4000)
            while engine.reinsertion.room == 0 { engine.poll(now: clock.now) }
            engine.reinsertion.send(.install(key, EngineBench.natForward(sourcePort: sport &+ 1)))
        }
        while engine.poll(now: clock.now) {}
        newFrame = .allocate(byteCount: StormRig.synFrameSize, alignment: 64)
        StormRig.emitSYN(into: newFrame, source: IPv4Address(rawValue: newSource), sourcePort: newPort)
    }

    /// A TCP SYN (Ethernet 14 + IPv4 20 + TCP 20), padded to Ethernet's 60-byte minimum.
    static let synFrameSize = 60

    static func emitSYN(into frame: UnsafeMutableRawBufferPointer, source: IPv4Address, sourcePort: UInt16) {
        frame.initializeMemory(as: UInt8.self, repeating: 0)
        let destination = EngineBench.destination
        EthernetRepr(destination: EngineBench.gatewayMAC, source: .local(1), etherType: .ipv4).emit(into: frame)
        IPv4Repr(source: source, destination: destination, protocol: .tcp, payloadLength: 20)
            .emit(into: UnsafeMutableRawBufferPointer(rebasing: frame[14...]), checksums: .verify)
        TCPRepr(sourcePort: sourcePort, destinationPort: 80, sequenceNumber: 1, flags: .syn, windowSize: 65535)
            .emit(into: UnsafeMutableRawBufferPointer(rebasing: frame[34..<54]), source: source,
                  destination: destination, checksums: .verify)
    }

    deinit {
        frames.deallocate()
        newFrame.deallocate()
    }

    /// The next new flow's SYN: a new source address each time (11.x.y.z, then the next
    /// source port), patched in place with the checksums updated incrementally (RFC 1624).
    func nextNewFlow() {
        let old = newSource
        newSource = 0x0b00_0000 | ((newSource &+ 1) & 0x00ff_ffff)
        newFrame.storeBytes(of: newSource.bigEndian, toByteOffset: 26, as: UInt32.self)
        let ip = UInt16(bigEndian: newFrame.loadUnaligned(fromByteOffset: 24, as: UInt16.self))
        newFrame.storeBytes(of: InternetChecksum.update(ip, old: old, new: newSource).bigEndian, toByteOffset: 24,
                            as: UInt16.self)
        var tcp = UInt16(bigEndian: newFrame.loadUnaligned(fromByteOffset: 50, as: UInt16.self))
        tcp = InternetChecksum.update(tcp, old: old, new: newSource)
        if newSource == 0x0b00_0000 {
            newPort &+= 1
            newFrame.storeBytes(of: newPort.bigEndian, toByteOffset: 34, as: UInt16.self)
            tcp = InternetChecksum.update(tcp, old: newPort &- 1, new: newPort)
        }
        newFrame.storeBytes(of: tcp.bigEndian, toByteOffset: 50, as: UInt16.self)
    }

    /// Runs the loop for about `seconds` and returns what it did.
    func drive(seconds: Double) -> UpcallStormBenchmark.Figures {
        let engine = bench.engine, clock = bench.clock
        let frameSize = EngineBench.frameSize
        let before = engine.counters, offeredBefore = newOffered, establishedBefore = establishedOffered
        let start = clock.now
        if let lastStop { paused = paused + (start - lastStop) }
        defer { lastStop = clock.now }
        let end = start + .nanoseconds(Int64(seconds * 1e9))
        while true {
            let wall = clock.now
            if wall >= end { break }
            let now = wall - paused
            for _ in 0..<64 {
                for _ in 0..<32 {
                    accumulator &+= step
                    if accumulator >= 1 << 32 {
                        accumulator &-= 1 << 32
                        nextNewFlow()
                        try? bench.source.transmit(UnsafeRawBufferPointer(newFrame))
                        newOffered &+= 1
                    } else {
                        establishedOffered &+= 1
                        let flow = Int(truncatingIfNeeded: random.next().multipliedFullWidth(by: UInt64(flows)).high)
                        try? bench.source.transmit(UnsafeRawBufferPointer(start: frames.baseAddress! + flow * frameSize,
                                                                          count: frameSize))
                    }
                }
                engine.poll(now: now)
                slowPath.step(max: 32)
                while ((try? bench.sink.receive(into: sinkPool, max: 256) { _ in }) ?? 0) > 0 {}
            }
        }
        let after = engine.counters
        var f = UpcallStormBenchmark.Figures(storm: storm)
        f.seconds = Double((clock.now - start).nanoseconds) / 1e9
        // New flows are one packet each and never hit the fast path: fastPath is the established flows'.
        f.established = after.fastPath - before.fastPath
        f.newOffered = newOffered - offeredBefore
        f.establishedOffered = establishedOffered - establishedBefore
        f.newSetUp = after.reinsertedOut - before.reinsertedOut
        f.queueFull = after[drop: .exceptionQueueFull] - before[drop: .exceptionQueueFull]
        f.overShare = after[drop: .sourceOverShare] - before[drop: .sourceOverShare]
        f.otherDrops = (after.totalDrops - before.totalDrops) - f.queueFull - f.overShare
        f.tableFull = after[toSoftware: .tableFull] - before[toSoftware: .tableFull]
        return f
    }
}
