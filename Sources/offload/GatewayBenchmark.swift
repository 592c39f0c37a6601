import Foundation
import COffloadShim
import OffloadHost

/// `offload gateway` between two Linux namespaces against the Linux kernel routing between
/// the same namespaces, measured in the same run (SPEC "Measurements"). A client and a
/// server namespace each hold one end of a veth pair whose other end is in a middle
/// namespace: the kernel routes and masquerades there, then (addresses removed, forwarding
/// off) our gateway runs there on packet sockets on the same two veths, source-NATing too.
/// Needs root, iperf3, ethtool, nft and python3.
struct GatewayBenchmark {
    let seconds: Int
    let client: String, server: String, middle: String
    let clientVeth: String, serverVeth: String, clientSide: String, serverSide: String
    static let clientAddress = "10.77.41.2", serverAddress = "10.77.42.2"

    init(seconds: Double) {
        self.seconds = max(2, Int(seconds.rounded()))
        let tag = "\(getpid() % 100_000)"
        client = "obc-\(tag)"; server = "obs-\(tag)"; middle = "obg-\(tag)"
        clientVeth = "obc\(tag)"; clientSide = "obC\(tag)"
        serverVeth = "obs\(tag)"; serverSide = "obS\(tag)"
    }

    func run() -> [BenchResult] {
        guard geteuid() == 0 else {
            benchNote("gateway benchmark skipped: needs root (network namespaces, veth pairs, packet sockets)")
            return []
        }
        for tool in ["iperf3", "ethtool", "nft", "python3"] where !sh("command -v \(tool)").ok {
            benchNote("gateway benchmark skipped: \(tool) is not installed")
            return []
        }
        setUp()
        defer { tearDown() }

        progress("the kernel routing")
        kernelRouting(true)
        var kernel = measure()
        kernelRouting(false)

        // Everything with the gateway's default thread count here, the figures with targets
        // with the other one too: the software on a thread of its own, or between the
        // engine's polls (no wake-ups across threads, one thread fewer on a machine whose
        // cores the endpoints share).
        let cpus = SoftwareThread.availableCPUs ?? 1
        let threads = SoftwareThread.wantedByDefault(cpus: cpus) ? 2 : 1
        let otherThreads = 3 - threads
        progress("offload gateway")
        guard let gateway = startGateway(threads: threads) else { return [] }
        var ours = measure()
        stop(gateway)
        guard let gatewayOther = startGateway(threads: otherThreads) else { return [] }
        var other = Figures()
        measureTargets(into: &other)
        stop(gatewayOther)

        // The machine is shared and its load drifts within a run: the TCP stream and the
        // connection rate, the figures with targets, are measured twice more, alternating
        // between the kernel and our gateway, and each side keeps its best of three.
        for round in 2...Self.rounds {
            progress("round \(round) of \(Self.rounds): the kernel and both gateways again", figures: "TCP, connections")
            kernelRouting(true)
            measureTargets(into: &kernel)
            kernelRouting(false)
            guard let gateway = startGateway(threads: threads) else { return [] }
            measureTargets(into: &ours)
            stop(gateway)
            guard let gatewayOther = startGateway(threads: otherThreads) else { return [] }
            measureTargets(into: &other)
            stop(gatewayOther)
        }

        func row(_ name: String, _ figure: (Figures) -> Double, _ unit: String, _ target: String,
                 detail: String? = nil) -> BenchResult {
            BenchResult(name: name, value: figure(ours), unit: unit, reference: ("kernel", figure(kernel)), target: target,
                        detail: detail)
        }
        let best = "best of \(Self.rounds), alternating"
        let named = threads == 1 ? "1 thread" : "2 threads", otherNamed = otherThreads == 1 ? "1 thread" : "2 threads"
        let asDefault = "\(best); \(named), the default on \(cpus == 1 ? "1 CPU" : "\(cpus) CPUs")"
        return [
            row("gateway TCP, offloads on", \.tcpOffloadsOn, "Gbit/s", ">= 0.75x kernel", detail: asDefault),
            row("gateway TCP, offloads off", \.tcpOffloadsOff, "Gbit/s", "-"),
            BenchResult(name: "gateway UDP -P 8 -l 1400 loss", value: ours.udp.lossPercent, unit: "%",
                        reference: ("kernel", kernel.udp.lossPercent), target: "-",
                        detail: "ours: \(ours.udp.whereLost); kernel's: \(kernel.udp.whereLost)"),
            row("gateway UDP -P 8 out of order", { Double($0.udp.outOfOrder) }, "datagrams", "0"),
            BenchResult(name: "gateway 64 B UDP, < 1% loss", value: ours.smallPackets.rate / 1e3, unit: "kpps",
                        reference: ("kernel", kernel.smallPackets.rate / 1e3), target: "-",
                        detail: "the next step up lost: ours \(ours.smallPackets.nextStep), kernel's \(kernel.smallPackets.nextStep)"),
            row("gateway new TCP connections", { $0.connectionRate / 1e3 }, "k/s", ">= 0.9x kernel", detail: asDefault),
            BenchResult(name: "gateway TCP, \(otherNamed)", value: other.tcpOffloadsOn, unit: "Gbit/s",
                        reference: ("kernel", kernel.tcpOffloadsOn), target: ">= 0.75x kernel", detail: best),
            BenchResult(name: "gateway connections, \(otherNamed)", value: other.connectionRate / 1e3, unit: "k/s",
                        reference: ("kernel", kernel.connectionRate / 1e3), target: ">= 0.9x kernel", detail: best),
        ]
    }

