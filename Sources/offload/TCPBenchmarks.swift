import Foundation
import COffloadShim
import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink
import OffloadTCP

// The two TCP benchmarks of SPEC "Measurements" (issue 5), each with its reference measured
// in the same run (TCPReferenceBenchmarks.swift):
//
// - `twoStacksOverMemoryLink`: two IPv4Hosts, each with a TCPStack (MSS 1460), joined by a
//   MemoryLink pair, driven by one thread pinned to one core; against Linux TCP over `lo`
//   (iperf3, MTU 1500, client and server on the same core).
// - `tcpToLinuxOverTap`: our host on a plain TAP sends to a Linux sink in a namespace;
//   against the TAP's raw frame-write limit.
//
// Rows of `offload bench` (`--filter "tcp offload"` runs just these two; `--filter tcp` adds
// the standalone reference rows).

// MARK: Two stacks over a memory link

/// What `twoStacksOverMemoryLink` measured.
struct MemoryLinkTCPFigures {
    /// How long the transfer was measured (from the first byte queued after the handshake).
    var seconds: Double
    /// Application bytes the receiver read.
    var bytesDelivered: UInt64
    /// Frames each way, and what went wrong on the wire or in the hosts (all 0 when healthy).
    var dataFrames: UInt64, ackFrames: UInt64
    var retransmittedSegments: UInt64, wireQueueDrops: UInt64, hostDrops: UInt64
    /// Loop rounds (both hosts' receive and poll, the application's turn).
    var rounds: UInt64
    /// The core the loop ran on, when pinning worked.
    var pinnedCPU: Int?
    /// CPU time the loop's thread got while measured: on a shared machine, less than `seconds`.
    var cpu: ThreadCPUTime

    var gigabitsPerSecond: Double { seconds > 0 ? Double(bytesDelivered) * 8 / seconds / 1e9 : 0 }
    /// Throughput per second of CPU the thread got (what an idle core would give, about).
    var gigabitsPerCPUSecond: Double { cpu.total > 0 ? Double(bytesDelivered) * 8 / cpu.total / 1e9 : 0 }
    /// CPU time per data segment, both stacks and the wire included, in nanoseconds.
    var nanosecondsPerSegment: Double { dataFrames > 0 ? cpu.total * 1e9 / Double(dataFrames) : 0 }
}

/// User and system CPU seconds of the calling thread (`getrusage(RUSAGE_THREAD)`).
struct ThreadCPUTime {
    var user = 0.0, system = 0.0
    var total: Double { user + system }

    static var now: ThreadCPUTime {
        var usage = rusage()
        guard getrusage(__rusage_who_t(1), &usage) == 0 else { return ThreadCPUTime() }  // 1: RUSAGE_THREAD
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return ThreadCPUTime(user: seconds(usage.ru_utime), system: seconds(usage.ru_stime))
    }

    static func - (a: ThreadCPUTime, b: ThreadCPUTime) -> ThreadCPUTime {
        ThreadCPUTime(user: a.user - b.user, system: a.system - b.system)
    }
}

