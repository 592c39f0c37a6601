import OffloadCore

/// Something that moves Ethernet frames: a TAP device, a packet socket, one end of a
/// memory wire, a pcap file. Capture and impairment wrap any link.
///
/// Receive is by bursts into pool buffers; transmit is a gather list (headers from engine
/// memory, then payload slices from wherever the payload lives).
public protocol Link: ~Copyable, SendableMetatype {
    /// What the link can carry and how to wait for it.
    var capabilities: LinkCapabilities { get }

    /// Receives up to `max` frames, each into a buffer taken from `pool`, and hands each to
    /// `body` in arrival order. Returns how many were received: 0 when nothing is waiting
    /// (or the pool is empty: the frames wait in the link). Never blocks.
    mutating func receive(
        into pool: BufferPool, max: Int, _ body: (consuming PacketBuffer) -> Void
    ) throws(LinkError) -> Int

    /// `receive(into:max:_:)` for a caller that keeps the burst (the engine): the frames go
    /// to `burst[0..<n]`, initialized, in arrival order, and n is returned. A link may fill
    /// the burst in one pass (a memory wire does); the default hands each frame on. It
    /// throws only when no frame came: an error after some is left for the next call.
    mutating func receive(
        into pool: BufferPool, max: Int, burst: UnsafeMutablePointer<PacketBuffer>
    ) throws(LinkError) -> Int

    /// Sends one frame: `header`, then each payload slice in order, as one frame on the wire.
    /// `metadata` says what offload work is left for the device (only where `capabilities`
    /// allow it). Never blocks: a full device is `LinkError.wouldBlock`.
    mutating func transmit(
        header: UnsafeRawBufferPointer, payloads: PayloadSlices, metadata: OffloadMetadata
    ) throws(LinkError)

    /// From here until `endBatch`, the link may hold frames it is given and send them
    /// together (a packet socket: one `sendmmsg`), in order. Outside a batch every frame
    /// leaves when `transmit` returns. A wrapper passes both calls on to the link it wraps.
    mutating func beginBatch()

    /// Sends whatever the batch holds and ends it.
    mutating func endBatch()

    /// The link's MTU now, where it can change after the link was opened (an interface's,
    /// set with `ip link`); nil when it cannot or cannot be read (`capabilities.mtu` holds).
    /// Asked once a second, never per frame. A wrapper passes it on.
    mutating func currentMTU() -> Int?
}

extension Link where Self: ~Copyable {
    /// Links that send each frame at once have no batch.
    @inlinable public mutating func beginBatch() {}
    @inlinable public mutating func endBatch() {}
    /// Links whose MTU is fixed.
    public mutating func currentMTU() -> Int? { nil }

    @inlinable
    public mutating func receive(
        into pool: BufferPool, max: Int, burst: UnsafeMutablePointer<PacketBuffer>
    ) throws(LinkError) -> Int {
        var n = 0
        do {
            return try receive(into: pool, max: max) { buffer in
                (burst + n).initialize(to: buffer)
                n &+= 1
            }
        } catch {
            // Frames in the burst already are the caller's to take: thrown away with the
            // error, their buffers would never return to the pool.
            guard n > 0 else { throw error }
            return n
        }
    }

    /// Sends the whole buffer as one frame, with its offload metadata.
    @inlinable
    public mutating func transmit(_ frame: borrowing PacketBuffer) throws(LinkError) {
        try transmit(header: frame.bytes, payloads: .none, metadata: frame.offload)
    }

    /// Sends bytes as one finished frame.
    @inlinable
    public mutating func transmit(_ frame: UnsafeRawBufferPointer) throws(LinkError) {
        try transmit(header: frame, payloads: .none, metadata: .none)
    }
}

/// The payload part of a gather list: slices of memory that follow the header on the wire.
/// It borrows the memory of its slices and of the slice list; it owns nothing.
public struct PayloadSlices {
    public let slices: UnsafeBufferPointer<UnsafeRawBufferPointer>

    @inlinable
    public init(_ slices: UnsafeBufferPointer<UnsafeRawBufferPointer>) { self.slices = slices }

    /// No payload: the header is the whole frame.
    @inlinable
    public static var none: PayloadSlices { PayloadSlices(UnsafeBufferPointer(start: nil, count: 0)) }

    /// Total payload bytes.
    @inlinable
    public var byteCount: Int {
        var n = 0
        for s in slices { n &+= s.count }
        return n
    }

    @inlinable public var isEmpty: Bool { slices.isEmpty }
}

/// What a link can do.
public struct LinkCapabilities: Sendable, Equatable {
    /// Largest frame the link takes or gives, Ethernet header included (a TSO link: 64 KiB and more).
    public var maxFrameSize: Int
    /// The link accepts and delivers frames with partial checksums.
    public var partialChecksums: Bool
    /// The link accepts and delivers TCP super-frames (TSO/GSO) over IPv4.
    public var tcpSegmentation: Bool
    /// A descriptor that becomes readable when frames are waiting, for poll/epoll; nil for
    /// links that are polled only (memory, pcap).
    public var readinessDescriptor: Int32?
    /// The link's own hardware address, where it has one.
    public var address: MACAddress?
    /// The largest IPv4 packet the link sends as one frame: its interface's MTU (a TCP
    /// super-frame may be larger; each segment it is cut into may not). By default, what
    /// fits `maxFrameSize` behind an Ethernet header.
    public var mtu: Int

    public init(maxFrameSize: Int, partialChecksums: Bool = false, tcpSegmentation: Bool = false,
                readinessDescriptor: Int32? = nil, address: MACAddress? = nil, mtu: Int? = nil) {
        self.maxFrameSize = maxFrameSize
        self.partialChecksums = partialChecksums
        self.tcpSegmentation = tcpSegmentation
        self.readinessDescriptor = readinessDescriptor
        self.address = address
        // RFC 791: every link takes 68 bytes (and the software reads headers that long).
        self.mtu = max(68, mtu ?? maxFrameSize - 14)
    }
}

/// Why a link operation failed.
public enum LinkError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The device is full for now; try again after waiting.
    case wouldBlock
    /// The frame is larger than the link carries.
    case frameTooLarge(size: Int, max: Int)
    /// The frame carries offload metadata the link cannot pass on.
    case unsupportedOffload(String)
    /// The other end is gone, or the file ended.
    case closed
    /// A system call failed: which one, on what, and errno.
    case system(operation: String, errno: Int32, detail: String)
    /// The link was asked to do something its set-up cannot (a pool too small for its frames).
    case configuration(String)
    /// A file is not what it should be (a pcap file with a bad header, a truncated record).
    case badFile(String)

    public var description: String {
        switch self {
        case .wouldBlock: return "the link is busy; try again"
        case .frameTooLarge(let s, let m): return "frame of \(s) bytes is larger than the link's \(m)"
        case .unsupportedOffload(let what): return "the link cannot carry \(what)"
        case .closed: return "the link is closed"
        case .system(let op, let e, let detail): return "\(op) failed: \(detail) (errno \(e))"
        case .configuration(let why): return why
        case .badFile(let why): return why
        }
    }
}
