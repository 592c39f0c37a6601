import OffloadCore

/// One end of an in-memory wire between two stacks in the same process.
///
/// The wire is a wire: `transmit` copies the frame (header and payload slices) into the
/// wire's own preallocated frame slots, as a cable would carry bytes; `receive` copies it
/// into a pool buffer on the other side once its delivery time has come. Offload metadata
/// crosses with the frame when the wire is made with `carriesOffloadMetadata` (two of our
/// own stacks, like two virtio peers); otherwise a partial checksum is finished on the way
/// and a TSO super-frame is refused.
///
/// Not thread-safe: both ends belong to one thread (the simulator's or one poll loop's).
public struct MemoryLink: Link {
    @usableFromInline let wire: MemoryWire
    /// 0 transmits on direction 0 and receives from 1; 1 the other way round.
    @usableFromInline let side: Int
    /// The wire's directions this end sends on and receives from (kept alive by `wire`).
    @usableFromInline let outgoing: UnsafeMutablePointer<MemoryWireDirection>
    @usableFromInline let incoming: UnsafeMutablePointer<MemoryWireDirection>

    init(wire: MemoryWire, side: Int) {
        self.wire = wire
        self.side = side
        outgoing = wire.directions + side
        incoming = wire.directions + (1 - side)
    }

    /// A connected pair of ends. `forward` applies to frames from the first end to the
    /// second, `backward` to the other direction.
    public static func pair(
        clock: any Clock, seed: UInt64, forward: Impairments = .none, backward: Impairments = .none,
        maxFrameSize: Int = 2048, framesInFlight: Int = 1024, carriesOffloadMetadata: Bool = false,
        addresses: (MACAddress, MACAddress)? = nil
    ) -> (MemoryLink, MemoryLink) {
        let wire = MemoryWire(
            clock: clock, seed: seed, impairments: [forward, backward], maxFrameSize: maxFrameSize,
            framesInFlight: framesInFlight, carriesOffloadMetadata: carriesOffloadMetadata,
            addresses: addresses)
        return (MemoryLink(wire: wire, side: 0), MemoryLink(wire: wire, side: 1))
    }

    public var capabilities: LinkCapabilities {
        LinkCapabilities(
            maxFrameSize: wire.maxFrameSize, partialChecksums: wire.carriesOffloadMetadata,
            tcpSegmentation: wire.carriesOffloadMetadata, readinessDescriptor: nil,
            address: wire.addresses.map { side == 0 ? $0.0 : $0.1 }, mtu: wire.mtu)
    }

    /// Sets the MTU both ends report from now on, as `ip link set … mtu` does to an
    /// interface (for tests of what follows it). The wire still carries frames up to its
    /// `maxFrameSize`.
    public func setMTU(_ mtu: Int) { wire.mtu = mtu }

    public func currentMTU() -> Int? { wire.mtu }

    /// Calls `witness` with every payload slice a frame sent from this end is gathered from
    /// (the memory the sender handed over, before the wire copies it); nil stops it.
    public func witnessPayloads(_ witness: ((UnsafeRawBufferPointer) -> Void)?) {
        outgoing.pointee.payloadWitness = witness
    }

    /// What happened to frames sent from this end.
    public var sentCounters: MemoryWireCounters { outgoing.pointee.counters }
    /// What happened to frames sent to this end.
    public var receivedCounters: MemoryWireCounters { incoming.pointee.counters }
    /// Frames on their way to this end.
    public var framesWaiting: Int { incoming.pointee.inFlight }
    /// When the next frame for this end can be received, if any is on its way.
    public var nextDelivery: Instant? { incoming.pointee.nextDelivery }

    // Inlinable, with the clock read only where an impairment depends on time: a perfect
    // wire costs no call per frame.
    @inlinable
    public mutating func receive(
        into pool: BufferPool, max: Int, _ body: (consuming PacketBuffer) -> Void
    ) throws(LinkError) -> Int {
        incoming.pointee.receive(into: pool, max: max, now: incoming.pointee.usesTime ? wire.now : .zero, body)
    }

    @inlinable
    public mutating func receive(
        into pool: BufferPool, max: Int, burst: UnsafeMutablePointer<PacketBuffer>
    ) throws(LinkError) -> Int {
        incoming.pointee.receive(into: pool, max: max, now: incoming.pointee.usesTime ? wire.now : .zero, burst: burst)
    }

    @inlinable
    public mutating func transmit(
        header: UnsafeRawBufferPointer, payloads: PayloadSlices, metadata: OffloadMetadata
    ) throws(LinkError) {
        try outgoing.pointee.transmit(
            header: header, payloads: payloads, metadata: metadata, now: outgoing.pointee.usesTime ? wire.now : .zero,
            carriesMetadata: wire.carriesOffloadMetadata)
    }

    /// Sends one finished frame without copying it now: the wire keeps a reference to the
    /// sender's bytes, and the receiving end's `receive` copies them straight into its pool
    /// buffer, as a device reads a frame from host memory when it sends it. The bytes must
    /// stay valid and unchanged until the frame has been received or discarded, or the wire
    /// is gone. A wire with impairments copies the frame now, as `transmit` does.
    @inlinable @inline(__always)
    public mutating func transmit(lending frame: UnsafeRawBufferPointer) throws(LinkError) {
        guard outgoing.pointee.isPerfect, let bytes = frame.baseAddress else { return try transmit(frame) }
        try outgoing.pointee.transmit(lending: bytes, count: frame.count)
    }

    /// Takes up to `max` frames waiting for this end and drops them unread (counted as
    /// delivered): what a receiver that drops everything does, without the copy into a
    /// pool buffer that `receive` makes. Returns how many.
    @inlinable
    public mutating func discard(max: Int) -> Int {
        incoming.pointee.discard(max: max, now: incoming.pointee.usesTime ? wire.now : .zero)
    }
}

/// The wire itself: two directions and the clock they share.
@usableFromInline
final class MemoryWire {
    let clock: any Clock
    let maxFrameSize: Int
    /// Set by `MemoryLink.setMTU`; nil: the frame size less the Ethernet header.
    var mtu: Int?
    @usableFromInline let carriesOffloadMetadata: Bool
    let addresses: (MACAddress, MACAddress)?
    /// Both directions at a fixed address: mutated in place on every frame, never copied.
    @usableFromInline let directions: UnsafeMutablePointer<MemoryWireDirection>

    init(clock: any Clock, seed: UInt64, impairments: [Impairments], maxFrameSize: Int,
         framesInFlight: Int, carriesOffloadMetadata: Bool, addresses: (MACAddress, MACAddress)?) {
        self.clock = clock
        self.maxFrameSize = maxFrameSize
        self.carriesOffloadMetadata = carriesOffloadMetadata
        self.addresses = addresses
        var random = SeededRandom(seed: seed)
        directions = .allocate(capacity: impairments.count)
        for (i, impairment) in impairments.enumerated() {
            (directions + i).initialize(to: MemoryWireDirection(
                impairments: impairment, random: random.fork(), maxFrameSize: maxFrameSize, slots: framesInFlight))
        }
        directionCount = impairments.count
    }

    private let directionCount: Int

    @usableFromInline var now: Instant { clock.now }

    deinit {
        for i in 0..<directionCount { directions[i].deallocate() }
        directions.deinitialize(count: directionCount)
        directions.deallocate()
    }
}
