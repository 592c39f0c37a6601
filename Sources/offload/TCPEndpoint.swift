import ArgumentParser
import COffloadShim
import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink
import OffloadTCP

#if canImport(Glibc)
import Glibc
#endif

/// The options `serve` and `send` share: the link, the host on it, and its TCP.
struct TCPEndpointOptions: ParsableArguments {
    @OptionGroup var host: HostOptions

    @Option(help: "Congestion control: cubic or newreno.")
    var congestion: CongestionAlgorithm = .cubic

    @Option(help: "Maximum segment lifetime in seconds; TIME_WAIT lasts twice this.")
    var msl: Double = 30

    @Option(help: "Receive buffer (and so the largest receive window) per connection, in bytes.")
    var receiveBuffer = 1 << 20

    @Flag(help: "Do not offer SACK.")
    var noSack = false

    @Flag(help: "Do not offer timestamps.")
    var noTimestamps = false

    @Flag(help: "Keep connections in the host's software instead of offloading them to the engine.")
    var noOffload = false

    @Option(help: "Threads: 2 runs the engine on a thread of its own, as an offload NIC runs beside the host's CPU (the first keeps the host's software and the application); 1 runs it between the host's turns.")
    var threads = 1

    @Option(help: ArgumentHelp("Microseconds the idle loop keeps polling before it sleeps until a frame arrives: a sender whose window is full gets its ACK sooner; less leaves the core to others.", valueName: "microseconds"))
    var spin: UInt32 = IdleSpin.defaultMicroseconds

    @Option(help: "Write every counter as Prometheus text to this file every second, and at the end (node_exporter's textfile collector).")
    var metricsFile: String?

    @Flag(help: "Print every counter at the end, as tables.")
    var counters = false

    @Flag(help: "Print every counter at the end as JSON, on one line, alone on standard output (the report goes to standard error).")
    var json = false

    /// A line of the report: on standard output, or with `--json` on standard error, so that
    /// the JSON is alone on standard output.
    func say(_ line: String) {
        if json { printToStandardError(line) } else { print(line) }
    }

    func validate() throws {
        guard threads == 1 || threads == 2 else { throw ValidationError("--threads is 1 or 2") }
        try OptionChecks.seconds(msl, "--msl", above: true)
        guard (1024...(1 << 30)).contains(receiveBuffer) else {
            throw ValidationError("--receive-buffer is 1024 bytes to 1 GiB")
        }
    }

    var stackConfiguration: TCPStack.Configuration {
        var c = TCPStack.Configuration()
        c.tcp.congestionControl = congestion
        c.tcp.maximumSegmentLifetime = .nanoseconds(Int64(msl * 1e9))
        c.tcp.receiveBufferSize = receiveBuffer
        c.tcp.selectiveAcknowledgments = !noSack
        c.tcp.timestamps = !noTimestamps
        c.seed = UInt64.random(in: .min ... .max) // the secrets of sequence numbers and cookies
        return c
    }
}

extension CongestionAlgorithm: ExpressibleByArgument {}

/// What runs on top of the stack: called after every burst with the time; says when it is done.
protocol TCPApplication: AnyObject {
    func turn(_ stack: TCPStack, now: Instant)
    var isDone: Bool { get }
}

/// Runs a host with a TCP behind the engine on a link until the application is done (or the
/// duration ends, or a signal): the engine polls the link, the host's frames cross to the
/// software through the exception queue and its answers leave through the engine's transmit
/// path (`HostEndpoint`); the application gets a turn after each of the endpoint's.
struct TCPEndpoint {
    let options: TCPEndpointOptions
    let name: String

    /// `banner` is printed once the link is open (a link that fails to open prints only the error).
    func run(_ application: TCPApplication, banner: String) throws -> TCPStack {
        guard offload_stop_signals_install() == 0 else { throw RunError(message: "\(name): cannot install signal handlers") }
        let clock = MonotonicClock()
        let epochOffset = offload_realtime_ns() - offload_monotonic_ns()
        let writer = try options.host.pcap.map { try PcapFileWriter(path: $0) }
        defer {
            if let writer, let pcap = options.host.pcap {
                try? writer.flush()
                options.say("capture: \(writer.framesWritten) frames written to \(pcap)")
            }
        }
        do {
            switch options.host.link {
            case .tap(let device):
                let hardware = options.host.mac ?? MACAddress.local(UInt64(options.host.address.address.rawValue))
                let mode: TapLink.Mode = options.host.virtioNetHeader ? .virtioNetHeader : .plain
                if let writer {
                    return try run(hardware: hardware, clock: clock, banner: banner, application,
                                   port: CaptureLink(try TapLink(name: device, mode: mode), writer: writer, clock: clock,
                                                     epochOffset: epochOffset))
                }
                return try run(hardware: hardware, clock: clock, banner: banner, application,
                               port: try TapLink(name: device, mode: mode))
            case .packetSocket(let device):
                guard let hardware = options.host.mac ?? PacketSocketLink.hardwareAddress(of: device) else {
                    throw RunError(message: "\(name): \(device) has no MAC address; give one with --mac")
                }
                if let writer {
                    return try run(hardware: hardware, clock: clock, banner: banner, application,
                                   port: CaptureLink(try PacketSocketLink(interface: device), writer: writer,
                                                     clock: clock, epochOffset: epochOffset))
                }
                return try run(hardware: hardware, clock: clock, banner: banner, application,
                               port: try PacketSocketLink(interface: device))
            }
        } catch let error as LinkError {
            throw RunError(message: "\(name): \(error)")
        }
    }

