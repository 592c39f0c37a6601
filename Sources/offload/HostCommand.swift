import ArgumentParser
import COffloadShim
import OffloadCore
import OffloadHost
import OffloadLink

#if canImport(Glibc)
import Glibc
#endif

struct HostCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "host",
        abstract: "Answer ARP and ICMP echo on a link until interrupted; print counters on exit.",
        discussion: """
            The TAP device is created by this command; move its kernel side into a namespace \
            and give it an address there, then ping this host's address from the namespace.
            """)

    @OptionGroup var options: HostOptions

    func run() throws {
        guard offload_stop_signals_install() == 0 else { throw RunError(message: "offload host: cannot install signal handlers") }
        do {
            switch options.link {
            case .tap(let name):
                let mode: TapLink.Mode = options.virtioNetHeader ? .virtioNetHeader : .plain
                let tap = try TapLink(name: name, mode: mode)
                let hardware = options.mac ?? MACAddress.local(UInt64(options.address.address.rawValue))
                print("offload host: \(options.address) (\(hardware)) on \(options.link)\(options.virtioNetHeader ? " with virtio-net header" : "")")
                try serve(tap, hardware: hardware, bufferSize: TapLink.requiredReceiveSpace(mode)) { $0.counters }
            case .packetSocket(let name):
                let socket = try PacketSocketLink(interface: name)
                let capabilities = socket.capabilities
                guard let hardware = options.mac ?? capabilities.address else {
                    throw ValidationError("\(name) has no MAC address; give one with --mac")
                }
                print("offload host: \(options.address) (\(hardware)) on \(options.link)")
                try serve(socket, hardware: hardware, bufferSize: capabilities.maxFrameSize) { $0.counters }
            }
        } catch let error as LinkError {
            throw RunError(message: "offload host: \(error)")
        }
    }

    /// Runs the host on `link` (wrapped in a capture when --pcap is given) and prints counters.
    private func serve<L: Link & ~Copyable>(
        _ link: consuming L, hardware: MACAddress, bufferSize: Int,
        linkCounters: (borrowing L) -> SystemLinkCounters
    ) throws {
        let host = IPv4Host(.init(interface: options.address, hardwareAddress: hardware, gateway: options.gateway))
        let clock = MonotonicClock()
        var loop = HostLoop(host: host, pool: BufferPool(count: 256, bufferSize: bufferSize, headroom: 0), clock: clock)
        let poller = try Poller()
        let deadline = options.duration.map { clock.now + .nanoseconds(Int64($0 * 1e9)) }
        let shouldStop = { offload_stop_requested() != 0 || deadline.map { clock.now >= $0 } ?? false }
        var counters: SystemLinkCounters
        if let pcap = options.pcap {
            let writer = try PcapFileWriter(path: pcap)
            var captured = CaptureLink(link, writer: writer, clock: clock,
                                       epochOffset: offload_realtime_ns() - offload_monotonic_ns())
            try loop.run(on: &captured, poller: poller, shouldStop: shouldStop)
            try writer.flush()
            counters = linkCounters(captured.inner)
            print("capture: \(writer.framesWritten) frames written to \(pcap)")
        } else {
            var link = link
            try loop.run(on: &link, poller: poller, shouldStop: shouldStop)
            counters = linkCounters(link)
        }
        print(host.counters.table)
        print(counters.table)
    }
}

/// An error that ends the command with one clear line and exit status 1.
struct RunError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
