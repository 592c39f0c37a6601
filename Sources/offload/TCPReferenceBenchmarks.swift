import Foundation
import COffloadShim
import OffloadCore
import OffloadLink

// The two references the TCP benchmarks compare against (SPEC "Measurements"), each a
// function the TCP benchmarks call in their own run, plus bench rows of their own
// (`offload bench --filter tcp-reference`). Both need root; each makes its own namespace,
// uses only 10.77.x.x addresses inside it, and deletes it afterwards, also on failure.

// MARK: Linux TCP over lo

/// Linux TCP measured like for like with the in-process TCP offload (SPEC: "iperf3 over `lo`
/// with MTU 1500 in a test namespace, client and server pinned to one core with `taskset`"):
/// a namespace of its own (`offload-bench-lo-<pid>`) whose `lo` has MTU 1500, an iperf3
/// server and client both inside it, both pinned to core 0, one stream for `seconds`
/// (rounded up to whole seconds, at least 1). Returns the receiver's throughput in Gbit/s
/// (iperf3's `end.sum_received.bits_per_second`), or nil, with the reason printed, when
/// not root, when iperf3, taskset or ip is missing, or when the measurement fails.
func linuxLoopbackTCP(seconds: Double) -> Double? {
    linuxLoopbackTCPFigures(seconds: seconds)?.gigabitsPerSecond
}

/// What `linuxLoopbackTCPFigures(seconds:)` measured.
struct LinuxLoopbackFigures {
    /// The receiver's throughput (`end.sum_received.bits_per_second`).
    var gigabitsPerSecond: Double
    /// CPU time of the iperf3 client and server processes, in percent of the test's duration
    /// (`end.cpu_utilization_percent` host_total + remote_total; both on the one core, so at
    /// most about 100): on a shared machine, the part of the core Linux TCP got. Nil when
    /// iperf3 did not report it.
    var cpuPercent: Double?

    /// Throughput per second of CPU the two processes used (softirq work on their core is
    /// charged to them), comparable with an in-process loop's throughput per CPU-second.
    var gigabitsPerCPUSecond: Double? { cpuPercent.flatMap { $0 > 0 ? gigabitsPerSecond / ($0 / 100) : nil } }
}

/// `linuxLoopbackTCP(seconds:)` with the CPU share iperf3 reports.
func linuxLoopbackTCPFigures(seconds: Double) -> LinuxLoopbackFigures? {
    let skipped = "Linux TCP over lo skipped"
    guard benchCanRun(skipped, root: "a network namespace", tools: ["ip", "iperf3", "taskset"]) else { return nil }
    let duration = max(1, Int(seconds.rounded(.up)))
    guard let namespace = BenchNamespace(name: "offload-bench-lo-\(getpid())") else {
        benchNote("\(skipped): could not create the network namespace")
        return nil
    }
    defer { namespace.delete() }
    namespace.run("ip link set lo up mtu 1500")
    guard namespace.run("ip link show lo").output.contains("mtu 1500 ") else {
        benchNote("\(skipped): could not set lo's MTU to 1500 in \(namespace.name)")
        return nil
    }
    // One test (-1), as a daemon so that the shell returns at once; `delete()` kills it if
    // the client never comes.
    let port = 5201
    namespace.run("taskset -c 0 iperf3 -s -1 -D -p \(port)")
    guard namespace.waitForListener(tcpPort: port) else {
        benchNote("\(skipped): the iperf3 server did not start")
        return nil
    }
    return iperf3Client(in: namespace, to: "127.0.0.1", port: port, seconds: duration, skipped: skipped)
}