    private func run<Port: Link & ~Copyable>(hardware: MACAddress, clock: MonotonicClock, banner: String,
                                             _ application: TCPApplication, port: consuming Port) throws -> TCPStack {
        var engineConfiguration = Engine<Port>.Configuration().randomizingSecrets()
        // Buffers for the largest frame the link gives: super-frames (TSO or GSO from the
        // kernel, on a virtio-net TAP or a packet socket) need 64 KiB ones, fewer of them.
        // A packet socket used to get 2 KiB ones, and refused every receive.
        let frameSize = port.capabilities.maxFrameSize
        if frameSize + Engine<Port>.headroom > engineConfiguration.bufferSize {
            engineConfiguration.bufferSize = frameSize + Engine<Port>.headroom
            engineConfiguration.bufferCount = 1024
        }
        var held: Port? = consume port
        let endpoint = try HostEndpoint(
            host: .init(interface: options.host.address, hardwareAddress: hardware, gateway: options.host.gateway),
            tcp: options.stackConfiguration, engine: engineConfiguration, offload: !options.noOffload, clock: clock,
            makePort: { held.take()! })
        endpoint.spinBeforeSleeping = .microseconds(Int64(options.spin))
        if options.threads == 2 { try endpoint.startEngineThread() }
        options.say(banner)
        let deadline = options.host.duration.map { clock.now + .nanoseconds(Int64($0 * 1e9)) }
        let metrics = options.metricsFile.map { MetricsFile(path: $0) }
        var nextMetrics = clock.now
        endpoint.run(shouldStop: {
            offload_stop_requested() != 0 || application.isDone || deadline.map { clock.now >= $0 } ?? false
        }) { stack, now in
            application.turn(stack, now: now)
            if let metrics, now >= nextMetrics {
                metrics.write(endpoint.metrics())
                nextMetrics = now + .seconds(1)
            }
        }
        if let report = endpoint.stopEngineThread() {
            options.say("engine thread: slept \(report.sleeps) times, CPU \(String(format: "%.3f", report.cpuSeconds)) s")
        }
        let snapshot = endpoint.metrics()
        metrics?.write(snapshot)
        options.say(Self.offloadReport(endpoint))
        if options.counters { options.say(snapshot.table) }
        if options.json { print(snapshot.json.replacingOccurrences(of: "\n", with: "")) }
        let host = endpoint.host.counters
        let engine = endpoint.engine.counters
        let software = endpoint.slowPath.dropped.filter { $0.value > 0 }
        if !options.counters && (host.totalDrops > 0 || engine.drops.total > 0 || engine.receiveErrors > 0
                                 || !software.isEmpty) {
            options.say(host.table)
            options.say(engine.table)
            for (reason, count) in software.sorted(by: { $0.key < $1.key }) { options.say("software dropped: \(reason) \(count)") }
        }
        return endpoint.tcp
    }
}

extension TCPEndpoint {
    /// Who carried the data: the engine's TCP (offloaded connections) or the host's software.
    static func offloadReport<P: Link & ~Copyable>(_ endpoint: HostEndpoint<P>) -> String {
        let t = endpoint.engine.tcp.counters
        let uploads = t.uploads.rows("").filter { $0.1 > 0 }.map { "\($0.0) \($0.1)" }.joined(separator: ", ")
        return "offload: \(t.offloaded) connections offloaded, \(t.uploads.total) uploaded"
            + (uploads.isEmpty ? "" : " (\(uploads))")
            + "; the engine received \(t.payloadBytesReceived) payload bytes in \(endpoint.engine.counters.deliveredToTCP) segments "
            + "and sent \(t.payloadBytesSent) in \(t.segmentsSent) (\(t.superSegmentsSent) of them TSO super-segments); "
            + "the host copied \(endpoint.policy.payloadBytesCopied) "
            + "payload bytes"
    }
}

/// Counters of finished connections, summed for the report.
struct TCPTotals {
    var connections = 0
    var failed: [String] = []
    var bytesSent: UInt64 = 0
    var bytesReceived: UInt64 = 0
    var segmentsRetransmitted: UInt64 = 0
    var timeouts: UInt64 = 0
    var fastRetransmits: UInt64 = 0
    var completions = 0
    var completionRanges = 0

    /// Adds a connection's counters; one still running (a run cut short) adds its bytes,
    /// not itself.
    mutating func add(_ connection: TCPConnection, finished: Bool = true) {
        if finished { connections += 1 }
        if let e = connection.error { failed.append("\(connection.id): \(e)") }
        let c = connection.counters
        bytesSent += c.bytesSent - c.bytesRetransmitted
        bytesReceived += c.bytesReceived
        segmentsRetransmitted += c.segmentsRetransmitted
        timeouts += c.retransmissionTimeouts
        fastRetransmits += c.fastRetransmits
    }
}

/// Gigabits per second, for reports.
func gigabits(_ bytes: UInt64, over duration: Duration) -> Double {
    let seconds = Double(duration.nanoseconds) / 1e9
    return seconds > 0 ? Double(bytes) * 8 / seconds / 1e9 : 0
}

/// Fills memory with the byte pattern the commands and benchmarks send (any fixed pattern
/// would do; this one is not periodic at small strides, so a misplaced segment shows).
func fillPattern(_ base: UnsafeMutableRawPointer, count: Int) {
    for i in 0..<count { base.storeBytes(of: UInt8(truncatingIfNeeded: i &* 31 &+ i >> 10), toByteOffset: i, as: UInt8.self) }
}
