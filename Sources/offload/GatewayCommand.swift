import ArgumentParser
import COffloadShim
import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink

struct GatewayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Route IPv4 between ports, with source NAT on the outside port, until interrupted.",
        discussion: """
            Each port is a TAP device this command creates (move its kernel side into a namespace \
            and give it an address there) or an existing interface (afpacket:IFNAME), with the \
            gateway's own address on that link. New flows go through the software (routes, NAT, \
            ARP, ICMP errors), which installs an entry; the engine forwards the rest. SIGINT or \
            SIGTERM stops it and prints the final counters.

            Example: offload gateway --port tap:gw-in=10.1.0.1/24 --port tap:gw-out=10.2.0.1/24 --nat-outside gw-out
            """)

    @Option(name: .customLong("port"), help: ArgumentHelp(
        "A port and the gateway's address on it: tap:NAME=CIDR or afpacket:IFNAME=CIDR (repeat for each port). A TAP port takes ,mtu=N too (68 to 65535; 1500 by default): the TAP's MTU, set when it is made. A packet socket uses its interface's.",
        valueName: "link=cidr"))
    var ports: [PortSpec]

    @Option(name: .customLong("route"), help: ArgumentHelp(
        "A route beyond the ports' own subnets: PREFIX=NEXTHOP, the next hop on one port's subnet (repeatable).",
        valueName: "prefix=nexthop"))
    var routes: [RouteSpec] = []

    @Option(help: "The port that faces the outside, by device name: flows leaving by it are source-NATed to its address.")
    var natOutside: String?

    @Option(name: .customLong("forward"), help: ArgumentHelp(
        "A port forward through the NAT: PROTO:PORT=ADDRESS:PORT (tcp or udp) sends what comes to the outside address at the first port to the inside address and port (repeatable; needs --nat-outside).",
        valueName: "proto:port=address:port"))
    var forwards: [ForwardSpec] = []

    @Flag(help: "Audit mode: every packet the software re-inserts is checked (engine marks, compatibility test).")
    var audit = false

    @Flag(help: "Turn the order guard off (packets of a new flow may overtake each other; for demonstration).")
    var noOrderGuard = false

    @Option(help: "Who finishes a new flow's packets: partial (the engine completes them) or complete (the software).")
    var processing: ProcessingSpec = .partial

    @Option(help: ArgumentHelp("A model knob: microseconds the software spends deciding each new flow (a slower host; shows what the order guard prevents).", valueName: "microseconds"))
    var decisionDelay: UInt32 = 0

    @Option(help: "Threads: 2 runs the software on a thread of its own beside the engine's; 1 runs it between the engine's polls. (default: 2 where the process may run on more than 2 CPUs, else 1)")
    var threads: Int?

    @Option(help: ArgumentHelp("Microseconds the idle engine and software threads keep polling before they sleep until a frame arrives or the other wakes them: more answers sooner, less leaves the cores to the hosts around it.", valueName: "microseconds"))
    var spin: UInt32 = IdleSpin.defaultMicroseconds

    @Option(help: ArgumentHelp("The nice value of the gateway's threads, -20 to 19 (default -10, as Open vSwitch runs its forwarding daemon): a woken thread that waits behind the hosts for a core makes the packets wait. Without CAP_SYS_NICE the default is skipped with a note; a value given here is an error.", valueName: "nice"))
    var nice: Int32?

    /// The gateway's threads' nice value unless `--nice` says otherwise.
    static let defaultNice: Int32 = -10

    @Option(help: "Connection table capacity (entries).")
    var tableSize = 65_536

    @Option(help: ArgumentHelp("Seconds an established TCP flow may be idle before its entry goes, and 90 s later its NAT mapping (RFC 5382 asks for at least 7440; a longer timeout keeps the table fuller).", valueName: "seconds"))
    var tcpIdle: Double = 300

    @Option(help: ArgumentHelp("Seconds a UDP flow may be idle before its entry goes, and 90 s later its NAT mapping.", valueName: "seconds"))
    var udpIdle: Double = 30

    @Option(help: "Write every frame received and sent, on every port, to this pcap file.")
    var pcap: String?

    @Option(help: "Print a line of statistics every this many seconds (0: never).")
    var stats: Double = 5

    @Option(help: "Stop after this many seconds (default: run until SIGINT or SIGTERM).")
    var duration: Double?

    @Flag(help: "Print the final counters as JSON instead of tables, alone on standard output (the other lines go to standard error).")
    var json = false

    @Option(help: "Write the counters as Prometheus text to this file every second (node_exporter's textfile collector): the engine's and the ports' while running, all of them at the end.")
    var metricsFile: String?

    /// A line about the run: on standard output, or with `--json` on standard error, so
    /// that standard output holds the JSON alone.
    private func say(_ line: String) {
        if json { printToStandardError(line) } else { print(line) }
    }

    func validate() throws {
        guard !ports.isEmpty else { throw ValidationError("give at least one --port") }
        try OptionChecks.seconds(duration, "--duration")
        try OptionChecks.seconds(stats, "--stats")
        guard (1...(1 << 30)).contains(tableSize) else { throw ValidationError("--table-size is 1 to 1073741824 entries") }
        if let threads, threads != 1 && threads != 2 { throw ValidationError("--threads is 1 or 2") }
        if let nice, !ThreadNice.range.contains(nice) { throw ValidationError("--nice is -20 to 19") }
        // Entries idle for up to 2^32 table ticks (about 52 days) can be told apart.
        for (name, seconds) in [("--tcp-idle", tcpIdle), ("--udp-idle", udpIdle)] where !(seconds > 0 && seconds <= 4_000_000) {
            throw ValidationError("\(name) is a number of seconds above 0 and at most 4000000")
        }
        let names = ports.map(\.link.deviceName)
        guard Set(names).count == names.count else { throw ValidationError("a device is named by two --port options") }
        if let natOutside, !names.contains(natOutside) {
            throw ValidationError("--nat-outside \(natOutside) is not one of the ports (\(names.joined(separator: ", ")))")
        }
        for port in ports {
            guard let mtu = port.mtu else { continue }
            guard case .tap = port.link else {
                throw ValidationError("\(port.link): a packet socket uses its interface's MTU (set it with ip link)")
            }
            guard (68...65_535).contains(mtu) else { throw ValidationError("\(port.link): an MTU is 68 to 65535") }
        }
        for route in routes where !ports.contains(where: { $0.address.contains(route.nextHop) }) {
            throw ValidationError("the next hop \(route.nextHop) of route \(route) is on no port's subnet")
        }
        if !forwards.isEmpty, natOutside == nil { throw ValidationError("--forward needs --nat-outside") }
        let outsidePorts = forwards.map { "\($0.protocolName):\($0.outsidePort)" }
        guard Set(outsidePorts).count == outsidePorts.count else {
            throw ValidationError("an outside port is forwarded by two --forward options")
        }
    }

    func run() throws {
        guard offload_stop_signals_install() == 0 else { throw RunError(message: "offload gateway: cannot install signal handlers") }
        let clock = MonotonicClock()
        do {
            if let pcap {
                let writer = try PcapFileWriter(path: pcap)
                let epochOffset = offload_realtime_ns() - offload_monotonic_ns()
                let engine = try Engine(configuration: configuration(), portCount: ports.count, clock: clock) { i in
                    CaptureLink(try ports[i].link.open(superFrames: receivesSuperFrames, tapMTU: ports[i].mtu), writer: writer, clock: clock,
                                epochOffset: epochOffset)
                }
                try run(engine, clock) { port in
                    port.inner.updateKernelStatistics()
                    return port.inner.counters
                }
                try writer.flush()
                say("capture: \(writer.framesWritten) frames written to \(pcap)")
            } else {
                let engine = try Engine(configuration: configuration(), portCount: ports.count, clock: clock) { i in
                    try ports[i].link.open(superFrames: receivesSuperFrames, tapMTU: ports[i].mtu)
                }
                try run(engine, clock) { port in
                    port.updateKernelStatistics()
                    return port.counters
                }
            }
        } catch let error as LinkError {
            throw RunError(message: "offload gateway: \(error)")
        }
    }

    private func configuration<Port: Link & ~Copyable>() -> Engine<Port>.Configuration {
        var config = Engine<Port>.Configuration()
        config.audit = AuditSwitch(audit)
        config.orderGuard = !noOrderGuard
        config.tableCapacity = tableSize
        config.idleTimeouts = IdleTimeouts(tcp: .milliseconds(Int64(tcpIdle * 1000)), udp: .milliseconds(Int64(udpIdle * 1000)))
        // The NAT frees a mapping once the engine announces that its last entry went.
        config.announcesTranslations = natOutside != nil
        // A packet socket takes GSO super-frames (64 KiB); a plain TAP, Ethernet frames.
        config.bufferSize = (receivesSuperFrames ? 65536 + 14 : TapLink.maxFrameSize(.plain)) + 64
        config.bufferCount = receivesSuperFrames ? 1024 : 4096
        return config.randomizingSecrets()
    }

    /// Whether a port receives TCP super-frames (a packet socket, with the virtio-net header):
    /// then every port must pass them on, and TAPs take the header too. A plain TAP cannot,
    /// and a bulk TCP stream from a packet socket to a TAP used to leave as failed sends.
    /// Whether a port may receive frames a plain TAP cannot send: a packet socket's TCP
    /// super-frames, or packets larger than 1500 bytes from a TAP with a larger MTU.
    private var receivesSuperFrames: Bool {
        ports.contains { if case .packetSocket = $0.link { true } else { ($0.mtu ?? 0) > 1500 } }
    }

    private func run<Port: Link & ~Copyable>(
        _ engine: Engine<Port>, _ clock: MonotonicClock, linkCounters: (inout Port) -> SystemLinkCounters
    ) throws {
        var gatewayPorts: [GatewayPolicy.Port] = []
        for (i, spec) in ports.enumerated() {
            let mac: MACAddress
            switch spec.link {
            case .tap: mac = .local(UInt64(spec.address.address.rawValue))
            case .packetSocket(let name):
                guard let own = engine.withPort(i, { $0.capabilities.address }) else {
                    throw RunError(message: "offload gateway: \(name) has no MAC address")
                }
                mac = own
            }
            gatewayPorts.append(.init(address: spec.address, hardwareAddress: mac))
        }
        var table = RouteTable()
        for (i, spec) in ports.enumerated() {
            let subnet = try IPv4CIDR(address: spec.address.network, prefixLength: spec.address.prefixLength)
            table.add(.init(prefix: subnet, port: UInt16(i)))
        }
        for route in routes {
            let port = ports.firstIndex { $0.address.contains(route.nextHop) }!
            table.add(.init(prefix: route.prefix, port: UInt16(port), nextHop: route.nextHop))
        }
        let outside = natOutside.flatMap { name in ports.firstIndex { $0.link.deviceName == name } }.map(UInt16.init)
        let policy = GatewayPolicy(ports: gatewayPorts, routes: table, outsidePort: outside, clock: clock)
        for forward in forwards {
            do throws(GatewayPolicy.PortForwardError) {
                try policy.forwardPort(protocol: forward.protocolNumber, outsidePort: forward.outsidePort,
                                       to: forward.address, port: forward.insidePort)
            } catch {
                throw RunError(message: "offload gateway: --forward \(forward): \(error)")
            }
        }
        let slowPath = SlowPath(exceptions: engine.exceptions, reinsertion: engine.reinsertion,
                                processing: processing.value, policy: policy, cacheSeed: .random(in: .min ... .max))
        slowPath.decisionDelayMicroseconds = decisionDelay
        // Before the software's thread starts: it takes this thread's value.
        do throws(ThreadNice.Refused) {
            try ThreadNice.set(nice ?? Self.defaultNice)
        } catch {
            guard nice == nil else { throw RunError(message: "offload gateway: --nice: \(error)") }
            printToStandardError("offload gateway: \(error); the threads run at nice \(ThreadNice.current)")
        }
        let cpus = SoftwareThread.availableCPUs
        let softwareThread = threads.map { $0 == 2 } ?? SoftwareThread.wantedByDefault(cpus: cpus ?? 1)
        let loop = try EngineLoop(engine: engine, slowPath: slowPath, softwareThread: softwareThread)
        loop.spinBeforeSleeping = .microseconds(Int64(spin))

        for (i, spec) in ports.enumerated() {
            say("port \(i): \(spec.link) \(spec.address) (\(gatewayPorts[i].hardwareAddress))"
                  + (outside == UInt16(i) ? ", NAT outside" : ""))
        }
        for route in table.routes { say("route \(route)") }
        for forward in forwards { say("forward \(forward)") }
        say("order guard \(noOrderGuard ? "off" : "on"), audit \(audit ? "on" : "off"), processing \(processing)"
              + (decisionDelay > 0 ? ", \(decisionDelay) µs per new flow's decision" : "")
              + (softwareThread ? ", 2 threads" : ", 1 thread")
              + (threads == nil ? " (\(cpus.map { $0 == 1 ? "1 CPU" : "\($0) CPUs" } ?? "CPUs unknown"))" : "")
              + " at nice \(ThreadNice.current)")
        func seconds(_ d: Double) -> String { d == d.rounded() ? String(Int(d)) : String(d) }
        say("idle timeouts: TCP \(seconds(tcpIdle)) s, UDP \(seconds(udpIdle)) s")

        let start = clock.now
        let deadline = duration.map { start + .nanoseconds(Int64($0 * 1e9)) }
        var last = engine.counters
        var lastTime = start
        let metrics = metricsFile.map { MetricsFile(path: $0) }
        // The engine's thread runs this: the software's counters are its own thread's, so
        // the running file holds the engine's and the ports' (the last one holds all).
        func engineSections() -> [MetricsSnapshot.Section] {
            [.engine(engine)]
                + ports.indices.map { i in
                    .init("port \(i) \(ports[i].link.deviceName)", engine.withPort(i) { linkCounters(&$0) }.rows)
                }
        }
        // A tick a second with a metrics file, else one per statistics line.
        let tick = metrics != nil ? min(1, stats > 0 ? stats : 1) : (stats > 0 ? stats : 3600)
        loop.run(clock: clock, shouldStop: {
            offload_stop_requested() != 0 || deadline.map { clock.now >= $0 } ?? false
        }, every: .nanoseconds(Int64(tick * 1e9))) { now in
            metrics?.write(MetricsSnapshot(engineSections()))
            guard stats > 0, Double((now - lastTime).nanoseconds) / 1e9 >= stats * 0.999 else { return }
            let c = engine.counters
            let seconds = Double((now - lastTime).nanoseconds) / 1e9
            let pps = Int(Double(c.received - last.received) / seconds)
            let elapsed = Int((now - start).nanoseconds / 1_000_000_000)
            say("\(elapsed)s: \(pps) packets/s in; fast path \(c.fastPath), software \(c.totalToSoftware), "
                  + "dropped \(c.totalDrops), entries \(engine.table.count)")
            last = c
            lastTime = now
        }
        // Let the software's last messages reach the engine so every buffer comes back.
        for _ in 0..<8 { engine.poll(now: clock.now) }

        let software = MetricsSnapshot.Section(
            "software", [("packets handled", slowPath.processed), ("answered", slowPath.answered),
                         ("ICMP errors sent", slowPath.icmpErrorsSent), ("frames originated", slowPath.originated),
                         ("packets fragmented", slowPath.fragmented), ("held", UInt64(slowPath.heldCount))]
                + slowPath.dropped.sorted { $0.key < $1.key }.map { ("dropped: \($0.key)", $0.value) }
                + policy.counters.rows + [("NAT mappings", UInt64(policy.nat?.count ?? 0)),
                                          ("NAT mappings released", policy.nat?.released ?? 0)],
            gauges: ["held", "NAT mappings"])
        let audit = MetricsSnapshot.Section("audit stage", [("tested", engine.reinsertion.tested)]
                                                + engine.reinsertion.failures.rows("failed: "))
        var sections = engineSections()
        sections.insert(contentsOf: [software, audit], at: 1)
        let snapshot = MetricsSnapshot(sections)
        metrics?.write(snapshot)
        print(json ? snapshot.json : "\n" + snapshot.table)
    }
}

