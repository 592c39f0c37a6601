import Foundation
import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink
import OffloadTCP

// The TCP offload benchmarks of issue 6 (seed 003): the same measurements as the host's TCP
// (TCPBenchmarks.swift) with the connections offloaded to the engines.

/// Two offloaded stacks over a memory wire on one core: hosts A (10.77.81.1) and B
/// (10.77.81.2), each a `HostEndpoint` with offload on (MSS 1460, 1 MiB receive buffer,
/// SACK, timestamps, window scaling, CUBIC), so the engines run the connection; one thread,
/// pinned to `cpu`, runs A's application (messages of `messageSize` from a preallocated ring
/// while the send queue takes them; completions taken), A's turn, B's turn and B's
/// application (reads and discards). With `tso` the wire carries offload metadata: the
/// engine sends super-segments of up to 64 KiB that the wire delivers whole (as Linux's `lo`
/// with TSO and GRO does); without, every segment is one 1514-byte frame. Measured from the
/// first message for `seconds`. Nil, with the reason printed, when the handshake fails.
func twoOffloadedStacksOverMemoryLink(seconds: Double, tso: Bool, messageSize: Int = 64 * 1024,
                                      cpu: Int? = 0) -> MemoryLinkTCPFigures? {
    let skipped = "offloaded TCP over a memory link skipped"
    let pinned = cpu.flatMap { CPUAffinity.pin(to: $0) }
    defer { pinned?.restore() }
    let clock = MonotonicClock()
    let macA = MACAddress.local(0x77_81_01), macB = MACAddress.local(0x77_81_02)
    let frameSize = tso ? 65_536 + 14 : 2048
    let (linkA, linkB) = MemoryLink.pair(clock: clock, seed: 1, maxFrameSize: frameSize,
                                         framesInFlight: tso ? 32 : 1024, carriesOffloadMetadata: tso,
                                         addresses: (macA, macB))
    var tcp = TCPStack.Configuration()
    tcp.tcp.maximumSegmentSize = 1460
    tcp.tcp.receiveBufferSize = 1 << 20
    // A send queue a little over the window: the messages in flight (and so the memory the
    // engine gathers from) stay in the last-level cache, as iperf3's reused buffer does.
    tcp.tcp.sendQueueLimit = 3 << 19
    var engine = Engine<MemoryLink>.Configuration()
    if tso {
        engine.bufferSize = frameSize + Engine<MemoryLink>.headroom
        engine.bufferCount = 512
    }
    let a: HostEndpoint<MemoryLink>, b: HostEndpoint<MemoryLink>
    do {
        func endpoint(_ address: IPv4Address, _ mac: MACAddress, seed: UInt64, _ link: MemoryLink) throws
            -> HostEndpoint<MemoryLink> {
            var c = tcp
            c.seed = seed
            return try HostEndpoint(host: .init(interface: try IPv4CIDR(address: address, prefixLength: 24),
                                                hardwareAddress: mac),
                                    tcp: c, engine: engine, offload: true, clock: clock) { link }
        }
        a = try endpoint(IPv4Address(10, 77, 81, 1), macA, seed: 0xA, linkA)
        b = try endpoint(IPv4Address(10, 77, 81, 2), macB, seed: 0xB, linkB)
    } catch {
        benchNote("\(skipped): \(error)")
        return nil
    }
    let stackA = a.tcp, stackB = b.tcp
    let port: UInt16 = 5001
    let sender: TCPSocket
    var receiver: TCPSocket?
    do {
        try stackB.listen(port: port)
        sender = try stackA.connect(to: b.host.address, port: port, now: clock.now)
    } catch {
        benchNote("\(skipped): \(error)")
        return nil
    }
    let deadline = clock.now + .seconds(2)
    while clock.now < deadline && !(receiver != nil && stackA.isOffloaded(sender)) {
        a.turn(now: clock.now)
        b.turn(now: clock.now)
        if receiver == nil { receiver = stackB.accept(port: port) }
    }
    guard let receiver, stackA.isOffloaded(sender), let connection = stackA.connection(sender) else {
        benchNote("\(skipped): the handshake and offload did not complete")
        return nil
    }
    let ring = MessageRing(messageSize: messageSize, sendQueueLimit: connection.configuration.sendQueueLimit)
    var delivered: UInt64 = 0, rounds: UInt64 = 0
    let engineA = a.engine.tcp.counters, engineB = b.engine.tcp.counters
    let wireBefore = linkA.sentCounters.queueDrops &+ linkB.sentCounters.queueDrops
    let dropsBefore = a.engine.counters.totalDrops + b.engine.counters.totalDrops
    let cpuBefore = ThreadCPUTime.now
    let start = clock.now
    let end = start + .nanoseconds(Int64(seconds * 1e9))
    var now = start
    while now < end {
        // A's application: fill the send queue (the stack refuses past its limit).
        while case .queued = stackA.send(ring.next(), on: sender) {}
        stackA.takeCompletions(of: sender) { _ in }
        a.turn(now: now)
        b.turn(now: now)
        stackB.read(receiver, max: Int.max) { delivered &+= UInt64($0.count) }
        rounds &+= 1
        now = clock.now
    }
    let elapsed = Double((now - start).nanoseconds) / 1e9
    let cpu = ThreadCPUTime.now - cpuBefore
    let figures = MemoryLinkTCPFigures(
        seconds: elapsed, bytesDelivered: delivered,
        dataFrames: a.engine.tcp.counters.segmentsSent - engineA.segmentsSent,
        ackFrames: b.engine.tcp.counters.segmentsSent - engineB.segmentsSent,
        retransmittedSegments: connection.counters.segmentsRetransmitted,
        wireQueueDrops: linkA.sentCounters.queueDrops &+ linkB.sentCounters.queueDrops &- wireBefore,
        hostDrops: a.engine.counters.totalDrops + b.engine.counters.totalDrops - dropsBefore,
        rounds: rounds, pinnedCPU: pinned?.cpu, cpu: cpu)
    stackA.abort(sender)
    a.turn(now: clock.now)
    return figures
}