/// Linux TCP from one namespace to another over a veth pair (SPEC: the reference of TCP
/// offload over a virtio-net TAP with TSO): namespaces `offload-bench-veth{a,b}-<pid>`,
/// 10.77.92.1/24 and .2/24, MTU 1500, the veth's offloads as Linux sets them (TSO, GSO, GRO
/// on), an iperf3 server in b and its client in a, both pinned to core 0, one stream for
/// `seconds` (whole seconds, at least 1). Nil, with the reason printed, where it cannot run.
func linuxVethTCPFigures(seconds: Double) -> LinuxLoopbackFigures? {
    let skipped = "Linux TCP over veth skipped"
    guard benchCanRun(skipped, root: "network namespaces", tools: ["ip", "iperf3", "taskset"]) else { return nil }
    let duration = max(1, Int(seconds.rounded(.up)))
    guard let client = BenchNamespace(name: "offload-bench-vetha-\(getpid())") else {
        benchNote("\(skipped): could not create the network namespace")
        return nil
    }
    defer { client.delete() }
    guard let server = BenchNamespace(name: "offload-bench-vethb-\(getpid())") else {
        benchNote("\(skipped): could not create the network namespace")
        return nil
    }
    defer { server.delete() }
    for step in [
        "ip link add obva type veth peer name obvb netns \(server.name)",
        "ip link set obva netns \(client.name)",
        "ip -n \(client.name) addr add 10.77.92.1/24 dev obva",
        "ip -n \(client.name) link set obva mtu 1500 up",
        "ip -n \(server.name) addr add 10.77.92.2/24 dev obvb",
        "ip -n \(server.name) link set obvb mtu 1500 up",
    ] where !BenchShell.run(step).ok {
        benchNote("\(skipped): `\(step)` failed")
        return nil
    }
    let port = 5202
    server.run("taskset -c 0 iperf3 -s -1 -D -p \(port)")
    guard server.waitForListener(tcpPort: port) else {
        benchNote("\(skipped): the iperf3 server did not start")
        return nil
    }
    return iperf3Client(in: client, to: "10.77.92.2", port: port, seconds: duration, skipped: skipped)
}

/// Runs an iperf3 client (pinned to core 0, JSON out) in `namespace` against a server at
/// `address`, and reads its receiver's rate and both sides' CPU share.
private func iperf3Client(in namespace: BenchNamespace, to address: String, port: Int, seconds duration: Int,
                          skipped: String) -> LinuxLoopbackFigures? {
    let result = namespace.run("taskset -c 0 iperf3 -c \(address) -p \(port) -t \(duration) -J",
                               timeout: duration + 20)
    guard let json = parseJSONObject(result.output) else {
        benchNote("\(skipped): iperf3 gave no JSON (\(result.output.prefix(200)))")
        return nil
    }
    if let error = json["error"] as? String {
        benchNote("\(skipped): iperf3: \(error)")
        return nil
    }
    guard let end = json["end"] as? [String: Any], let received = end["sum_received"] as? [String: Any],
          let bitsPerSecond = (received["bits_per_second"] as? NSNumber)?.doubleValue, bitsPerSecond > 0 else {
        benchNote("\(skipped): iperf3's JSON has no received rate")
        return nil
    }
    let cpu = end["cpu_utilization_percent"] as? [String: Any]
    let client = (cpu?["host_total"] as? NSNumber)?.doubleValue, server = (cpu?["remote_total"] as? NSNumber)?.doubleValue
    return LinuxLoopbackFigures(gigabitsPerSecond: bitsPerSecond / 1e9,
                                cpuPercent: client.flatMap { c in server.map { c + $0 } })
}

// MARK: TAP raw frame-write limit

/// What `tapRawFrameWrite(seconds:)` measured. Rates are per second of writing.
struct TapFrameWriteFigures {
    /// Bytes per frame: Ethernet 14 + IPv4 20 + UDP 8 + 1472 bytes of payload.
    static let frameSize = 1514

    /// How long the writer wrote.
    var seconds: Double
    /// Frames `write()` accepted, per second.
    var writtenPerSecond: Double
    /// Datagrams the reader in the namespace read, per second: the limit.
    var readPerSecond: Double
    /// Datagrams the namespace's UDP queued to a socket (`/proc/net/snmp` Udp InDatagrams), per second.
    var deliveredPerSecond: Double
    /// Datagrams the namespace's UDP dropped: the reader's socket buffer was full (RcvbufErrors),
    /// or anything else UDP counted as an error (InErrors, NoPorts).
    var socketBufferDrops: Int, otherUDPErrors: Int
    /// `write()` calls that failed.
    var writeErrors: Int

    /// The limit: datagrams read per second, as 1514-byte frames in Gbit/s.
    var gigabitsPerSecond: Double { readPerSecond * Double(Self.frameSize) * 8 / 1e9 }
}

/// The TAP's raw frame-write limit (SPEC: "the rate at which a minimal writer (a few lines,
/// part of the benchmark) pushes 1514-byte frames carrying UDP datagrams through the same
/// TAP to a socket that reads them in the namespace"). Returns the rate the reader received
/// (the limit: it is also what the writer achieved unless the kernel dropped) in frames/s
/// and, counting whole 1514-byte frames, in Gbit/s. See `tapRawFrameWrite(seconds:)`.
func tapRawFrameWriteLimit(seconds: Double) -> (framesPerSecond: Double, gigabitsPerSecond: Double)? {
    tapRawFrameWrite(seconds: seconds).map { ($0.readPerSecond, $0.gigabitsPerSecond) }
}