/// One `--port`: a link and the gateway's address on it.
struct PortSpec: ExpressibleByArgument {
    let link: LinkSpec
    let address: IPv4CIDR
    /// A TAP port's MTU (`,mtu=N`), set on the device when it is made.
    let mtu: Int?

    init?(argument: String) {
        let parts = argument.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2, let link = LinkSpec(argument: parts[0]) else { return nil }
        let fields = parts[1].split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let address = try? IPv4CIDR(parsing: fields[0]), fields.count <= 2 else { return nil }
        if fields.count == 2 {
            guard fields[1].hasPrefix("mtu="), let mtu = Int(fields[1].dropFirst(4)) else { return nil }
            self.mtu = mtu
        } else {
            mtu = nil
        }
        self.link = link
        self.address = address
    }

    static var defaultValueDescription: String { "tap:NAME=CIDR[,mtu=N] | afpacket:IFNAME=CIDR" }
}

/// One `--route`: a prefix and the next hop toward it.
struct RouteSpec: ExpressibleByArgument, CustomStringConvertible {
    let prefix: IPv4CIDR
    let nextHop: IPv4Address

    init?(argument: String) {
        let parts = argument.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2, let prefix = try? IPv4CIDR(parsing: parts[0]),
              let hop = try? IPv4Address(parsing: parts[1]) else { return nil }
        self.prefix = prefix
        self.nextHop = hop
    }