/// Two in-process stacks over a memory link (SPEC: "TCP offload, two stacks in one process
/// over a memory link, MSS 1460, no loss ... on one core"). Host A (10.77.80.1) and host B
/// (10.77.80.2), each an `IPv4Host` with a `TCPStack` (MSS 1460, i.e. MTU 1500; SACK,
/// timestamps, window scaling, CUBIC; `receiveBuffer` bytes of receive buffer), are joined by
/// `MemoryLink.pair` (perfect, no impairment, `framesInFlight` frames at most on the wire each
/// way: 1024, the default, holds a 1 MiB window of full segments). One thread,
/// pinned to `cpu` with `sched_setaffinity` (restored afterwards), runs in turn: A's
/// application (queues `messageSize` messages as `TxBuffer(unowned:)` pointing into one
/// preallocated ring while the send queue has room; takes completions), A's
/// `HostLoop.runOnce` (burst of up to 32 frames, then `poll`), B's `HostLoop.runOnce`, and B's
/// application (reads everything and discards it). One connection, measured from the first
/// message for `seconds` or until `maxBytes` were read. Nil, with the reason printed, when
/// the handshake does not complete.
func twoStacksOverMemoryLink(seconds: Double, maxBytes: UInt64 = 1 << 36, messageSize: Int = 64 * 1024,
                             receiveBuffer: Int = 1 << 20, framesInFlight: Int = 1024,
                             cpu: Int? = 0) -> MemoryLinkTCPFigures? {
    let skipped = "TCP over a memory link skipped"
    let pinned = cpu.flatMap { CPUAffinity.pin(to: $0) }
    defer { pinned?.restore() }

    let clock = MonotonicClock()
    let macA = MACAddress.local(0x77_80_01), macB = MACAddress.local(0x77_80_02)
    var (linkA, linkB) = MemoryLink.pair(clock: clock, seed: 1, framesInFlight: framesInFlight,
                                         addresses: (macA, macB))
    let addressA = IPv4Address(10, 77, 80, 1), addressB = IPv4Address(10, 77, 80, 2)
    var configuration = TCPStack.Configuration()
    configuration.tcp.maximumSegmentSize = 1460
    configuration.tcp.receiveBufferSize = receiveBuffer
    func host(_ address: IPv4Address, _ mac: MACAddress, seed: UInt64) -> IPv4Host {
        var c = configuration
        c.seed = seed
        // swiftlint:disable:next force_try
        let cidr = try! IPv4CIDR(address: address, prefixLength: 24)
        return IPv4Host(.init(interface: cidr, hardwareAddress: mac), tcp: c)
    }
    let hostA = host(addressA, macA, seed: 0xA), hostB = host(addressB, macB, seed: 0xB)
    let stackA = hostA.tcp!, stackB = hostB.tcp!
    var loopA = HostLoop(host: hostA, pool: BufferPool(count: 512, bufferSize: 2048, headroom: 0), clock: clock)
    var loopB = HostLoop(host: hostB, pool: BufferPool(count: 512, bufferSize: 2048, headroom: 0), clock: clock)

    // The handshake (and ARP before it), bounded.
    let port: UInt16 = 5001
    let sender: TCPSocket
    var receiver: TCPSocket?
    do {
        try stackB.listen(port: port)
        sender = try stackA.connect(to: addressB, port: port, now: clock.now)
        let deadline = clock.now + .seconds(2)
        while clock.now < deadline {
            try loopA.runOnce(on: &linkA)
            try loopB.runOnce(on: &linkB)
            if receiver == nil { receiver = stackB.accept(port: port) }
            if receiver != nil, stackA.connection(sender)?.state == .established { break }
        }
    } catch {
        benchNote("\(skipped): \(error)")
        return nil
    }
    guard let receiver, let connection = stackA.connection(sender), connection.state == .established else {
        benchNote("\(skipped): the handshake did not complete")
        return nil
    }

    let limit = connection.configuration.sendQueueLimit
    let ring = MessageRing(messageSize: messageSize, sendQueueLimit: limit)
    var queued: UInt64 = 0, delivered: UInt64 = 0, rounds: UInt64 = 0
    let countersA = hostA.counters, countersB = hostB.counters
    let wireBefore = linkA.sentCounters.queueDrops &+ linkB.sentCounters.queueDrops

    let cpuBefore = ThreadCPUTime.now
    let start = clock.now
    let end = start + .nanoseconds(Int64(seconds * 1e9))
    var now = start
    do {
        while now < end && delivered < maxBytes {
            // A's application: fill the send queue.
            while queued < maxBytes && connection.unacknowledgedBytes + messageSize <= limit {
                guard case .queued = stackA.send(ring.next(), on: sender) else { break }
                queued &+= UInt64(messageSize)
            }
            stackA.takeCompletions(of: sender) { _ in }
            try loopA.runOnce(on: &linkA)
            try loopB.runOnce(on: &linkB)
            // B's application: read and discard.
            stackB.read(receiver, max: Int.max) { delivered &+= UInt64($0.count) }
            rounds &+= 1
            now = clock.now
        }
    } catch {
        benchNote("\(skipped): \(error)")
        return nil
    }
    let elapsed = Double((now - start).nanoseconds) / 1e9
    let cpu = ThreadCPUTime.now - cpuBefore
    let a = hostA.counters, b = hostB.counters
    let hostDrops = a.totalDrops - countersA.totalDrops + b.totalDrops - countersB.totalDrops
    let figures = MemoryLinkTCPFigures(
        seconds: elapsed, bytesDelivered: delivered,
        dataFrames: a.tcpSegmentsSent - countersA.tcpSegmentsSent,
        ackFrames: b.tcpSegmentsSent - countersB.tcpSegmentsSent,
        retransmittedSegments: connection.counters.segmentsRetransmitted,
        wireQueueDrops: linkA.sentCounters.queueDrops &+ linkB.sentCounters.queueDrops &- wireBefore,
        hostDrops: hostDrops, rounds: rounds, pinnedCPU: pinned?.cpu, cpu: cpu)
    stackA.abort(sender)
    _ = try? loopA.runOnce(on: &linkA)
    return figures
}