// MARK: Bench rows

enum TCPOffloadBenchmarks {
    /// Offloaded stacks over the memory wire with TSO and without, then Linux over `lo`.
    static func memoryRows(seconds: Double) -> [BenchResult] {
        let tso = twoOffloadedStacksOverMemoryLink(seconds: seconds, tso: true)
        let frames = twoOffloadedStacksOverMemoryLink(seconds: seconds, tso: false)
        let linuxFigures = linuxLoopbackTCPFigures(seconds: seconds)
        let reference = linuxFigures.map { ("Linux lo", $0.gigabitsPerSecond) }
        var rows: [BenchResult] = []
        if let tso {
            rows.append(BenchResult(name: "tcp offload: memory link, TSO (MSS 1460, 1 core)",
                                    value: tso.gigabitsPerSecond, unit: "Gbit/s", reference: reference,
                                    target: ">= 40 Gbit/s, >= 1.0x Linux",
                                    detail: TCPBenchmarks.memoryDetail(tso, linuxFigures)))
        }
        if let frames {
            rows.append(BenchResult(name: "tcp offload: memory link, 1514-byte frames (1 core)",
                                    value: frames.gigabitsPerSecond, unit: "Gbit/s", reference: reference,
                                    target: "- (report)", detail: TCPBenchmarks.memoryDetail(frames, linuxFigures)))
        }
        return rows
    }
}

