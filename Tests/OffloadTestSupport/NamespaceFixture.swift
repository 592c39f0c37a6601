import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Shell commands with a time limit, for tests that drive Linux networking (ip, socat, ping).
public enum Shell {
    public struct Result {
        public let status: Int32
        /// Standard output and standard error together.
        public let output: String
        public var succeeded: Bool { status == 0 }
    }

    /// A command running in the background; `finish()` waits for it (its time limit still holds).
    public final class Background {
        fileprivate let process: Process
        fileprivate let pipe: Pipe
        public let command: String

        fileprivate init(process: Process, pipe: Pipe, command: String) {
            self.process = process
            self.pipe = pipe
            self.command = command
        }

        public var isRunning: Bool { process.isRunning }

        public func finish() -> Result {
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return Result(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self))
        }
    }

    /// Starts `/bin/sh -c command` under `timeout` (the whole process group is killed
    /// after `seconds`, and with SIGKILL a second later).
    public static func start(_ command: String, timeout seconds: Int = 5) -> Background {
        let process = Process()
        let pipe = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        process.arguments = ["-k", "1", String(seconds), "/bin/sh", "-c", command]
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            Issue.record("could not start `\(command)`: \(error)")
        }
        return Background(process: process, pipe: pipe, command: command)
    }

    /// Runs `command` to completion (at most `seconds`) and returns its status and output.
    @discardableResult
    public static func run(_ command: String, timeout seconds: Int = 5) -> Result {
        start(command, timeout: seconds).finish()
    }

    /// Runs `command` and records a test issue when it fails.
    @discardableResult
    public static func must(_ command: String, timeout seconds: Int = 5,
                     sourceLocation: SourceLocation = #_sourceLocation) -> Result {
        let result = run(command, timeout: seconds)
        if !result.succeeded {
            Issue.record("`\(command)` failed (\(result.status)): \(result.output)", sourceLocation: sourceLocation)
        }
        return result
    }

    /// Waits up to `seconds` for every interface in `names` to exist (a TAP device appears
    /// once the command that opens it runs); says whether they came.
    public static func waitForInterfaces(_ names: [String], seconds: Double = 5) -> Bool {
        let check = names.map { "ip link show \($0) >/dev/null 2>&1" }.joined(separator: " && ")
        for _ in 0..<max(1, Int(seconds * 20)) {
            if run(check).succeeded { return true }
            usleep(50_000)
        }
        return false
    }
}

/// Whether tests that need root (namespaces, TAP devices, packet sockets) can run.
///
/// Without root they are skipped with a reason, unless `OFFLOAD_REQUIRE_ROOT=1` is set: then a
/// missing root is a failure (CI sets it, so a skipped interop test cannot pass unseen).
public enum Root {
    public static let reason = "needs root (network namespaces, TAP devices, packet sockets); run as root, "
        + "or set OFFLOAD_REQUIRE_ROOT=1 to turn this skip into a failure"

    public static var isRoot: Bool { geteuid() == 0 }
    public static var isRequired: Bool { ProcessInfo.processInfo.environment["OFFLOAD_REQUIRE_ROOT"] == "1" }

    /// The `.enabled(if:)` condition: run when root and the interop tools are installed, or
    /// when root is required (to fail, with the reason, where something is missing).
    public static var shouldRun: Bool {
        if isRequired { return true }
        if !isRoot {
            print("skipped: \(reason)")
            return false
        }
        if let missing = missingTools {
            print("skipped: the Linux interop tests need \(missing) (.ci/run installs them), "
                  + "or set OFFLOAD_REQUIRE_ROOT=1 to turn this skip into a failure")
            return false
        }
        return true
    }

    /// What the interop tests run that this machine lacks, as an install line; nil when
    /// nothing is missing. Looked up once.
    public static let missingTools: String? = {
        let programs = ["ip": "iproute2", "ss": "iproute2", "nstat": "iproute2", "ping": "iputils-ping",
                        "pkill": "procps", "socat": "socat", "iperf3": "iperf3", "tshark": "tshark",
                        "nft": "nftables", "setpriv": "util-linux", "python3": "python3"]
        var packages = Set(programs.filter { !Shell.run("command -v \($0.key)").succeeded }.values)
        if !Shell.run("/usr/bin/python3 -c 'import prometheus_client'").succeeded { packages.insert("python3-prometheus-client") }
        return packages.isEmpty ? nil : "apt-get install " + packages.sorted().joined(separator: " ")
    }()

