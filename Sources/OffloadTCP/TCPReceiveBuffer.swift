import Synchronization

/// In-order received data waiting for the application to read it: a ring of bytes
/// allocated once. Its free space is the receive window.
///
/// The connection's input writes it and the application reads it, and for an offloaded
/// connection on an engine of its own these are two threads (the engine's and the host's):
/// the ring is single-producer single-consumer, like `SPSCRing`. Each side owns one running
/// total; a total is stored (releasing) only after the bytes it covers are written or read,
/// so the other side, loading it (acquiring), never sees a byte before it is there. The
/// peer's FIN is marked in the ring the same way, after the last byte before it.
public final class TCPReceiveBuffer: @unchecked Sendable {
    // Unchecked: safe under the one-writer, one-reader rule above; `storage` is touched only
    // in the bytes each side's totals give it.
    public let capacity: Int
    private let storage: UnsafeMutableRawPointer
    /// Bytes ever appended (written by the producer).
    private let appended = Atomic<Int>(0)
    /// Bytes ever read (written by the consumer).
    private let consumed = Atomic<Int>(0)
    /// The peer's FIN came, in order, after every appended byte.
    private let ended = Atomic<Bool>(false)

    public init(capacity: Int) {
        precondition(capacity > 0, "TCPReceiveBuffer: capacity must be positive")
        self.capacity = capacity
        storage = .allocate(byteCount: capacity, alignment: 64)
    }

    deinit { storage.deallocate() }

    /// Bytes waiting to be read.
    public var count: Int { appended.load(ordering: .acquiring) &- consumed.load(ordering: .acquiring) }
    public var free: Int { capacity - count }
    public var isEmpty: Bool { count == 0 }

    /// Producer: appends bytes (at most `free`).
    public func append(_ bytes: UnsafeRawBufferPointer) {
        let total = appended.load(ordering: .relaxed)
        precondition(bytes.count <= capacity - (total &- consumed.load(ordering: .acquiring)),
                     "TCPReceiveBuffer: more than the window")
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        let at = total % capacity
        let first = min(bytes.count, capacity - at)
        (storage + at).copyMemory(from: source, byteCount: first)
        if bytes.count > first { storage.copyMemory(from: source + first, byteCount: bytes.count - first) }
        appended.store(total &+ bytes.count, ordering: .releasing)
    }

    /// Producer: the peer's FIN follows the bytes appended so far; nothing more comes.
    public func markEnd() { ended.store(true, ordering: .releasing) }

    /// The peer's FIN came and every byte before it has been read.
    public var isAtEnd: Bool { ended.load(ordering: .acquiring) && isEmpty }

    /// The peer's FIN came (bytes before it may still wait).
    public var hasEnd: Bool { ended.load(ordering: .acquiring) }

    /// Consumer: copies up to `buffer.count` bytes out, oldest first; returns how many.
    public func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var done = 0
        read(max: buffer.count) { piece in
            UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + piece.count)]).copyMemory(from: piece)
            done += piece.count
        }
        return done
    }

    /// Consumer: hands up to `max` bytes to `body` in one or two pieces (the ring wraps),
    /// then drops them; returns how many.
    @discardableResult
    public func read(max: Int, _ body: (UnsafeRawBufferPointer) -> Void) -> Int {
        let total = consumed.load(ordering: .relaxed)
        let n = min(max, appended.load(ordering: .acquiring) &- total)
        guard n > 0 else { return 0 }
        let at = total % capacity
        let first = min(n, capacity - at)
        body(UnsafeRawBufferPointer(start: storage + at, count: first))
        if n > first { body(UnsafeRawBufferPointer(start: storage, count: n - first)) }
        consumed.store(total &+ n, ordering: .releasing)
        return n
    }
}
