import Benchmark
import OffloadCore

/// Checksum, memcpy (the reference the checksum is held to) and pool take/return. Each
/// iteration is one buffer or one take/return; throughput in buffers/s, bytes in the name.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .mallocCountTotal, .instructions],
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 1_000_000)

    for size in [1500, 65536] {
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
        for i in 0..<size { source[i] = UInt8(truncatingIfNeeded: i &* 131) }
        let target = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)

        Benchmark("checksum \(size) B") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(InternetChecksum.checksum(UnsafeRawBufferPointer(source)))
            }
        }
        Benchmark("memcpy \(size) B (reference)") { benchmark in
            for _ in benchmark.scaledIterations {
                target.baseAddress!.copyMemory(from: source.baseAddress!, byteCount: size)
                blackHole(target.baseAddress!)
            }
        }
    }

    let pool = BufferPool(count: 4096, bufferSize: 2048, headroom: 128)
    Benchmark("pool take and return") { benchmark in
        for _ in benchmark.scaledIterations {
            let buffer = pool.take()
            blackHole(buffer?.count ?? 0)
        }
    }
}
