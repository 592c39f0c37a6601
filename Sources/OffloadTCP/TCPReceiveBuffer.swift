/// In-order received data waiting for the application to read it: a ring of bytes
/// allocated once. Its free space is the receive window.
public struct TCPReceiveBuffer: Sendable {
    public let capacity: Int
    private var ring: [UInt8]
    private var head = 0
    public private(set) var count = 0

    public init(capacity: Int) {
        precondition(capacity > 0, "TCPReceiveBuffer: capacity must be positive")
        self.capacity = capacity
        ring = [UInt8](repeating: 0, count: capacity)
    }

    public var free: Int { capacity - count }
    public var isEmpty: Bool { count == 0 }

    /// Appends bytes (at most `free`).
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count <= free, "TCPReceiveBuffer: more than the window")
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        let at = (head + count) % capacity
        let first = min(bytes.count, capacity - at)
        ring.withUnsafeMutableBytes { ring in
            ring.baseAddress!.advanced(by: at).copyMemory(from: source, byteCount: first)
            if bytes.count > first {
                ring.baseAddress!.copyMemory(from: source.advanced(by: first), byteCount: bytes.count - first)
            }
        }
        count += bytes.count
    }

    /// Copies up to `buffer.count` bytes out, oldest first; returns how many.
    public mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var done = 0
        read(max: buffer.count) { piece in
            UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + piece.count)]).copyMemory(from: piece)
            done += piece.count
        }
        return done
    }

    /// Hands up to `max` bytes to `body` in one or two pieces (the ring wraps), then drops
    /// them; returns how many.
    @discardableResult
    public mutating func read(max: Int, _ body: (UnsafeRawBufferPointer) -> Void) -> Int {
        let n = min(max, count)
        guard n > 0 else { return 0 }
        let first = min(n, capacity - head)
        ring.withUnsafeBytes { ring in
            body(UnsafeRawBufferPointer(rebasing: ring[head..<(head + first)]))
            if n > first { body(UnsafeRawBufferPointer(rebasing: ring[0..<(n - first)])) }
        }
        head = (head + n) % capacity
        count -= n
        return n
    }
}