/// The TAP's raw frame-write limit with everything it measured. A plain TAP (`TapLink`,
/// `.plain`) whose kernel side moves into a namespace of its own (`offload-bench-tap-<pid>`,
/// 10.77.90.1/24, MTU 1500, IPv6 off), a static neighbour entry for the writer's pretend
/// address 10.77.90.2, and a Python reader in the namespace counting the datagrams on UDP
/// port 5301. This thread writes one prebuilt 1514-byte Ethernet/IPv4/UDP frame (valid IP
/// and UDP checksums, so the kernel verifies the UDP checksum as it would TCP's) to the
/// TAP's descriptor with plain `write()` in a tight loop for `seconds` (at least 0.5).
/// Nil, with the reason printed, when not root, when ip or python3 is missing, or when a
/// step fails. The TAP and the namespace are gone when it returns.
func tapRawFrameWrite(seconds: Double) -> TapFrameWriteFigures? {
    let skipped = "TAP raw frame-write limit skipped"
    guard benchCanRun(skipped, root: "a TAP device, a network namespace", tools: ["ip", "python3"]) else { return nil }
    guard let namespace = BenchNamespace(name: "offload-bench-tap-\(getpid())") else {
        benchNote("\(skipped): could not create the network namespace")
        return nil
    }
    defer { namespace.delete() }
    // The TAP lives (and is closed, which deletes it) inside this call, before the namespace goes.
    return TapFrameWriter.measure(in: namespace, seconds: max(0.5, seconds), skipped: skipped)
}

private enum TapFrameWriter {
    static let namespaceAddress: [UInt8] = [10, 77, 90, 1]
    static let writerAddress: [UInt8] = [10, 77, 90, 2]
    static let writerMAC: [UInt8] = [0x02, 0x00, 0x00, 0x77, 0x90, 0x02]
    static let sourcePort: UInt16 = 5300, destinationPort: UInt16 = 5301