/// Pins the calling thread to one CPU and gives the previous mask back. `sched_setaffinity`
/// is a GNU extension the Glibc module does not import; it is looked up with `dlsym`.
struct CPUAffinity {
    let cpu: Int
    private let previous: cpu_set_t

    private typealias Call = @convention(c) (pid_t, Int, UnsafeMutableRawPointer) -> Int32
    private static let functions: (get: Call, set: Call)? = {
        guard let handle = dlopen(nil, RTLD_NOW), let get = dlsym(handle, "sched_getaffinity"),
              let set = dlsym(handle, "sched_setaffinity") else { return nil }
        return (unsafeBitCast(get, to: Call.self), unsafeBitCast(set, to: Call.self))
    }()

    /// Nil (with the reason printed) when the mask cannot be read or set.
    static func pin(to cpu: Int) -> CPUAffinity? {
        guard let functions, cpu >= 0, cpu < 1024 else {
            benchNote("CPU affinity: sched_setaffinity is not available; the loop runs unpinned")
            return nil
        }
        var previous = cpu_set_t()
        guard functions.get(0, MemoryLayout<cpu_set_t>.size, &previous) == 0 else {
            benchNote("CPU affinity: sched_getaffinity failed (errno \(errno)); the loop runs unpinned")
            return nil
        }
        var mask = cpu_set_t()
        withUnsafeMutableBytes(of: &mask) { $0[cpu / 8] = UInt8(1) << (cpu % 8) }
        guard functions.set(0, MemoryLayout<cpu_set_t>.size, &mask) == 0 else {
            benchNote("CPU affinity: cannot pin to CPU \(cpu) (errno \(errno)); the loop runs unpinned")
            return nil
        }
        return CPUAffinity(cpu: cpu, previous: previous)
    }

    func restore() {
        var mask = previous
        _ = Self.functions?.set(0, MemoryLayout<cpu_set_t>.size, &mask)
    }
}

// MARK: To Linux over a plain TAP

/// What `tcpToLinuxOverTap` measured. Rates are per second of the measured transfer.
struct TapTCPFigures {
    var seconds: Double
    /// Application bytes Linux acknowledged.
    var bytesAcknowledged: UInt64
    /// TCP segments we wrote to the TAP (data, and the odd window update), and ACK frames we
    /// read from it.
    var segmentsSent: UInt64, acksRead: UInt64
    /// Of the segments sent, TSO super-segments (virtio-net header only).
    var superSegments: UInt64
    var retransmittedSegments: UInt64, retransmissionTimeouts: UInt64
    /// Frames the TAP refused (`write` failed), and other host drops.
    var transmitFailures: UInt64, hostDrops: UInt64
    /// Loop rounds, and those that slept in epoll (nothing received, nothing to send).
    var rounds: UInt64, sleeps: UInt64
    /// CPU time the loop's thread got while measured (system: the TAP's reads and writes,
    /// which also run Linux's receive path for what we write).
    var cpu: ThreadCPUTime
    /// With the engine on a thread of its own: that thread's CPU time (then `cpu` is the
    /// host's and the application's thread alone, and `sleeps` the engine's).
    var engineThreadCPU: Double? = nil

