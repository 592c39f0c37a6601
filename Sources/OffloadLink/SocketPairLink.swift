#if os(Linux)
import Glibc
import OffloadCore

/// Two links joined by a kernel socket pair (AF_UNIX, SOCK_SEQPACKET: one frame per
/// message, order kept). Unlike a memory wire its ends may live on different threads, and
/// each has a descriptor to wait on; it needs no privilege. For tests and examples that run
/// two stacks on their own threads in one process.
public struct SocketPairLink: ~Copyable, Link {
    public static let maxFrameSize = 1518
    public let capabilities: LinkCapabilities
    public private(set) var counters = SystemLinkCounters()
    private var io: FrameIO

    /// Takes over one end of `makePair()` (the link closes it).
    public init(adopting descriptor: Int32, address: MACAddress) {
        capabilities = LinkCapabilities(maxFrameSize: Self.maxFrameSize, partialChecksums: false, tcpSegmentation: false,
                                        readinessDescriptor: descriptor, address: address, mtu: 1500)
        io = FrameIO(descriptor: descriptor, source: .socket, virtioNetHeader: false)
    }

    deinit { SystemCall.close(io.descriptor) }

    /// The two descriptors of a connected pair, for `init(adopting:address:)` (a tuple
    /// cannot hold the links themselves: they are not copyable).
    public static func makePair() throws(LinkError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        let type = Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        guard socketpair(AF_UNIX, type, 0, &fds) == 0 else {
            throw SystemCall.error("socketpair", errno, "socket pair link")
        }
        for fd in fds {
            var size: Int32 = 4 << 20
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        return (fds[0], fds[1])
    }

    public mutating func receive(
        into pool: BufferPool, max: Int, _ body: (consuming PacketBuffer) -> Void
    ) throws(LinkError) -> Int {
        try io.receive(into: pool, max: max, minimumSpace: Self.maxFrameSize, counters: &counters, body)
    }

    public mutating func transmit(
        header: UnsafeRawBufferPointer, payloads: PayloadSlices, metadata: OffloadMetadata
    ) throws(LinkError) {
        try io.transmit(header: header, payloads: payloads, metadata: metadata, maxFrameSize: Self.maxFrameSize,
                        counters: &counters)
    }
}
#endif
