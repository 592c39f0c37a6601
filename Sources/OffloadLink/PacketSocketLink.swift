#if os(Linux)
import Glibc
import COffloadShim
import OffloadCore
import OffloadWire

/// An AF_PACKET raw socket bound to an existing interface (a veth end, a NIC): every frame
/// the interface receives is read here, and frames written here leave through it. Frames
/// this host itself sends on the interface are not read back (PACKET_IGNORE_OUTGOING).
///
/// With `virtioNetHeader` (the default) the socket uses PACKET_VNET_HDR: frames from Linux
/// that still carry a partial checksum (veth checksum offload) or are GSO super-frames (up
/// to 64 KiB) arrive as such in `buffer.offload`, and frames sent may carry the same
/// metadata. Without it, received frames are what the kernel holds, which on a veth may be
/// unfinished (turn checksum and segmentation offload off on the sender with `ethtool -K`),
/// and sent partial checksums are finished in software (TSO is refused), as on a plain TAP.
///
/// Kernel drops (receive buffer overflow) are in `kernelDrops` after `updateKernelStatistics()`.
public struct PacketSocketLink: ~Copyable, Link {
    /// The default receive buffer: 8 MiB, enough for TCP bursts at tens of Gbit/s between
    /// two polls (the kernel default of 208 KiB overflows). The receive ring gets as many
    /// bytes of slots; the buffer then holds the frames too large for a slot.
    public static let defaultReceiveBufferBytes = 8 << 20

    public let interface: String
    public let interfaceIndex: Int32
    public let virtioNetHeader: Bool
    public let capabilities: LinkCapabilities
    /// The receive buffer the kernel granted (it reports twice the bytes asked for).
    public let receiveBufferBytes: Int
    /// Slots of the receive ring (PACKET_RX_RING), 0 without one. The kernel copies each
    /// frame into the next slot, and a poll takes frames from there without a system call;
    /// a frame larger than a slot (a GSO super-frame) waits in the receive buffer, in order.
    public let receiveRingFrames: Int
    /// Frames and bytes in and out, drops by reason (`drops.kernelBuffer` = `kernelDrops`).
    public private(set) var counters = SystemLinkCounters()
    /// Frames the kernel saw for this socket and frames it dropped for want of buffer space,
    /// accumulated over every `updateKernelStatistics()` (the kernel resets its own on read).
    public private(set) var kernelPackets: UInt64 = 0
    public private(set) var kernelDrops: UInt64 = 0
    private var io: FrameIO
    private let minimumReceiveSpace: Int

    /// The socket's descriptor (also `capabilities.readinessDescriptor`).
    public var descriptor: Int32 { io.descriptor }

    /// An interface's MAC address by name, nil when it has none (or does not exist).
    public static func hardwareAddress(of interface: String) -> MACAddress? {
        SystemCall.hardwareAddress(interface: interface)
    }

    /// Opens the socket on `interface` (which must exist in this namespace; ENODEV if not).
    /// Needs CAP_NET_RAW (and CAP_NET_ADMIN for a receive buffer above the system maximum).
    public init(
        interface: String, virtioNetHeader: Bool = true,
        receiveBufferBytes: Int = PacketSocketLink.defaultReceiveBufferBytes, receiveRing: Bool = true
    ) throws(LinkError) {
        var index: Int32 = 0
        let requested = Int32(clamping: receiveBufferBytes)
        let read = offload_interface_mtu(interface)
        let mtu = read > 0 ? Int(read) : 1500
        var ring: OpaquePointer?
        // A slot holds the kernel's header, the virtio-net header and a frame of the MTU
        // (with room for a VLAN tag), the kernel's alignment between them.
        let slot = receiveRing ? UInt32(mtu + 18 + 128) : 0
        let fd = offload_packet_socket_open(interface, virtioNetHeader ? 1 : 0, requested, slot, &ring, &index)
        guard fd >= 0 else {
            let code = -fd
            var subject = "interface \(interface)"
            if code == ENODEV { subject += " (no such interface in this network namespace)" }
            if code == EPERM || code == EACCES { subject += " (needs CAP_NET_RAW)" }
            throw SystemCall.error("open packet socket", code, subject)
        }
        let plainMax = mtu + 18
        let maxFrame = virtioNetHeader ? 65536 + 14 : plainMax
        self.interface = interface
        self.interfaceIndex = index
        self.virtioNetHeader = virtioNetHeader
        self.receiveBufferBytes = Int(offload_socket_receive_buffer(fd))
        self.receiveRingFrames = ring.map { Int(offload_packet_ring_frames($0)) } ?? 0
        self.capabilities = LinkCapabilities(
            maxFrameSize: maxFrame,
            partialChecksums: virtioNetHeader,
            tcpSegmentation: virtioNetHeader,
            readinessDescriptor: fd,
            address: SystemCall.hardwareAddress(interface: interface),
            mtu: mtu)
        // Without the header a veth may still hand over GSO super-frames; those that do not
        // fit are counted as truncated.
        minimumReceiveSpace = maxFrame
        io = FrameIO(descriptor: fd, source: .socket, virtioNetHeader: virtioNetHeader, ring: ring)
    }

    deinit { SystemCall.close(io.descriptor) }

    /// Reads up to `max` frames from the receive ring, or with one `recvmmsg` without one
    /// (fewer when the pool has fewer buffers).
    /// Throws when the pool's buffers are smaller than `capabilities.maxFrameSize`.
    public mutating func receive(
        into pool: BufferPool, max: Int, _ body: (consuming PacketBuffer) -> Void
    ) throws(LinkError) -> Int {
        try io.receive(into: pool, max: max, minimumSpace: minimumReceiveSpace, counters: &counters, body)
    }

    /// Sends one frame with one `writev` on the bound socket.
    public mutating func transmit(
        header: UnsafeRawBufferPointer, payloads: PayloadSlices, metadata: OffloadMetadata
    ) throws(LinkError) {
        try io.transmit(header: header, payloads: payloads, metadata: metadata,
                        maxFrameSize: capabilities.maxFrameSize, counters: &counters)
    }

    /// Frames that fit 2 KiB and carry no payload slices of their own wait until `endBatch`
    /// and leave with one `sendmmsg`: a forwarding burst costs one system call, and the
    /// receivers it wakes take the core once, not after every frame.
    public mutating func beginBatch() { io.beginBatch() }

    public mutating func endBatch() { io.endBatch(counters: &counters) }

    /// The interface's MTU now (`ip link set … mtu` while the link is open), or nil when it
    /// cannot be read.
    public mutating func currentMTU() -> Int? {
        let mtu = offload_interface_mtu(interface)
        return mtu > 0 ? Int(mtu) : nil
    }

    /// Reads the kernel's PACKET_STATISTICS (which resets them) and adds them to
    /// `kernelPackets`, `kernelDrops` and `counters.drops.kernelBuffer`.
    public mutating func updateKernelStatistics() throws(LinkError) {
        var packets: UInt32 = 0
        var drops: UInt32 = 0
        try SystemCall.check(offload_packet_socket_statistics(io.descriptor, &packets, &drops),
                             "getsockopt(PACKET_STATISTICS)", "interface \(interface)")
        kernelPackets &+= UInt64(packets)
        kernelDrops &+= UInt64(drops)
        counters.drops.kernelBuffer = kernelDrops
    }
}
#endif