    var description: String { "\(prefix)=\(nextHop)" }
}

/// `--forward tcp:8080=10.1.0.2:80`: a port forward through the NAT.
struct ForwardSpec: ExpressibleByArgument, CustomStringConvertible {
    let protocolName: String
    let outsidePort: UInt16
    let address: IPv4Address
    let insidePort: UInt16

    init?(argument: String) {
        let sides = argument.split(separator: "=", maxSplits: 1).map(String.init)
        guard sides.count == 2 else { return nil }
        let outside = sides[0].split(separator: ":").map(String.init)
        let inside = sides[1].split(separator: ":").map(String.init)
        guard outside.count == 2, ["tcp", "udp"].contains(outside[0]), let from = UInt16(outside[1]), from > 0,
              inside.count == 2, let address = try? IPv4Address(parsing: inside[0]), let to = UInt16(inside[1]), to > 0
        else { return nil }
        protocolName = outside[0]
        outsidePort = from
        self.address = address
        insidePort = to
    }

    var protocolNumber: UInt8 { protocolName == "tcp" ? 6 : 17 }
    var description: String { "\(protocolName):\(outsidePort)=\(address):\(insidePort)" }
}

enum ProcessingSpec: String, ExpressibleByArgument, CustomStringConvertible {
    case partial, complete

    var value: SlowPath.Processing { self == .partial ? .partial : .complete }
    var description: String { rawValue }
}
