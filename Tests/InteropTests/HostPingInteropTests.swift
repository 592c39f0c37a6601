#if os(Linux)
import Foundation
import OffloadCore
import OffloadHost
import OffloadLink
import OffloadTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Our host against the Linux kernel's own stack: the kernel side of the link lives in a
/// namespace the test made, `ping -c 20` from there must get 20 replies from us, our ping
/// must get the kernel's reply, and `tshark` (checksums checked) must find nothing wrong in
/// the capture of the exchange.
@Suite("Host interop with Linux", .serialized)
struct HostPingInteropTests {
    static let kernelAddress = "10.77.20.1"
    static let ourAddress = try! IPv4CIDR(parsing: "10.77.20.2/24")

    @Test("TAP, plain frames", .enabled(if: Root.shouldRun, Comment(rawValue: Root.reason)))
    func plainTap() throws {
        guard Root.check() else { return }
        let namespace = NetworkNamespace(prefix: "ipt")
        defer { namespace.tearDown() }
        let name = namespace.interfaceName("ipt")
        let tap = try TapLink(name: name, mode: .plain)
        Self.attachKernelSide(name, to: namespace)
        try Self.pingExchange(tap, bufferSize: TapLink.requiredReceiveSpace(.plain), namespace: namespace)
    }

    @Test("TAP with the virtio-net header (checksum and TSO offload on)",
          .enabled(if: Root.shouldRun, Comment(rawValue: Root.reason)))
    func virtioNetTap() throws {
        guard Root.check() else { return }
        let namespace = NetworkNamespace(prefix: "ipv")
        defer { namespace.tearDown() }
        let name = namespace.interfaceName("ipv")
        let tap = try TapLink(name: name, mode: .virtioNetHeader)
        Self.attachKernelSide(name, to: namespace)
        try Self.pingExchange(tap, bufferSize: TapLink.requiredReceiveSpace(.virtioNetHeader), namespace: namespace)
    }

    @Test("AF_PACKET on one end of a veth pair", .enabled(if: Root.shouldRun, Comment(rawValue: Root.reason)))
    func packetSocketOnVeth() throws {
        guard Root.check() else { return }
        var namespace = NetworkNamespace(prefix: "ipa")
        defer { namespace.tearDown() }
        let ours = namespace.interfaceName("ipa")
        namespace.addVeth(ours: ours, theirs: namespace.interfaceName("ipb"), address: "\(Self.kernelAddress)/24")
        let socket = try PacketSocketLink(interface: ours)
        let bufferSize = socket.capabilities.maxFrameSize
        try Self.pingExchange(socket, bufferSize: bufferSize, namespace: namespace)
    }

    static func attachKernelSide(_ interface: String, to namespace: borrowing NetworkNamespace) {
        Shell.must("ip link set \(interface) netns \(namespace.name)")
        namespace.must("ip addr add \(kernelAddress)/24 dev \(interface)")
        namespace.must("ip link set \(interface) up")
    }

    /// Runs our host on `link` (captured to a pcap file) while the namespace pings it, then
    /// pings the namespace from our side; checks the counts and the capture.
    static func pingExchange<L: Link & ~Copyable>(
        _ link: consuming L, bufferSize: Int, namespace: borrowing NetworkNamespace
    ) throws {
        let pcap = NSTemporaryDirectory() + "\(namespace.name).pcap"
        defer { unlink(pcap) }
        let clock = MonotonicClock()
        let host = IPv4Host(.init(interface: ourAddress, hardwareAddress: .local(0x77_2002)))
        let pool = BufferPool(count: 64, bufferSize: bufferSize, headroom: 0)
        var loop = HostLoop(host: host, pool: pool, clock: clock)
        let poller = try Poller()
        let writer = try PcapFileWriter(path: pcap)
        var captured = CaptureLink(link, writer: writer, clock: clock)

        let ping = namespace.start("ping -c 20 -i 0.05 -W 2 \(ourAddress.address)", timeout: 20)
        let deadline = clock.now + .seconds(20)
        try loop.run(on: &captured, poller: poller) { !ping.isRunning || clock.now > deadline }
        let result = ping.finish()
        #expect(result.output.contains("20 packets transmitted, 20 received"), "ping said: \(result.output)")
        #expect(host.counters.echoRequestsAnswered == 20)

        // Our own ping: resolve the kernel's address by ARP (unless its request taught us
        // already), then get its echo reply.
        let kernel = try IPv4Address(parsing: kernelAddress)
        host.ping(kernel, identifier: 0x4f, sequence: 1, now: clock.now) { header, payload in
            do throws(LinkError) {
                try captured.transmit(header: header, payloads: payload, metadata: .none)
            } catch {
                Issue.record("transmit: \(error)")
            }
        }
        let replyDeadline = clock.now + .seconds(5)
        try loop.run(on: &captured, poller: poller) { !host.echoReplies.isEmpty || clock.now > replyDeadline }
        #expect(host.echoReplies.map(\.identifier) == [0x4f])
        #expect(host.neighbors.lookup(kernel, now: clock.now) != nil)
        #expect(host.counters.totalDrops == host.counters[drop: .notForUs] + host.counters[drop: .unsupportedEtherType],
                "only foreign traffic may be dropped: \(host.counters.table)")
        #expect(pool.inUse == 0)

        try writer.flush()
        #expect(writer.framesWritten >= 42)
        checkCaptureWithTshark(pcap, expectedFrames: Int(writer.framesWritten))
    }

    /// tshark, with IP, TCP and UDP checksum validation on, must read every frame and find
    /// no malformed packet, no error-level expert note and no bad checksum.
    static func checkCaptureWithTshark(_ path: String, expectedFrames: Int) {
        let all = Shell.run("tshark -n -r \(path) \(Tshark.checksumOptions) -T fields -e frame.number 2>/dev/null | wc -l",
                            timeout: 30)
        #expect(Int(all.output.trimmingCharacters(in: .whitespacesAndNewlines)) == expectedFrames,
                "tshark read: \(all.output)")
        let problems = Tshark.problems(in: path, timeout: 30)
        #expect(problems == "", "tshark found: \(problems ?? "(tshark failed)")")
        // The echo exchange is really in the file, as tshark reads it.
        #expect(Tshark.count(in: path, matching: "icmp.type == 0", timeout: 30) == 21)
    }
}
#endif
