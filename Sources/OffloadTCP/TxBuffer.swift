/// Application memory handed to the stack by `send`: the stack keeps it, uncopied, until the
/// peer has acknowledged all of it, then hands it back with the completion (T7). Being
/// `~Copyable`, the application cannot touch it in between: it has given it away.
public struct TxBuffer: ~Copyable, @unchecked Sendable {
    /// The first byte.
    public let baseAddress: UnsafeMutableRawPointer
    public let count: Int
    private let release: Release

    /// Who frees the memory when the buffer's last owner drops it.
    public enum Release: Sendable {
        /// Allocated by `TxBuffer` itself: freed with it.
        case deallocate
        /// Memory the application manages (a file mapping, a slab of its own): not freed.
        case unowned
    }

    /// A buffer of `count` bytes, zeroed, for the application to fill. (An empty one is
    /// refused by `send`, as `emptyMessage`.)
    public init(count: Int) {
        precondition(count >= 0, "TxBuffer: count cannot be negative")
        baseAddress = .allocate(byteCount: count, alignment: 64)
        baseAddress.initializeMemory(as: UInt8.self, repeating: 0, count: count)
        self.count = count
        release = .deallocate
    }

    /// A buffer holding a copy of `bytes`.
    public init(copying bytes: some Collection<UInt8>) {
        self.init(count: bytes.count)
        UnsafeMutableRawBufferPointer(start: baseAddress, count: count).copyBytes(from: bytes)
    }

    /// Memory the application owns and keeps alive until the completion returns this.
    public init(unowned baseAddress: UnsafeMutableRawPointer, count: Int) {
        precondition(count >= 0, "TxBuffer: count cannot be negative")
        self.baseAddress = baseAddress
        self.count = count
        release = .unowned
    }

    deinit {
        if case .deallocate = release { baseAddress.deallocate() }
    }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: baseAddress, count: count) }

    /// Fills or refills the buffer (only while the application owns it).
    public mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeMutableRawBufferPointer(start: baseAddress, count: count))
    }
}
