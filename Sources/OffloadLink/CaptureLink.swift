import OffloadCore

/// Any link, with every frame it receives and transmits written to a pcap file, as it is on
/// the wire (partial checksums finished in the written copy).
public struct CaptureLink<Inner: Link & ~Copyable>: ~Copyable, Link {
    public var inner: Inner
    public let writer: PcapFileWriter
    private let clock: any Clock
    private let epochOffset: Int64

    /// - Parameters:
    ///   - clock: time stamps come from here, read once per burst;
    ///   - epochOffset: nanoseconds added to the clock's time to make wall-clock time (0 for
    ///     a virtual clock: a simulated run then starts at 1970 and is reproducible).
    public init(_ inner: consuming Inner, writer: PcapFileWriter, clock: any Clock, epochOffset: Int64 = 0) {
        self.inner = inner
        self.writer = writer
        self.clock = clock
        self.epochOffset = epochOffset
    }

    public var capabilities: LinkCapabilities { inner.capabilities }

    public mutating func receive(
        into pool: BufferPool, max: Int, _ body: (consuming PacketBuffer) -> Void
    ) throws(LinkError) -> Int {
        let stamp = clock.now.nanoseconds &+ epochOffset
        let writer = self.writer
        return try inner.receive(into: pool, max: max) { buffer in
            writer.write(header: buffer.bytes, payloads: .none, metadata: buffer.offload, nanoseconds: stamp)
            body(buffer)
        }
    }

    public mutating func transmit(
        header: UnsafeRawBufferPointer, payloads: PayloadSlices, metadata: OffloadMetadata
    ) throws(LinkError) {
        try inner.transmit(header: header, payloads: payloads, metadata: metadata)
        writer.write(header: header, payloads: payloads, metadata: metadata,
                     nanoseconds: clock.now.nanoseconds &+ epochOffset)
    }

    public mutating func beginBatch() { inner.beginBatch() }

    public mutating func endBatch() { inner.endBatch() }

    public mutating func currentMTU() -> Int? { inner.currentMTU() }
}