    private static let rounds = 3

    /// Everything measured through whatever forwards between the namespaces now.
    struct Figures {
        var tcpOffloadsOn = 0.0, tcpOffloadsOff = 0.0
        var udp = UDPFigures()
        var smallPackets = SmallPackets()
        var connectionRate = 0.0
    }

    /// The 64-byte rate, and what the first offered rate that lost 1% or more lost.
    struct SmallPackets {
        var rate = 0.0
        var nextStep = "none up to 800 kpps"
    }

    private func measure() -> Figures {
        Figures(tcpOffloadsOn: tcpThroughput(), tcpOffloadsOff: withEndpointOffloadsOff { tcpThroughput() },
                udp: udpStreams(), smallPackets: smallPacketRate(), connectionRate: connectionRate())
    }

    /// The TCP stream (offloads on) and the connection rate once more, each kept at its best.
    private func measureTargets(into figures: inout Figures) {
        figures.tcpOffloadsOn = max(figures.tcpOffloadsOn, tcpThroughput())
        figures.connectionRate = max(figures.connectionRate, connectionRate())
    }

    private func progress(_ what: String,
                          figures: String = "TCP with offloads on and off, UDP streams, 64 B rate, connections") {
        benchNote("gateway benchmark: measuring \(what) (\(figures))")
        fflush(nil)
    }

    // MARK: Set-up

    private func setUp() {
        for ns in [client, server, middle] {
            sh("ip netns add \(ns)")
            sh("ip netns exec \(ns) sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
            sh("ip -n \(ns) link set lo up")
        }
        sh("ip link add \(clientVeth) netns \(client) type veth peer name \(clientSide) netns \(middle)")
        sh("ip link add \(serverVeth) netns \(server) type veth peer name \(serverSide) netns \(middle)")
        sh("ip -n \(client) addr add \(Self.clientAddress)/24 dev \(clientVeth)")
        sh("ip -n \(client) link set \(clientVeth) up")
        sh("ip -n \(client) route add default via 10.77.41.1")
        sh("ip -n \(server) addr add \(Self.serverAddress)/24 dev \(serverVeth)")
        sh("ip -n \(server) link set \(serverVeth) up")
        sh("ip -n \(middle) link set \(clientSide) up")
        sh("ip -n \(middle) link set \(serverSide) up")
        sh("ip netns exec \(server) iperf3 -s -D -p 5201 >/dev/null 2>&1")
        sh("ip netns exec \(server) python3 -c '\(Self.acceptLoop)' >/dev/null 2>&1 &")
    }

    private func tearDown() {
        for ns in [client, server, middle] { sh("ip netns pids \(ns) | xargs -r kill -9; ip netns del \(ns)") }
    }

    /// The kernel routes (and masquerades, as our gateway NATs) in the middle namespace, or not.
    private func kernelRouting(_ on: Bool) {
        let m = "ip netns exec \(middle)"
        if on {
            sh("ip -n \(middle) addr add 10.77.41.1/24 dev \(clientSide)")
            sh("ip -n \(middle) addr add 10.77.42.1/24 dev \(serverSide)")
            sh("\(m) sysctl -qw net.ipv4.ip_forward=1")
            sh("\(m) nft add table ip nat")
            sh("\(m) nft 'add chain ip nat post { type nat hook postrouting priority 100; }'")
            sh("\(m) nft add rule ip nat post oifname \(serverSide) masquerade")
        } else {
            sh("\(m) nft delete table ip nat")
            sh("\(m) sysctl -qw net.ipv4.ip_forward=0")
            sh("ip -n \(middle) addr flush dev \(clientSide)")
            sh("ip -n \(middle) addr flush dev \(serverSide)")
            // The endpoints forget the kernel's MAC addresses: ours answer ARP now.
            sh("ip -n \(client) neigh flush all; ip -n \(server) neigh flush all")
        }
        // Connections of the previous side are not carried over.
        sh("ip netns exec \(server) ss -K dport = 5201 >/dev/null 2>&1")
    }

    /// Starts `offload gateway` (this binary) on packet sockets in the middle namespace;
    /// returns its process id once it forwards.
    private func startGateway(threads: Int) -> Int32? {
        let pidFile = "/tmp/offload-bench-gateway-\(getpid())"
        defer { unlink(pidFile) }
        sh("ip netns exec \(middle) \(CommandLine.arguments[0]) gateway --port afpacket:\(clientSide)=10.77.41.1/24 "
           + "--port afpacket:\(serverSide)=10.77.42.1/24 --nat-outside \(serverSide) --stats 0 --duration 600 "
           + "--threads \(threads) --metrics-file \(metricsPath) "
           + ">/dev/null 2>&1 & echo $! > \(pidFile)")
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            benchNote("gateway benchmark: could not start offload gateway")
            return nil
        }
        for _ in 0..<50 {
            if sh("ip netns exec \(client) ping -c 1 -W 1 \(Self.serverAddress)").ok { return pid }
            usleep(100_000)
        }
        benchNote("gateway benchmark: the gateway does not forward")
        stop(pid)
        return nil
    }

