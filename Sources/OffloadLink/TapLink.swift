#if os(Linux)
import Glibc
import COffloadShim
import OffloadCore
import OffloadWire

/// A Linux TAP device: this process is the wire, the kernel's interface of the same name is
/// the other host. Frames written here arrive at that interface; frames it sends are read here.
///
/// The device is created by `init` (not persistent: it disappears when the link is
/// dropped, wherever its kernel side was moved) and is non-blocking. Wait for frames by
/// polling `capabilities.readinessDescriptor` (see `Poller`).
///
/// Two modes:
/// - `.plain`: bare Ethernet frames. A frame sent with a partial checksum has it finished in
///   software (the 16-bit field is replaced in the gather list, nothing is copied); a TSO
///   super-frame is `LinkError.unsupportedOffload`. Received frames are complete.
/// - `.virtioNetHeader`: every frame carries the 10-byte virtio-net header, with checksum
///   and TSO4 offload on (`TUN_F_CSUM|TUN_F_TSO4`). Frames from the kernel may carry partial
///   TCP/UDP checksums and TCP super-frames of up to 64 KiB, described by `buffer.offload`;
///   frames sent may do the same. Receive buffers must hold `requiredReceiveSpace(.virtioNetHeader)`.
public struct TapLink: ~Copyable, Link {
    public enum Mode: Sendable, Equatable {
        case plain
        case virtioNetHeader
    }

    /// Largest frame in each mode: MTU 1500 plus Ethernet header and a VLAN tag; or a 64 KiB
    /// TSO super-frame plus the Ethernet header.
    public static func maxFrameSize(_ mode: Mode) -> Int {
        mode == .plain ? 1518 : 65536 + 14
    }

    /// Bytes a pool buffer must have after its headroom to receive in `mode`.
    public static func requiredReceiveSpace(_ mode: Mode) -> Int { maxFrameSize(mode) }

    /// The device's name (the kernel interface's name).
    public let name: String
    public let mode: Mode
    public let capabilities: LinkCapabilities
    /// Frames and bytes in and out, drops by reason.
    public private(set) var counters = SystemLinkCounters()
    private var io: FrameIO

    /// The TAP's descriptor (also `capabilities.readinessDescriptor`).
    public var descriptor: Int32 { io.descriptor }

    /// Creates the TAP device `name` (at most 15 bytes). A name held by another open TAP
    /// (in this or another process) fails with EBUSY; a name used by an interface of another
    /// kind fails too. Needs CAP_NET_ADMIN. `mtu` sets the device's MTU (the kernel's side
    /// sends and takes packets up to it); a plain TAP's frames hold at most 1500.
    public init(name: String, mode: Mode = .plain, mtu: Int? = nil) throws(LinkError) {
        if let mtu, !(68...(mode == .plain ? Self.maxFrameSize(.plain) - 18 : 65_535)).contains(mtu) {
            throw .configuration("TAP \(name): an MTU of \(mtu) is out of range (68 to \(mode == .plain ? 1500 : 65_535))")
        }
        var actual = [CChar](repeating: 0, count: 16)
        let fd = offload_tap_open(name, mode == .virtioNetHeader ? 1 : 0, &actual)
        guard fd >= 0 else {
            let code = -fd
            var subject = "TAP \(name)"
            if code == EBUSY { subject += " (the name is held by another open TAP device)" }
            if code == EINVAL {
                subject += name.utf8.count > 15 || name.isEmpty
                    ? " (a name is 1 to 15 bytes)" : " (an interface of another kind may have this name)"
            }
            if code == EPERM || code == EACCES { subject += " (needs CAP_NET_ADMIN)" }
            throw SystemCall.error("open TAP", code, subject)
        }
        let hardware = actual.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var raw: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0)
        let rc = withUnsafeMutableBytes(of: &raw) {
            offload_tap_hardware_address(fd, $0.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        if let mtu {
            let rc = offload_interface_set_mtu(hardware, Int32(mtu))
            guard rc == 0 else {
                SystemCall.close(fd)
                throw SystemCall.error("set the MTU of", -rc, "TAP \(hardware)")
            }
        }
        self.name = hardware
        self.mode = mode
        // A new TAP's MTU is the kernel's default (1500), unless it was there before, set up.
        let mtu = offload_interface_mtu(hardware)
        self.capabilities = LinkCapabilities(
            maxFrameSize: Self.maxFrameSize(mode),
            partialChecksums: mode == .virtioNetHeader,
            tcpSegmentation: mode == .virtioNetHeader,
            readinessDescriptor: fd,
            address: rc == 0 ? MACAddress(raw.0, raw.1, raw.2, raw.3, raw.4, raw.5) : nil,
            // A plain TAP takes frames of its fixed size, whatever the interface says.
            mtu: min(mtu > 0 ? Int(mtu) : 1500, mode == .plain ? Self.maxFrameSize(.plain) - 18 : .max))
        io = FrameIO(descriptor: fd, source: .device, virtioNetHeader: mode == .virtioNetHeader)
    }

    deinit { SystemCall.close(io.descriptor) }

    /// Reads up to `max` frames (fewer when the device runs dry or the pool is empty). In
    /// virtio-net mode each buffer's `offload` tells what the kernel left unfinished; a frame
    /// whose header cannot be honoured is dropped and counted. Throws when the pool's
    /// buffers are smaller than `requiredReceiveSpace(mode)`.
    public mutating func receive(
        into pool: BufferPool, max: Int, _ body: (consuming PacketBuffer) -> Void
    ) throws(LinkError) -> Int {
        try io.receive(into: pool, max: max, minimumSpace: Self.requiredReceiveSpace(mode),
                       counters: &counters, body)
    }

    /// Writes one frame with one `writev` (see the type's documentation for metadata).
    public mutating func transmit(
        header: UnsafeRawBufferPointer, payloads: PayloadSlices, metadata: OffloadMetadata
    ) throws(LinkError) {
        try io.transmit(header: header, payloads: payloads, metadata: metadata,
                        maxFrameSize: capabilities.maxFrameSize, counters: &counters)
    }
}
#endif