    static func measure(in namespace: BenchNamespace, seconds: Double, skipped: String) -> TapFrameWriteFigures? {
        let tap: TapLink
        do {
            tap = try TapLink(name: "obtap\(getpid() % 1_000_000)", mode: .plain)
        } catch {
            benchNote("\(skipped): \(error)")
            return nil
        }
        guard let tapMAC = tap.capabilities.address else {
            benchNote("\(skipped): could not read the TAP's hardware address")
            return nil
        }
        let device = tap.name, ns = namespace.name
        let writerMACText = writerMAC.map { String($0, radix: 16).leftPadded(2) }.joined(separator: ":")
        for step in [
            "ip link set \(device) netns \(ns)",
            "ip -n \(ns) link set \(device) mtu 1500 up",
            "ip -n \(ns) addr add 10.77.90.1/24 dev \(device)",
            "ip -n \(ns) neigh add 10.77.90.2 lladdr \(writerMACText) dev \(device) nud permanent",
        ] where !BenchShell.run(step).ok {
            benchNote("\(skipped): `\(step)` failed")
            return nil
        }

        // The reader: counts datagrams until none came for 0.5 s after the first (the writer
        // is done) or its own time limit; writes the count to a file.
        let files = "/tmp/offload-bench-tap-\(getpid())"
        let countFile = files + "-count", readyFile = files + "-ready"
        unlink(countFile); unlink(readyFile)
        defer { unlink(countFile); unlink(readyFile) }
        let limit = Int(seconds.rounded(.up)) + 10
        namespace.run("timeout -k 1 \(limit + 2) python3 -c '\(readerScript)' 10.77.90.1 \(destinationPort) "
                      + "\(limit) \(countFile) \(readyFile) >/dev/null 2>&1 &")
        var ready = false
        for _ in 0..<100 where !ready {
            ready = access(readyFile, F_OK) == 0
            if !ready { usleep(50_000) }
        }
        guard ready else {
            benchNote("\(skipped): the UDP reader did not start in \(ns)")
            return nil
        }

        // The writer.
        let frame = makeFrame(destinationMAC: tapMAC)
        let fd = tap.descriptor
        var written = 0, errors = 0
        let start = offload_monotonic_ns()
        let end = start + Int64(seconds * 1e9)
        var now = start
        frame.withUnsafeBytes { bytes in
            let base = bytes.baseAddress!, count = bytes.count
            while now < end {
                for _ in 0..<64 {
                    if write(fd, base, count) == count { written += 1 } else { errors += 1 }
                }
                now = offload_monotonic_ns()
            }
        }
        let elapsed = Double(now - start) / 1e9

        var count: Int?
        for _ in 0..<100 where count == nil {  // the reader stops 0.5 s after the last datagram
            count = (try? String(contentsOfFile: countFile, encoding: .utf8)).flatMap {
                Int($0.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            if count == nil { usleep(50_000) }
        }
        guard let read = count else {
            benchNote("\(skipped): the UDP reader gave no count")
            return nil
        }
        let udp = udpCounters(namespace)
        return TapFrameWriteFigures(
            seconds: elapsed, writtenPerSecond: Double(written) / elapsed,
            readPerSecond: Double(read) / elapsed,
            deliveredPerSecond: Double(udp["InDatagrams"] ?? 0) / elapsed,
            socketBufferDrops: udp["RcvbufErrors"] ?? 0,
            otherUDPErrors: (udp["InErrors"] ?? 0) - (udp["RcvbufErrors"] ?? 0) + (udp["NoPorts"] ?? 0),
            writeErrors: errors)
    }

    /// Ethernet (to the TAP's address) / IPv4 10.77.90.2 -> 10.77.90.1, DF / UDP 5300 -> 5301,
    /// 1472 bytes of payload: 1514 bytes, checksums filled in.
    static func makeFrame(destinationMAC: MACAddress) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: TapFrameWriteFigures.frameSize)
        func put16(_ value: UInt16, at offset: Int) {
            f[offset] = UInt8(value >> 8); f[offset + 1] = UInt8(value & 0xff)
        }
        for i in 0..<6 { f[i] = UInt8(truncatingIfNeeded: destinationMAC.rawValue >> (8 * (5 - i))) }
        f[6..<12] = writerMAC[...]
        put16(0x0800, at: 12)
        let ip = 14, udp = ip + 20
        let ipLength = f.count - ip, udpLength = f.count - udp
        f[ip] = 0x45
        put16(UInt16(ipLength), at: ip + 2)
        put16(0x4000, at: ip + 6)  // don't fragment
        f[ip + 8] = 64
        f[ip + 9] = 17
        f[(ip + 12)..<(ip + 16)] = writerAddress[...]
        f[(ip + 16)..<(ip + 20)] = namespaceAddress[...]
        let ipChecksum = f.withUnsafeBytes { InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: $0[ip..<(ip + 20)])) }
        put16(ipChecksum, at: ip + 10)
        put16(sourcePort, at: udp)
        put16(destinationPort, at: udp + 2)
        put16(UInt16(udpLength), at: udp + 4)
        for i in (udp + 8)..<f.count { f[i] = UInt8(truncatingIfNeeded: i &* 7) }
        // The UDP checksum over the pseudo-header (addresses, protocol, length) and the datagram.
        var pseudo = [UInt8]()
        pseudo += writerAddress
        pseudo += namespaceAddress
        pseudo += [0, 17, UInt8(udpLength >> 8), UInt8(udpLength & 0xff)]
        pseudo += f[udp...]
        var checksum = pseudo.withUnsafeBytes { InternetChecksum.checksum($0) }
        if checksum == 0 { checksum = 0xffff }  // 0 would mean "no checksum"
        put16(checksum, at: udp + 6)
        return f
    }

    /// The namespace's UDP counters from /proc/net/snmp (its own: the namespace is new).
    static func udpCounters(_ namespace: BenchNamespace) -> [String: Int] {
        let lines = namespace.run("cat /proc/net/snmp").output.split(separator: "\n").filter { $0.hasPrefix("Udp: ") }
        guard lines.count >= 2 else { return [:] }
        let names = lines[0].split(separator: " ").dropFirst(), values = lines[1].split(separator: " ").dropFirst()
        return Dictionary(zip(names.map(String.init), values.map { Int($0) ?? 0 }), uniquingKeysWith: { a, _ in a })
    }

    // argv: address, port, time limit (s), count file, ready file. One recv_into per
    // datagram on a blocking socket with a 0.5 s receive timeout (no select per call).
    static let readerScript = """
        import os, socket, struct, sys, time
        host, port, limit, out, ready = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 500000))
        s.bind((host, port))
        open(ready, "w").close()
        buf = bytearray(2048)
        recv = s.recv_into
        n = 0
        end = time.monotonic() + limit
        while time.monotonic() < end:
            try:
                for _ in range(256):
                    recv(buf)
                    n += 1
            except OSError:
                if n:
                    break
        with open(out + ".tmp", "w") as f:
            f.write(str(n))
        os.rename(out + ".tmp", out)
        """
}