    var gigabitsPerSecond: Double { seconds > 0 ? Double(bytesAcknowledged) * 8 / seconds / 1e9 : 0 }
    var segmentsPerSecond: Double { seconds > 0 ? Double(segmentsSent) / seconds : 0 }
    var acksPerSecond: Double { seconds > 0 ? Double(acksRead) / seconds : 0 }
}

/// Our TCP to Linux over a plain TAP (SPEC: "TCP to Linux over a plain TAP, MTU 1500"). A
/// `TapLink` (`.plain`) whose kernel side moves into a namespace of its own
/// (`offload-bench-tcptap-<pid>`, 10.77.91.1/24, MTU 1500, IPv6 off) where `socat` accepts
/// one connection on port 5401 and writes what it reads to /dev/null. Our host is 10.77.91.2
/// (ARP both ways, as on a real link), its TCP as `offload send` sets it up (MSS 1460, 1 MiB
/// receive buffer, SACK, timestamps, CUBIC). The loop is `offload send`'s: the application's
/// turn (messages of `messageSize` as `TxBuffer(unowned:)` into one preallocated ring while
/// the send queue has room), a `HostEndpoint` turn (the engine reads a burst from the TAP and
/// hands the host's frames to the software through the exception queue; the host's segments
/// leave through the engine's transmit path), and a sleep in epoll when nothing came and
/// nothing is due. Measured from the first message for `seconds` (at least
/// 0.5) or until `maxBytes` are acknowledged; the connection is reset afterwards. Nil, with
/// the reason printed, when not root, when ip or socat is missing, or when a step fails. The
/// TAP and the namespace are gone when it returns.
///
/// With `offload` the connection is offloaded to the engine once established (issue 6), and
/// the figures are the engine's; with `virtioNetHeader` the TAP carries the virtio-net header
/// and the engine sends TSO super-segments (and the Linux side keeps TSO, GSO and GRO on).
func tcpToLinuxOverTap(seconds: Double, maxBytes: UInt64 = 1 << 36, messageSize: Int = 64 * 1024,
                       offload: Bool = false, virtioNetHeader: Bool = false,
                       engineThread: Bool = false) -> TapTCPFigures? {
    let skipped = "TCP to Linux over TAP skipped"
    guard benchCanRun(skipped, root: "a TAP device, a network namespace", tools: ["ip", "socat", "ss"]) else { return nil }
    guard let namespace = BenchNamespace(name: "offload-bench-tcptap-\(getpid())") else {
        benchNote("\(skipped): could not create the network namespace")
        return nil
    }
    defer { namespace.delete() }
    // The TAP lives (and is closed, which deletes it) inside this call, before the namespace goes.
    return TapTCPSender.measure(in: namespace, seconds: max(0.5, seconds), maxBytes: maxBytes,
                                messageSize: messageSize, offload: offload, virtioNetHeader: virtioNetHeader,
                                engineThread: engineThread, skipped: skipped)
}

private enum TapTCPSender {
    static let port: UInt16 = 5401

