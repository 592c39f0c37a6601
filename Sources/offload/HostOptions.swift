import ArgumentParser
import OffloadCore

/// The options every command with a host on a link takes: `host`, `serve`, `send`.
struct HostOptions: ParsableArguments {
    @Option(help: "The link: tap:NAME (created here) or afpacket:IFNAME (an existing interface).")
    var link: LinkSpec

    @Option(help: "This host's address and prefix, e.g. 10.0.0.2/24.")
    var address: IPv4CIDR

    @Option(help: "This host's MAC address (default: made from the IP address on TAP, the interface's own on afpacket).")
    var mac: MACAddress?

    @Option(help: "Next hop for addresses outside the prefix.")
    var gateway: IPv4Address?

    @Flag(help: "TAP only: use the virtio-net header, with checksum and TCP segmentation offload (TSO) both ways; offloaded connections then send super-segments of up to 64 KiB.")
    var virtioNetHeader = false

    @Option(help: "Write every frame received and sent to this pcap file.")
    var pcap: String?

    @Option(help: "Stop after this many seconds (default: when the work is done, or on SIGINT or SIGTERM).")
    var duration: Double?

    func validate() throws {
        try OptionChecks.seconds(duration, "--duration")
        if case .packetSocket = link, virtioNetHeader {
            throw ValidationError("--virtio-net-header is for tap: links (a packet socket on a veth takes it by itself)")
        }
    }
}