// MARK: Bench rows

enum TCPReferenceBenchmarks {
    static func linuxLoopbackRows(seconds: Double) -> [BenchResult] {
        guard let gbps = linuxLoopbackTCP(seconds: seconds) else { return [] }
        return [BenchResult(name: "Linux TCP over lo (MTU 1500, one core)", value: gbps, unit: "Gbit/s",
                            target: "- (reference: TCP offload >= 1.0x)",
                            detail: "iperf3 -t \(max(1, Int(seconds.rounded(.up)))), client and server taskset -c 0")]
    }

    static func tapRows(seconds: Double) -> [BenchResult] {
        guard let f = tapRawFrameWrite(seconds: seconds) else { return [] }
        let detail = "written \(format(f.writtenPerSecond / 1e3)) k/s, read \(format(f.readPerSecond / 1e3)) k/s, "
            + "UDP delivered \(format(f.deliveredPerSecond / 1e3)) k/s, socket-buffer drops \(f.socketBufferDrops), "
            + "other UDP errors \(f.otherUDPErrors), write errors \(f.writeErrors), \(format(f.seconds)) s"
        return [
            BenchResult(name: "TAP raw frame-write limit (1514 B)", value: f.readPerSecond / 1e3, unit: "kframes/s",
                        target: "- (reference: TCP over TAP >= 0.7x)", detail: detail),
            BenchResult(name: "TAP raw frame-write limit (1514 B) bits", value: f.gigabitsPerSecond, unit: "Gbit/s",
                        target: "- (reference: TCP over TAP >= 0.7x)"),
        ]
    }
}

// MARK: Namespaces and shell commands

/// A network namespace made for one measurement, IPv6 off, `lo` up. `delete()` kills what
/// runs in it and deletes it.
struct BenchNamespace {
    let name: String

    /// Nil when `ip netns add` fails (a namespace of that name exists, or not root).
    init?(name: String) {
        self.name = name
        guard BenchShell.run("ip netns add \(name)").ok else { return nil }
        run("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
        BenchShell.run("ip -n \(name) link set lo up")
    }

    /// Runs `command` inside the namespace (see `BenchShell.run`).
    @discardableResult
    func run(_ command: String, timeout: Int = 10) -> BenchShell.Result {
        BenchShell.run("ip netns exec \(name) /bin/sh -c \(BenchShell.quote(command))", timeout: timeout)
    }

    /// Waits up to 5 s for a TCP listener on `tcpPort` inside the namespace.
    func waitForListener(tcpPort port: Int) -> Bool {
        for _ in 0..<50 {
            if !run("ss -Htln sport = :\(port)").output.isEmpty { return true }
            usleep(100_000)
        }
        return false
    }

    func delete() {
        BenchShell.run("ip netns pids \(name) | xargs -r kill -9; ip netns del \(name)")
    }
}

/// Shell commands with a time limit, through `system` with the output in a file (as
/// GatewayBenchmark does: a daemon the command starts could hold a pipe open past its end).
/// Whether a benchmark that needs `root` and `tools` can run here; prints why not, after
/// `skipped`, when it cannot.
func benchCanRun(_ skipped: String, root why: String?, tools: [String]) -> Bool {
    if let why, geteuid() != 0 {
        benchNote("\(skipped): needs root (\(why))")
        return false
    }
    for tool in tools where !BenchShell.run("command -v \(tool)").ok {
        benchNote("\(skipped): \(tool) is not installed")
        return false
    }
    return true
}

enum BenchShell {
    struct Result {
        let ok: Bool
        let output: String
    }

    @discardableResult
    static func run(_ command: String, timeout: Int = 10) -> Result {
        let path = "/tmp/offload-bench-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        defer { unlink(path) }
        let status = system("timeout -k 1 \(timeout) /bin/sh -c \(quote(command)) >\(path) 2>&1 </dev/null")
        let output = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return Result(ok: status == 0, output: output)
    }

    static func quote(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}

private func parseJSONObject(_ text: String) -> [String: Any]? {
    guard let start = text.firstIndex(of: "{") else { return nil }
    return try? JSONSerialization.jsonObject(with: Data(text[start...].utf8)) as? [String: Any]
}

private extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