extension TCPOffloadBenchmarks {
    /// The offloaded connection to Linux over a plain TAP against the TAP's raw frame-write
    /// limit, and over a virtio-net TAP with TSO against Linux veth to veth.
    static func tapRows(seconds: Double) -> [BenchResult] {
        var rows: [BenchResult] = []
        let limit = tapRawFrameWrite(seconds: seconds)
        if let ours = tcpToLinuxOverTap(seconds: seconds, offload: true) {
            rows.append(BenchResult(name: "tcp offload: to Linux over TAP (MTU 1500)", value: ours.gigabitsPerSecond,
                                    unit: "Gbit/s", reference: limit.map { ("TAP raw write", $0.gigabitsPerSecond) },
                                    target: ">= 0.7x TAP raw frame-write", detail: tapDetail(ours)))
            rows.append(BenchResult(name: "tcp offload: TAP ACK frames read", value: ours.acksPerSecond / 1e3,
                                    unit: "k/s", target: "- (report)",
                                    detail: "\(format(Double(ours.segmentsSent) / Double(max(1, ours.acksRead)))) "
                                        + "segments per ACK"))
        }
        // The same with the engine on a thread of its own: the host's thread only posts
        // messages and takes completions, as an offload NIC leaves the host's CPU.
        if let ours = tcpToLinuxOverTap(seconds: seconds, offload: true, engineThread: true) {
            let engineCPU = ours.engineThreadCPU.map { "\(format(100 * $0 / ours.seconds))%" } ?? "unmeasured"
            rows.append(BenchResult(name: "tcp offload: to Linux over TAP, engine thread", value: ours.gigabitsPerSecond,
                                    unit: "Gbit/s", reference: limit.map { ("TAP raw write", $0.gigabitsPerSecond) },
                                    target: "- (report)",
                                    detail: "\(format(ours.seconds)) s, host thread CPU "
                                        + "\(format(100 * ours.cpu.total / ours.seconds))%, engine thread CPU \(engineCPU), "
                                        + "the engine slept \(ours.sleeps) times, retransmitted \(ours.retransmittedSegments)"))
        }
        let veth = linuxVethTCPFigures(seconds: seconds)
        if let ours = tcpToLinuxOverTap(seconds: seconds, offload: true, virtioNetHeader: true) {
            rows.append(BenchResult(name: "tcp offload: to Linux over virtio-net TAP, TSO", value: ours.gigabitsPerSecond,
                                    unit: "Gbit/s", reference: veth.map { ("Linux veth", $0.gigabitsPerSecond) },
                                    target: ">= 0.5x Linux veth to veth",
                                    detail: tapDetail(ours) + ", \(ours.superSegments) super-segments"
                                        + (veth?.cpuPercent.map { "; Linux: iperf3 CPU \(format($0))%" } ?? "")))
        }
        return rows
    }

    static func tapDetail(_ ours: TapTCPFigures) -> String {
        "\(format(ours.seconds)) s, \(format(Double(ours.bytesAcknowledged) / 1e9)) GB acknowledged, "
            + "\(format(ours.segmentsPerSecond / 1e3)) k segments/s written, "
            + "retransmitted \(ours.retransmittedSegments) (timeouts \(ours.retransmissionTimeouts)), "
            + "TAP write failures \(ours.transmitFailures), \(ours.sleeps) of \(ours.rounds) rounds slept, thread CPU "
            + "\(format(100 * ours.cpu.total / ours.seconds))% (sys \(format(100 * ours.cpu.system / ours.seconds))%)"
    }

    /// What the engine keeps per offloaded connection, message contexts aside.
    static func memoryRows() -> [BenchResult] {
        let bytes = TCPOffloadTable.bytesPerConnection
        let object = connectionObjectBytes()
        return [BenchResult(name: "tcp offload: engine bytes per connection", value: Double(bytes.total), unit: "B",
                            target: "<= 512 B, message contexts aside",
                            detail: "control block \(bytes.controlBlock) B (constant, cached, delegated: T2), "
                                + "offload slot \(bytes.slot) B, connection-table entry \(bytes.entry) B; the state "
                                + "machine object around the control block is \(object.map { "\($0) B" } ?? "unmeasured") "
                                + "in all (its flags and queue headers, which a hardware engine would fold into the block)")]
    }

    /// The allocation of one `TCPConnection` object (`malloc_usable_size`, looked up with
    /// `dlsym` as the Glibc module does not import it).
    static func connectionObjectBytes() -> Int? {
        typealias Call = @convention(c) (UnsafeMutableRawPointer?) -> Int
        guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "malloc_usable_size") else { return nil }
        let usableSize = unsafeBitCast(symbol, to: Call.self)
        let id = TCPConnectionID(local: IPv4Address(10, 0, 0, 1), localPort: 1, remote: IPv4Address(10, 0, 0, 2),
                                 remotePort: 2)
        let connection = TCPConnection(connecting: id, initialSendSequence: SequenceNumber(0),
                                       configuration: TCPConfiguration(), now: .zero)
        return usableSize(Unmanaged.passUnretained(connection).toOpaque())
    }
}
