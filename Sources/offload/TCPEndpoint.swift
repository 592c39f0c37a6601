import ArgumentParser
import COffloadShim
import OffloadCore
import OffloadHost
import OffloadLink
import OffloadTCP

#if canImport(Glibc)
import Glibc
#endif

/// The options `serve` and `send` share: the link, the host on it, and its TCP.
struct TCPEndpointOptions: ParsableArguments {
    @Option(help: "The link: tap:NAME (created here) or afpacket:IFNAME (an existing interface).")
    var link: LinkSpec

    @Option(help: "This host's address and prefix, e.g. 10.0.0.2/24.")
    var address: IPv4CIDR

    @Option(help: "Next hop for addresses outside the prefix.")
    var gateway: IPv4Address?

    @Option(help: "This host's MAC address (default: made from the IP address on TAP, the interface's own on afpacket).")
    var mac: MACAddress?

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

    @Option(help: "Write every frame received and sent to this pcap file.")
    var pcap: String?

    @Option(help: "Stop after this many seconds (default: when the work is done, or on SIGINT or SIGTERM).")
    var duration: Double?

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

/// Runs a host with a TCP on a link until the application is done (or the duration ends, or
/// a signal): receive a burst, let the host and its TCP answer, give the application its
/// turn, and sleep in epoll when nothing is due.
struct TCPEndpoint {
    let options: TCPEndpointOptions
    let name: String

    func run(_ application: TCPApplication) throws -> TCPStack {
        guard offload_stop_signals_install() == 0 else { throw RunError(message: "\(name): cannot install signal handlers") }
        do {
            switch options.link {
            case .tap(let device):
                let tap = try TapLink(name: device, mode: .plain)
                let hardware = options.mac ?? MACAddress.local(UInt64(options.address.address.rawValue))
                return try run(tap, hardware: hardware, bufferSize: TapLink.requiredReceiveSpace(.plain), application)
            case .packetSocket(let device):
                let socket = try PacketSocketLink(interface: device)
                let capabilities = socket.capabilities
                guard let hardware = options.mac ?? capabilities.address else {
                    throw RunError(message: "\(name): \(device) has no MAC address; give one with --mac")
                }
                return try run(socket, hardware: hardware, bufferSize: capabilities.maxFrameSize, application)
            }
        } catch let error as LinkError {
            throw RunError(message: "\(name): \(error)")
        }
    }

    private func run<L: Link & ~Copyable>(_ link: consuming L, hardware: MACAddress, bufferSize: Int,
                                          _ application: TCPApplication) throws -> TCPStack {
        let host = IPv4Host(.init(interface: options.address, hardwareAddress: hardware, gateway: options.gateway),
                            tcp: options.stackConfiguration)
        let stack = host.tcp!
        let clock = MonotonicClock()
        let loop = HostLoop(host: host, pool: BufferPool(count: 512, bufferSize: bufferSize, headroom: 0), clock: clock)
        let deadline = options.duration.map { clock.now + .nanoseconds(Int64($0 * 1e9)) }
        let shouldStop = {
            offload_stop_requested() != 0 || application.isDone || deadline.map { clock.now >= $0 } ?? false
        }
        if let pcap = options.pcap {
            let writer = try PcapFileWriter(path: pcap)
            var captured = CaptureLink(link, writer: writer, clock: clock,
                                       epochOffset: offload_realtime_ns() - offload_monotonic_ns())
            try drive(&captured, loop: loop, stack: stack, application, shouldStop: shouldStop)
            try writer.flush()
            print("capture: \(writer.framesWritten) frames written to \(pcap)")
        } else {
            var link = link
            try drive(&link, loop: loop, stack: stack, application, shouldStop: shouldStop)
        }
        let counters = host.counters
        if counters.totalDrops > 0 || !loop.transmitErrors.isEmpty {
            print(counters.table)
        }
        return stack
    }

    private func drive<L: Link & ~Copyable>(_ link: inout L, loop: HostLoop, stack: TCPStack,
                                            _ application: TCPApplication, shouldStop: () -> Bool) throws {
        var loop = loop
        let poller = try Poller()
        if let descriptor = link.capabilities.readinessDescriptor { try poller.add(descriptor) }
        while !shouldStop() {
            let received = try loop.runOnce(on: &link)
            application.turn(stack, now: loop.clock.now)
            if received == 0 && !stack.hasOutput {
                var timeout: Int64 = 10
                if let next = loop.host.nextDeadline {
                    timeout = min(timeout, max(0, (next.nanoseconds - loop.clock.now.nanoseconds) / 1_000_000))
                }
                _ = try poller.wait(timeoutMilliseconds: Int32(timeout))
            }
        }
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

    mutating func add(_ connection: TCPConnection) {
        connections += 1
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