    static func measure(in namespace: BenchNamespace, seconds: Double, maxBytes: UInt64, messageSize: Int,
                        offload: Bool, virtioNetHeader: Bool, engineThread: Bool, skipped: String) -> TapTCPFigures? {
        let address = IPv4Address(10, 77, 91, 2), linux = IPv4Address(10, 77, 91, 1)
        // swiftlint:disable:next force_try
        let cidr = try! IPv4CIDR(address: address, prefixLength: 24)
        var configuration = TCPStack.Configuration()
        configuration.tcp.maximumSegmentSize = 1460
        configuration.tcp.receiveBufferSize = 1 << 20
        configuration.seed = UInt64.random(in: .min ... .max)
        let clock = MonotonicClock()
        // As `offload send` runs: the host behind the engine, its frames through the exception
        // queue and the engine's transmit path.
        let endpoint: HostEndpoint<TapLink>
        let mode: TapLink.Mode = virtioNetHeader ? .virtioNetHeader : .plain
        var engine = Engine<TapLink>.Configuration()
        if virtioNetHeader {
            engine.bufferSize = TapLink.requiredReceiveSpace(mode) + Engine<TapLink>.headroom
            engine.bufferCount = 1024
        }
        do {
            endpoint = try HostEndpoint(
                host: .init(interface: cidr, hardwareAddress: MACAddress.local(UInt64(address.rawValue))),
                tcp: configuration, engine: engine, offload: offload, clock: clock) {
                try TapLink(name: "obtcp\(getpid() % 1_000_000)", mode: mode)
            }
        } catch {
            benchNote("\(skipped): \(error)")
            return nil
        }
        let host = endpoint.host
        let stack = endpoint.tcp
        let device = endpoint.engine.withPort(0) { $0.name }, ns = namespace.name
        for step in [
            "ip link set \(device) netns \(ns)",
            "ip -n \(ns) link set \(device) mtu 1500 up",
            "ip -n \(ns) addr add 10.77.91.1/24 dev \(device)",
        ] where !BenchShell.run(step).ok {
            benchNote("\(skipped): `\(step)` failed")
            return nil
        }
        // The sink: one connection, read in 1 MiB pieces into /dev/null; gone with the namespace.
        let limit = Int(seconds.rounded(.up)) + 15
        namespace.run("timeout -k 1 \(limit) socat -u -b 1048576 TCP-LISTEN:\(port),reuseaddr "
                      + "OPEN:/dev/null >/dev/null 2>&1 &")
        guard namespace.waitForListener(tcpPort: Int(port)) else {
            benchNote("\(skipped): the socat sink did not start in \(ns)")
            return nil
        }

        var idle = IdleSpin(spin: endpoint.spinBeforeSleeping)
        /// One round; returns whether it slept (after the endpoint's idle spin, as `run` does).
        func round() throws(LinkError) -> Bool {
            let now = clock.now
            let worked = endpoint.turn(now: now)
            guard idle.shouldSleep(worked: worked || endpoint.isBusy, now: now) else { return false }
            endpoint.sleep()
            return true
        }

        // ARP and the handshake, bounded.
        let socket: TCPSocket
        do {
            socket = try stack.connect(to: linux, port: port, now: clock.now)
            let deadline = clock.now + .seconds(3)
            while clock.now < deadline
                    && (stack.connection(socket)?.state == .synSent || offload && !stack.isOffloaded(socket)) {
                _ = try round()
            }
        } catch {
            benchNote("\(skipped): \(error)")
            return nil
        }
        guard let connection = stack.connection(socket), connection.state == .established else {
            benchNote("\(skipped): the handshake with Linux did not complete "
                  + "(state \(stack.connection(socket).map { "\($0.state)" } ?? "released"))")
            return nil
        }

        let sendLimit = connection.configuration.sendQueueLimit
        let ring = MessageRing(messageSize: messageSize, sendQueueLimit: sendLimit)
        var queued: UInt64 = 0, rounds: UInt64 = 0, sleeps: UInt64 = 0
        let before = host.counters
        let failuresBefore = host.counters.drops[.transmitFailed]
        let engineBefore = endpoint.engine.tcp.counters
        let engineDeliveredBefore = endpoint.engine.counters.deliveredToTCP
        // From here on the connection is the engine thread's: the loop reads the status.
        if engineThread {
            do { try endpoint.startEngineThread() } catch {
                benchNote("\(skipped): \(error)")
                return nil
            }
        }

        let cpuBefore = ThreadCPUTime.now
        let start = clock.now
        let end = start + .nanoseconds(Int64(seconds * 1e9))
        var now = start
        var acknowledged: UInt64 = 0
        do {
            while now < end && acknowledged < maxBytes && stack.status(socket)?.state == .established {
                // The stack refuses a message past its send queue's limit.
                while queued < maxBytes, case .queued = stack.send(ring.next(), on: socket) {
                    queued &+= UInt64(messageSize)
                }
                stack.takeCompletions(of: socket) { acknowledged &+= UInt64($0.buffer.count) }
                if try round() { sleeps &+= 1 }
                endpoint.ringEngine()
                rounds &+= 1
                now = clock.now
            }
        } catch {
            benchNote("\(skipped): \(error)")
            return nil
        }
        let elapsed = Double((now - start).nanoseconds) / 1e9
        let cpu = ThreadCPUTime.now - cpuBefore
        let engineReport = endpoint.stopEngineThread()
        let after = host.counters
        let engineAfter = endpoint.engine.tcp.counters
        let failures = offload ? engineAfter.transmitFailures - engineBefore.transmitFailures
            : after.drops[.transmitFailed] - failuresBefore
        if connection.state != .established {
            benchNote("TCP to Linux over TAP: the connection ended early (\(connection.state), "
                  + "\(connection.error.map { "\($0)" } ?? "no error"))")
        }
        let figures = TapTCPFigures(
            seconds: elapsed, bytesAcknowledged: acknowledged,
            segmentsSent: offload ? engineAfter.segmentsSent - engineBefore.segmentsSent
                : after.tcpSegmentsSent - before.tcpSegmentsSent,
            acksRead: offload ? endpoint.engine.counters.deliveredToTCP - engineDeliveredBefore
                : after.tcpSegmentsReceived - before.tcpSegmentsReceived,
            superSegments: engineAfter.superSegmentsSent - engineBefore.superSegmentsSent,
            retransmittedSegments: connection.counters.segmentsRetransmitted,
            retransmissionTimeouts: connection.counters.retransmissionTimeouts,
            transmitFailures: failures, hostDrops: after.totalDrops - before.totalDrops - failures,
            rounds: rounds, sleeps: engineReport.map { UInt64($0.sleeps) } ?? sleeps, cpu: cpu,
            engineThreadCPU: engineReport?.cpuSeconds)
        stack.abort(socket)
        endpoint.turn(now: clock.now)
        return figures
    }
}