    /// First line of a root test: false (with a recorded failure) when root is missing.
    public static func check(sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        if isRoot { return true }
        Issue.record("not running as root, and OFFLOAD_REQUIRE_ROOT=1 makes that a failure: \(reason)",
                     sourceLocation: sourceLocation)
        return false
    }
}

/// A network namespace made for one test, with IPv6 off (no router solicitations or MLD
/// chatter on its links), plus names for the interfaces the test makes. `tearDown()`
/// deletes the namespace and every interface registered with `own(interface:)`.
///
/// Only 10.77.x.x addresses are ever used inside these namespaces.
public struct NetworkNamespace: ~Copyable {
    private static let counter = Atomic<Int>(0)

    public let name: String
    /// A short per-test tag for interface names (at most 15 bytes with a 3-letter prefix).
    public let tag: String
    private var ownedInterfaces: [String] = []

    /// Creates `<prefix>-<pid>-<n>`.
    public init(prefix: String) {
        let n = Self.counter.add(1, ordering: .relaxed).newValue
        let pid = getpid()
        name = "\(prefix)-\(pid)-\(n)"
        tag = "\(pid % 1_000_000)x\(n)"
        Shell.must("ip netns add \(name)")
        Shell.must("ip netns exec \(name) sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
        Shell.must("ip -n \(name) link set lo up")
    }

    /// An interface name unique to this test: `<prefix><pid>x<n>`.
    public func interfaceName(_ prefix: String) -> String { "\(prefix)\(tag)" }

    /// Remembers a root-namespace interface to delete in `tearDown()`.
    public mutating func own(interface: String) { ownedInterfaces.append(interface) }

    /// A veth pair between the root namespace and this one: `ours` stays in the root
    /// namespace, up, with no address and no IPv6, so that nothing of the root namespace's
    /// own stack answers on it (a packet socket plays the host there); `theirs` moves here,
    /// up, at `address` (CIDR). `ours` is deleted at `tearDown()`.
    public mutating func addVeth(ours: String, theirs: String, address: String) {
        Shell.must("ip link add \(ours) type veth peer name \(theirs)")
        own(interface: ours)
        Shell.must("sysctl -qw net.ipv6.conf.\(ours).disable_ipv6=1")
        Shell.must("ip link set \(ours) up")
        Shell.must("ip link set \(theirs) netns \(name)")
        must("ip addr add \(address) dev \(theirs)")
        must("ip link set \(theirs) up")
    }

    /// Runs `command` inside the namespace.
    @discardableResult
    public func run(_ command: String, timeout: Int = 5) -> Shell.Result {
        Shell.run("ip netns exec \(name) \(command)", timeout: timeout)
    }

    /// Runs `command` inside the namespace, recording an issue if it fails.
    @discardableResult
    public func must(_ command: String, timeout: Int = 5, sourceLocation: SourceLocation = #_sourceLocation) -> Shell.Result {
        Shell.must("ip netns exec \(name) \(command)", timeout: timeout, sourceLocation: sourceLocation)
    }

    /// Starts `command` inside the namespace in the background.
    public func start(_ command: String, timeout: Int = 5) -> Shell.Background {
        Shell.start("ip netns exec \(name) \(command)", timeout: timeout)
    }

    /// Waits up to `seconds` for a socket in the namespace bound to `port` (a TCP listener
    /// or a UDP socket; `ss -Hln`), and says whether one came: a server started in the
    /// background is ready before the test sends to it.
    @discardableResult
    public func waitForSocket(port: Int, seconds: Double = 2) -> Bool {
        for _ in 0..<max(1, Int(seconds * 50)) {
            if run("ss -Hln sport = :\(port)").output.contains(":\(port)") { return true }
            usleep(20_000)
        }
        return false
    }

    /// Deletes what the test made; safe to call when parts of it were never made.
    public func tearDown() {
        for interface in ownedInterfaces {
            Shell.run("ip link show \(interface) >/dev/null 2>&1 && ip link del \(interface)")
        }
        Shell.run("ip netns del \(name)")
    }
}

/// Whether tests that need a program beyond the toolchain (tshark) can run: they skip with
/// a reason where it is missing, unless `OFFLOAD_REQUIRE_ROOT=1` (CI, which installs it) asks
/// for every test, when the missing program fails them.
public enum Tools {
    public static func shouldRun(needing programs: [String]) -> Bool {
        let missing = programs.filter { !Shell.run("command -v \($0)").succeeded }
        if !missing.isEmpty && !Root.isRequired {
            print("skipped: needs \(missing.joined(separator: ", ")) (apt-get install \(missing.joined(separator: " ")); "
                  + ".ci/run installs it)")
        }
        return missing.isEmpty || Root.isRequired
    }
}

/// tshark with IP, TCP, UDP (and ICMP) checksum validation on.
public enum Tshark {
    public static let checksumOptions = "-o ip.check_checksum:TRUE -o tcp.check_checksum:TRUE -o udp.check_checksum:TRUE"
    /// Frames that are malformed, carry an error-level expert note or a bad checksum.
    public static let problemFilter = "_ws.malformed || _ws.expert.severity >= error || ip.checksum.status == 0 || "
        + "icmp.checksum.status == 0 || udp.checksum.status == 0 || tcp.checksum.status == 0"