    private func stop(_ pid: Int32) {
        kill(pid, SIGINT)
        for _ in 0..<50 where kill(pid, 0) == 0 { usleep(100_000) }
        kill(pid, SIGKILL)
        unlink(metricsPath)
    }

    // MARK: Measurements

    private func tcpThroughput() -> Double {
        let json = iperf("-t \(seconds)")
        let end = json?["end"] as? [String: Any]
        let received = end?["sum_received"] as? [String: Any]
        return (received?["bits_per_second"] as? Double ?? 0) / 1e9
    }

    private func withEndpointOffloadsOff(_ body: () -> Double) -> Double {
        let features = "tso off gso off gro off"
        sh("ip netns exec \(client) ethtool -K \(clientVeth) \(features)")
        sh("ip netns exec \(server) ethtool -K \(serverVeth) \(features)")
        defer {
            sh("ip netns exec \(client) ethtool -K \(clientVeth) tso on gso on gro on")
            sh("ip netns exec \(server) ethtool -K \(serverVeth) tso on gso on gro on")
        }
        return body()
    }

    struct UDPFigures {
        var lossPercent = 0.0
        var lost = 0
        var outOfOrder = 0
        /// Datagrams the server's kernel dropped for want of socket buffer (UdpRcvbufErrors):
        /// lost at the receiver, not on the way.
        var receiverBufferDrops = 0
        /// Packets our gateway dropped meanwhile (engine and links); nil for the kernel.
        var gatewayDrops: UInt64?

        /// Where the lost datagrams went, as far as the counters say.
        var whereLost: String {
            "lost \(lost), of them the server's socket had no room for \(receiverBufferDrops)"
                + (gatewayDrops.map { ", the gateway dropped \($0) packets" } ?? "")
        }
    }

    private func udpStreams() -> UDPFigures {
        let before = serverCounter("UdpRcvbufErrors")
        let gatewayBefore = gatewayDrops()
        guard let end = iperf("-u -P 8 -l 1400 -b 100M -t \(seconds)")?["end"] as? [String: Any],
              let streams = end["streams"] as? [[String: Any]] else { return UDPFigures(lossPercent: 100) }
        var figures = UDPFigures(receiverBufferDrops: serverCounter("UdpRcvbufErrors") - before,
                                 gatewayDrops: gatewayDrops(since: gatewayBefore))
        var packets = 0
        for stream in streams {
            let udp = stream["udp"] as? [String: Any] ?? [:]
            packets += udp["packets"] as? Int ?? 0
            figures.lost += udp["lost_packets"] as? Int ?? 0
            figures.outOfOrder += udp["out_of_order"] as? Int ?? 0
        }
        figures.lossPercent = packets > 0 ? 100 * Double(figures.lost) / Double(packets) : 100
        return figures
    }

    /// Where the running gateway writes its counters (`--metrics-file`), each second.
    private var metricsPath: String { "/tmp/offload-bench-gateway-\(getpid())-metrics" }