// MARK: Bench rows

enum TCPBenchmarks {
    /// Ours for `seconds`, then the reference for as long, one after the other.
    static func memoryRows(seconds: Double) -> [BenchResult] {
        guard let ours = twoStacksOverMemoryLink(seconds: seconds) else { return [] }
        let linuxFigures = linuxLoopbackTCPFigures(seconds: seconds)
        return [BenchResult(name: "tcp host: memory link (MSS 1460, 1 core)", value: ours.gigabitsPerSecond,
                            unit: "Gbit/s", reference: linuxFigures.map { ("Linux lo", $0.gigabitsPerSecond) },
                            target: "- (the host's own TCP, issue 5)", detail: memoryDetail(ours, linuxFigures))]
    }

    /// What a memory-link row prints besides its figure.
    static func memoryDetail(_ ours: MemoryLinkTCPFigures, _ linuxFigures: LinuxLoopbackFigures?) -> String {
        let linux = linuxFigures?.gigabitsPerSecond
        let rounds = max(1, ours.rounds)
        let detail = "\(format(ours.seconds)) s, \(format(Double(ours.bytesDelivered) / 1e9)) GB read, "
            + "\(format(Double(ours.dataFrames) / ours.seconds / 1e6)) M data frames/s, "
            + "\(format(Double(ours.ackFrames) / ours.seconds / 1e3)) k ACKs/s, "
            + "\(format(Double(ours.dataFrames) / Double(rounds))) data frames/round, "
            + "retransmitted \(ours.retransmittedSegments), wire drops \(ours.wireQueueDrops), "
            + "host drops \(ours.hostDrops), "
            + (ours.pinnedCPU.map { "pinned to CPU \($0)" } ?? "not pinned")
            + ", thread CPU \(format(100 * ours.cpu.total / ours.seconds))% (sys \(format(100 * ours.cpu.system / ours.seconds))%), "
            + "\(format(ours.gigabitsPerCPUSecond)) Gbit/s per CPU-second, \(Int(ours.nanosecondsPerSegment)) ns CPU per data segment"
            + (linuxFigures.flatMap { l in l.gigabitsPerCPUSecond.map { perCPU in
                "; Linux: iperf3 client + server CPU \(format(l.cpuPercent ?? 0))%, \(format(perCPU)) Gbit/s per CPU-second, "
                    + "per CPU-second ratio \(format(ours.gigabitsPerCPUSecond / perCPU))" } } ?? "")
            + (linux == nil ? ", no reference (see above)" : "")
        return detail
    }

