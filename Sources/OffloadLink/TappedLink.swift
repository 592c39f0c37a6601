import OffloadCore

/// Any link, with every frame it receives and transmits shown to a tap: a capture, a
/// checker of what crosses a port (the demo's order witness), or both. A received frame is
/// shown before the engine has it; a transmitted one once the link has taken it (a frame
/// the link refuses is not shown). The tap sees the frame as the link has it: a gather
/// list, offload metadata not yet applied.
public struct TappedLink<Inner: Link & ~Copyable>: ~Copyable, Link {
    public enum Direction: Sendable { case received, transmitted }
    public typealias Tap = (Direction, _ header: UnsafeRawBufferPointer, PayloadSlices, OffloadMetadata) -> Void

    public var inner: Inner
    private let tap: Tap

    public init(_ inner: consuming Inner, tap: @escaping Tap) {
        self.inner = inner
        self.tap = tap
    }

    public var capabilities: LinkCapabilities { inner.capabilities }

    public mutating func receive(
        into pool: BufferPool, max: Int, _ body: (consuming PacketBuffer) -> Void
    ) throws(LinkError) -> Int {
        let tap = self.tap
        return try inner.receive(into: pool, max: max) { buffer in
            tap(.received, buffer.bytes, .none, buffer.offload)
            body(buffer)
        }
    }

    public mutating func transmit(
        header: UnsafeRawBufferPointer, payloads: PayloadSlices, metadata: OffloadMetadata
    ) throws(LinkError) {
        try inner.transmit(header: header, payloads: payloads, metadata: metadata)
        tap(.transmitted, header, payloads, metadata)
    }

    public mutating func beginBatch() { inner.beginBatch() }

    public mutating func endBatch() { inner.endBatch() }

    public mutating func currentMTU() -> Int? { inner.currentMTU() }
}