    /// The packets the running gateway has dropped, engine and links together, as its
    /// metrics file last said; nil when no gateway runs (the kernel's turn).
    private func gatewayDrops() -> UInt64? {
        guard let text = try? String(contentsOfFile: metricsPath, encoding: .utf8) else { return nil }
        return text.split(separator: "\n").filter { !$0.hasPrefix("#") && $0.contains("_dropped_") }
            .reduce(0) { $0 + (UInt64($1.split(separator: " ").last ?? "") ?? 0) }
    }

    /// The gateway's drops since `before` (a `gatewayDrops()`), once its metrics file has been
    /// rewritten; nil for the kernel.
    private func gatewayDrops(since before: UInt64?) -> UInt64? {
        guard let before else { return nil }
        usleep(1_200_000)  // the gateway rewrites its metrics file each second
        return gatewayDrops().map { $0 - before }
    }

    /// A kernel SNMP counter of the server's namespace, absolute.
    private func serverCounter(_ name: String) -> Int {
        let output = sh("ip netns exec \(server) nstat -asz \(name)").output
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix(name) }) else { return 0 }
        return line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) } ?? 0
    }

    /// The rate delivered at the highest offered rate of 64-byte frames (18 bytes of UDP
    /// payload) that loses under 1%.
    private func smallPacketRate() -> SmallPackets {
        var result = SmallPackets()
        for kpps in [10, 25, 50, 100, 200, 400, 800] {
            let bits = kpps * 1000 * 18 * 8
            let socketBefore = serverCounter("UdpRcvbufErrors"), gatewayBefore = gatewayDrops()
            guard let sum = (iperf("-u -l 18 -b \(bits) -t \(seconds)")?["end"] as? [String: Any])?["sum"] as? [String: Any],
                  let packets = sum["packets"] as? Int, packets > 0 else {
                result.nextStep = "iperf3 failed at \(kpps) kpps"
                break
            }
            let lost = sum["lost_packets"] as? Int ?? packets
            guard Double(lost) < 0.01 * Double(packets) else {
                let figures = UDPFigures(lost: lost, receiverBufferDrops: serverCounter("UdpRcvbufErrors") - socketBefore,
                                         gatewayDrops: gatewayDrops(since: gatewayBefore))
                result.nextStep = String(format: "%.1f%% at %d kpps", 100 * Double(lost) / Double(packets), kpps)
                    + " (\(figures.whereLost))"
                break
            }
            result.rate = Double(packets - lost) / Double(seconds)
        }
        return result
    }

    /// TCP connections opened and closed per second by four client threads.
    private func connectionRate() -> Double {
        let result = sh("ip netns exec \(client) python3 -c '\(Self.connectLoop)' \(Self.serverAddress) \(seconds)",
                        timeout: seconds + 20)
        guard let line = result.output.split(separator: "\n").last(where: { $0.hasPrefix("rate ") }) else { return 0 }
        return Double(line.dropFirst(5)) ?? 0
    }

    private func iperf(_ arguments: String) -> [String: Any]? {
        let result = sh("ip netns exec \(client) iperf3 -c \(Self.serverAddress) -p 5201 --json \(arguments)",
                        timeout: seconds + 20)
        guard let start = result.output.firstIndex(of: "{") else { return nil }
        return try? JSONSerialization.jsonObject(with: Data(result.output[start...].utf8)) as? [String: Any]
    }

    // Server: accept and close, on port 5202. Client: four threads connect and close for N seconds.
    static let acceptLoop = """
        import socket
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 5202)); s.listen(4096)
        while True:
            c, _ = s.accept(); c.close()
        """
    static let connectLoop = """
        import socket, sys, threading, time
        host, seconds = sys.argv[1], float(sys.argv[2])
        end = time.time() + seconds
        counts = [0] * 4
        def run(i):
            while time.time() < end:
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00")
                try:
                    s.connect((host, 5202)); counts[i] += 1
                except OSError:
                    pass
                s.close()
        ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        [t.start() for t in ts]; [t.join() for t in ts]
        print("rate", sum(counts) / seconds)
        """

    // MARK: Shell

    struct ShellResult {
        let ok: Bool
        let output: String
    }

    /// Runs a shell command with a time limit (`system`, which waits for it properly). Its
    /// output goes through a file, not a pipe: a daemon it starts (iperf3 -D) could hold a
    /// pipe open past the command's end.
    @discardableResult
    private func sh(_ command: String, timeout: Int = 10) -> ShellResult {
        let path = "/tmp/offload-bench-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        defer { unlink(path) }
        let quoted = "'" + command.replacingOccurrences(of: "'", with: "'\\''") + "'"
        let status = system("timeout -k 1 \(timeout) /bin/sh -c \(quoted) >\(path) 2>&1 </dev/null")
        let output = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return ShellResult(ok: status == 0, output: output)
    }
}