    /// The reference (the TAP's raw frame-write limit) for `seconds`, then ours for as long.
    static func tapRows(seconds: Double) -> [BenchResult] {
        let limit = tapRawFrameWrite(seconds: seconds)
        guard let ours = tcpToLinuxOverTap(seconds: seconds) else { return [] }
        var detail = "\(format(ours.seconds)) s, \(format(Double(ours.bytesAcknowledged) / 1e9)) GB acknowledged, "
            + "\(format(ours.segmentsPerSecond / 1e3)) k segments/s written"
        if let limit {
            detail += " (\(format(ours.segmentsPerSecond / limit.readPerSecond))x the limit's "
                + "\(format(limit.readPerSecond / 1e3)) k frames/s)"
        } else {
            detail += ", no reference (see above)"
        }
        detail += ", retransmitted \(ours.retransmittedSegments) (timeouts \(ours.retransmissionTimeouts)), "
            + "TAP write failures \(ours.transmitFailures), other host drops \(ours.hostDrops), "
            + "\(ours.sleeps) of \(ours.rounds) rounds slept in epoll, thread CPU "
            + "\(format(100 * ours.cpu.total / ours.seconds))% (user \(format(100 * ours.cpu.user / ours.seconds))%, "
            + "sys \(format(100 * ours.cpu.system / ours.seconds))%)"
        return [
            BenchResult(name: "tcp host: to Linux over TAP (MTU 1500)", value: ours.gigabitsPerSecond,
                        unit: "Gbit/s", reference: limit.map { ("TAP raw write", $0.gigabitsPerSecond) },
                        target: "- (the host's own TCP, issue 5)", detail: detail),
            BenchResult(name: "tcp host: TAP ACK frames read", value: ours.acksPerSecond / 1e3, unit: "k/s",
                        target: "- (report)",
                        detail: "\(format(Double(ours.segmentsSent) / Double(max(1, ours.acksRead)))) segments per ACK"),
        ]
    }
}

/// The data a TCP benchmark sends: one preallocated ring of messages, twice the send
/// queue's limit, so that a message is reused only long after the stack gave it back (the
/// limit bounds what is unacknowledged).
final class MessageRing {
    let messageSize: Int
    private let size: Int
    private let base: UnsafeMutableRawPointer
    private var offset = 0

    init(messageSize: Int, sendQueueLimit: Int) {
        self.messageSize = messageSize
        size = (2 * sendQueueLimit / messageSize + 1) * messageSize
        base = .allocate(byteCount: size, alignment: 64)
        fillPattern(base, count: size)
    }

    deinit { base.deallocate() }

    /// The next message, as memory the application keeps (`TxBuffer(unowned:)`).
    func next() -> TxBuffer {
        let buffer = TxBuffer(unowned: base + offset, count: messageSize)
        offset += messageSize
        if offset == size { offset = 0 }
        return buffer
    }
}
