import Benchmark
import OffloadCore
import OffloadWire

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

    // A SYN as Linux sends it: Ethernet + IPv4 + TCP with MSS, SACK-permitted, timestamps,
    // window scale. Parsed through every Repr with all checksums verified.
    let frame = UnsafeMutableRawBufferPointer.allocate(byteCount: 74, alignment: 64)
    let ip = IPv4Repr(source: IPv4Address(10, 0, 0, 1), destination: IPv4Address(10, 0, 0, 2), protocol: .tcp,
                      payloadLength: 40)
    let tcp = TCPRepr(sourcePort: 40000, destinationPort: 80, sequenceNumber: 1, flags: .syn, windowSize: 64240,
                      maxSegmentSize: 1460, windowScale: 7, sackPermitted: true,
                      timestamp: TCPTimestamp(value: 1, echoReply: 0))
    EthernetRepr(destination: .local(2), source: .local(1), etherType: .ipv4).emit(into: frame)
    ip.emit(into: UnsafeMutableRawBufferPointer(rebasing: frame[14...]), checksums: .verify)
    tcp.emit(into: UnsafeMutableRawBufferPointer(rebasing: frame[34...]), source: ip.source,
             destination: ip.destination, checksums: .verify)
    let bytes = UnsafeRawBufferPointer(frame)
    Benchmark("parse Ethernet+IPv4+TCP (SYN with options)") { benchmark in
        for _ in benchmark.scaledIterations {
            do {
                let ethernet = try EthernetFrame(checking: bytes)
                let packet = try IPv4Packet(checking: ethernet.payload)
                let ipRepr = try IPv4Repr.parse(packet, checksums: .verify)
                let segment = try TCPPacket(checking: packet.payload)
                let repr = try TCPRepr.parse(segment, source: ipRepr.source, destination: ipRepr.destination,
                                             checksums: .verify)
                blackHole(repr.maxSegmentSize)
            } catch {
                fatalError("benchmark frame does not parse: \(error)")
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

    tableBenchmarks()
    engineBenchmarks()
}