    /// Runs tshark over a capture with `problemFilter`: what it printed (empty when every frame
    /// is well formed), or nil when tshark failed. Frames matching `excluding` (a display
    /// filter) are not reported.
    public static func problems(in path: String, excluding: String? = nil, timeout: Int = 60) -> String? {
        let filter = excluding.map { "(\(problemFilter)) && !(\($0))" } ?? problemFilter
        let result = Shell.run(
            "tshark -n -r \(path) \(checksumOptions) \(noPayloadGuessing) \(payloadAsData) -Y '\(filter)' 2>/dev/null",
            timeout: timeout)
        return result.succeeded ? result.output.trimmingCharacters(in: .whitespacesAndNewlines) : nil
    }

    /// Disables every protocol tshark only finds by guessing from payload bytes (Thrift, SIP,
    /// ...): the transfers carry random bytes, which a guess can take for a malformed
    /// application message although every header of ours is well formed.
    static let noPayloadGuessing: String = {
        let listed = Shell.run("tshark -G heuristic-decodes 2>/dev/null | cut -f2 | sort -u", timeout: 30)
        return listed.output.split(separator: "\n")
            .filter { !$0.isEmpty && $0 != "ip" }
            .map { "--disable-protocol \($0)" }
            .joined(separator: " ")
    }()

    /// Decodes every TCP and UDP payload as plain data: an ephemeral port can be a well-known
    /// one (6667 is IRC's), and random bytes read as that protocol look malformed.
    static let payloadAsData = "-d 'tcp.port==1-65535,data' -d 'udp.port==1-65535,data'"

    /// How many frames of the capture match a display filter (payload guessing off, as in
    /// `problems`: on a capture of a large transfer it takes minutes instead of seconds).
    public static func count(in path: String, matching filter: String, timeout: Int = 60) -> Int {
        let result = Shell.run("tshark -n -r \(path) \(noPayloadGuessing) -Y '\(filter)' 2>/dev/null | wc -l",
                               timeout: timeout)
        return Int(result.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }
}

/// Prometheus text files as `prometheus_client`'s parser reads them (the system's Python,
/// where `.ci/run` installs it).
public enum PrometheusText {
    /// The file's samples by name (labels aside); empty, with an issue recorded, when it
    /// does not parse.
    public static func samples(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) -> [String: Double] {
        let script = """
            import sys
            from prometheus_client.parser import text_string_to_metric_families
            for family in text_string_to_metric_families(open(sys.argv[1]).read()):
                for sample in family.samples:
                    print(sample.name, sample.value)
            """
        let result = Shell.run("/usr/bin/python3 -c '\(script)' \(path)", timeout: 30)
        guard result.succeeded else {
            Issue.record("\(path) does not parse as Prometheus text: \(result.output.suffix(500))",
                         sourceLocation: sourceLocation)
            return [:]
        }
        var samples: [String: Double] = [:]
        for line in result.output.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let value = Double(parts[1]) { samples[String(parts[0])] = value }
        }
        return samples
    }
}
