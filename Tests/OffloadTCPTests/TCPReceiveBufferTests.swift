import Foundation
import Testing
import OffloadCore
import OffloadTCP

/// The receive buffer is a single-producer single-consumer byte ring: the connection's input
/// appends, the application reads, and for a connection offloaded to an engine on its own
/// thread these are two threads.
@Suite struct TCPReceiveBufferTests {
    @Test func bytesComeOutInOrderAcrossTheRingsEndAndTheEndFollowsTheLastByte() {
        let buffer = TCPReceiveBuffer(capacity: 10)
        let first: [UInt8] = [1, 2, 3, 4, 5, 6, 7], second: [UInt8] = [8, 9, 10, 11, 12, 13]
        first.withUnsafeBytes { buffer.append($0) }
        var out = [UInt8](repeating: 0, count: 5)
        #expect(out.withUnsafeMutableBytes { buffer.read(into: $0) } == 5 && out == [1, 2, 3, 4, 5])
        second.withUnsafeBytes { buffer.append($0) } // wraps past the end
        #expect(buffer.count == 8 && buffer.free == 2)
        buffer.markEnd()
        #expect(buffer.hasEnd && !buffer.isAtEnd, "the end waits for the bytes before it")
        var pieces: [[UInt8]] = []
        #expect(buffer.read(max: 100) { pieces.append(Array($0)) } == 8)
        #expect(pieces == [[6, 7, 8, 9, 10], [11, 12, 13]], "two pieces where the ring wraps")
        #expect(buffer.isAtEnd && buffer.isEmpty && buffer.free == 10)
    }

    /// One thread appends 8 MiB in chunks of random sizes through a 4 KiB ring while another
    /// reads it in chunks of other sizes: every byte arrives once, in order, and the end
    /// comes after the last one.
    @Test func twoThreadsPassEveryByteInOrder() {
        let buffer = TCPReceiveBuffer(capacity: 4096)
        let total = 8 << 20
        @Sendable func byte(_ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: i &* 31 &+ i >> 11) }
        let producer = Thread {
            var random = SeededRandom(seed: 1)
            var chunk = [UInt8](repeating: 0, count: 1500)
            var sent = 0
            while sent < total {
                let n = min(total - sent, 1 + Int(random.next() % 1500))
                while buffer.free < n { sched_yield() }
                for i in 0..<n { chunk[i] = byte(sent + i) }
                chunk.withUnsafeBytes { buffer.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                sent += n
            }
            buffer.markEnd()
        }
        producer.start()
        var random = SeededRandom(seed: 2)
        var received = 0, wrong = 0
        while !buffer.isAtEnd {
            let n = buffer.read(max: 1 + Int(random.next() % 3000)) { piece in
                for (i, b) in piece.enumerated() where b != byte(received + i) { wrong += 1 }
                received += piece.count
            }
            if n == 0 { sched_yield() }
        }
        #expect(received == total && wrong == 0, "received \(received) bytes, \(wrong) wrong")
    }
}
