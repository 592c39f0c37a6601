#if canImport(Glibc)
import Glibc
#endif
import OffloadCore

/// The bytes the demo sends, known to sender and receiver alike: one block of seeded
/// random bytes, and each stream (a TCP connection, a UDP flow) reads it from its own
/// starting point, so streams differ and a byte delivered to the wrong one is caught.
/// Checking is a `memcmp` against the block, cheap even in a debug build.
final class DemoPayload {
    /// A prime length, so that streams' starting points do not line up.
    static let length = 1_048_583
    private let block: UnsafeMutableRawBufferPointer

    init(seed: UInt64) {
        block = .allocate(byteCount: Self.length, alignment: 8)
        var random = SeededRandom(seed: seed ^ 0x7061_796c_6f61_6421)
        for i in 0..<Self.length { block[i] = UInt8(truncatingIfNeeded: random.next()) }
    }

    deinit { block.deallocate() }

    /// Stream `stream`'s bytes from `offset`, copied into `destination`.
    func fill(_ destination: UnsafeMutableRawBufferPointer, stream: Int, offset: Int) {
        var done = 0
        forEachPiece(stream: stream, offset: offset, count: destination.count) { piece in
            UnsafeMutableRawBufferPointer(rebasing: destination[done..<(done + piece.count)]).copyMemory(from: piece)
            done += piece.count
            return true
        }
    }

    /// Whether `bytes` are stream `stream`'s from `offset`.
    func matches(_ bytes: UnsafeRawBufferPointer, stream: Int, offset: Int) -> Bool {
        var done = 0
        return forEachPiece(stream: stream, offset: offset, count: bytes.count) { piece in
            defer { done += piece.count }
            return memcmp(piece.baseAddress!, bytes.baseAddress! + done, piece.count) == 0
        }
    }

    /// The block's pieces that make up `count` bytes of a stream from `offset` (the block
    /// wraps around); stops early when `body` returns false.
    @discardableResult
    private func forEachPiece(stream: Int, offset: Int, count: Int,
                              _ body: (UnsafeRawBufferPointer) -> Bool) -> Bool {
        var at = (offset &+ stream &* 7919) % Self.length
        var left = count
        while left > 0 {
            let n = min(left, Self.length - at)
            guard body(UnsafeRawBufferPointer(rebasing: block[at..<(at + n)])) else { return false }
            left -= n
            at = 0
        }
        return true
    }
}
