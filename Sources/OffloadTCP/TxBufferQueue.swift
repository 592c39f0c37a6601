/// The buffers of one socket's messages, oldest first, from `send` to completion: a ring
/// of `~Copyable` values (Swift's collections cannot hold them).
struct TxBufferQueue: ~Copyable {
    private var storage: UnsafeMutablePointer<TxBuffer>
    private var capacity: Int
    private var head = 0
    private(set) var count = 0
    /// Bytes of all the buffers held.
    private(set) var byteCount = 0

    init(capacity: Int = 16) {
        self.capacity = capacity
        storage = .allocate(capacity: capacity)
    }

    deinit {
        for i in 0..<count { (storage + (head + i) % capacity).deinitialize(count: 1) }
        storage.deallocate()
    }

    var isEmpty: Bool { count == 0 }

    mutating func append(_ buffer: consuming TxBuffer) {
        if count == capacity { grow() }
        byteCount += buffer.bytes.count
        (storage + (head + count) % capacity).initialize(to: buffer)
        count += 1
    }

    mutating func removeFirst() -> TxBuffer? {
        guard count > 0 else { return nil }
        let buffer = (storage + head).move()
        head = (head + 1) % capacity
        count -= 1
        byteCount -= buffer.bytes.count
        return buffer
    }

    /// The memory of the buffer `index` places after the oldest.
    func bytes(at index: Int) -> UnsafeRawBufferPointer {
        precondition(index >= 0 && index < count, "TxBufferQueue: no buffer at \(index)")
        return storage[(head + index) % capacity].bytes
    }

    private mutating func grow() {
        let larger = UnsafeMutablePointer<TxBuffer>.allocate(capacity: capacity * 2)
        for i in 0..<count { (larger + i).moveInitialize(from: storage + (head + i) % capacity, count: 1) }
        storage.deallocate()
        storage = larger
        capacity *= 2
        head = 0
    }
}
