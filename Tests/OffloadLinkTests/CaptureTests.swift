import Foundation
import Testing
import OffloadCore
import OffloadWire
@testable import OffloadLink

@Suite struct CaptureTests {
    func temporaryPath(_ name: String) -> String {
        NSTemporaryDirectory() + "offload-\(getpid())-\(name).pcap"
    }

    @Test func captureThenReplayGivesTheSameFramesBothWays() throws {
        let path = temporaryPath("roundtrip")
        defer { unlink(path) }
        let clock = VirtualClock(start: Instant(nanoseconds: 1_000_000_000))
        let (a, b) = MemoryLink.pair(clock: clock, seed: 4)
        var peer = b
        var captured = CaptureLink(a, writer: try PcapFileWriter(path: path), clock: clock)
        let pool = BufferPool(count: 16, bufferSize: 2048, headroom: 0)
        var expected: [[UInt8]] = []
        for n in 0..<10 {
            let frame = (0..<(60 + n)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ n) }
            expected.append(frame)
            if n % 2 == 0 {
                try frame.withUnsafeBytes { try captured.transmit($0) }
                _ = try peer.receive(into: pool, max: 1) { _ in }
            } else {
                try frame.withUnsafeBytes { try peer.transmit($0) }
                #expect(try captured.receive(into: pool, max: 1) { _ in } == 1)
            }
            clock.advance(by: .milliseconds(1))
        }
        try captured.writer.flush()
        #expect(captured.writer.framesWritten == 10)

        let replay = try PcapReplayLink(path: path)
        var frames: [[UInt8]] = []
        while try replay.receive(into: pool, max: 4, { frames.append(Array($0.bytes)) }) > 0 {}
        #expect(frames == expected)
        #expect(replay.finished && replay.damage == nil)
        #expect(pool.inUse == 0)
    }

    @Test func partialChecksumIsFinishedInTheCapturedCopy() throws {
        let path = temporaryPath("partial")
        defer { unlink(path) }
        // Ethernet + IPv4 + UDP from 10.0.0.1:1000 to 10.0.0.2:2000 carrying "hello".
        let src = IPv4Address(10, 0, 0, 1), dst = IPv4Address(10, 0, 0, 2)
        let payload = Array("hello".utf8)
        var frame = [UInt8](repeating: 0, count: 14 + 20 + 8 + payload.count)
        try frame.withUnsafeMutableBytes { raw in
            EthernetRepr(destination: .broadcast, source: .local(1), etherType: .ipv4).emit(into: raw)
            let ip = UnsafeMutableRawBufferPointer(rebasing: raw[14...])
            IPv4Repr(source: src, destination: dst, protocol: .udp, payloadLength: 8 + payload.count)
                .emit(into: ip, checksums: .verify)
            let udp = UnsafeMutableRawBufferPointer(rebasing: raw[34...])
            udp.storeBytes(of: UInt16(1000).bigEndian, toByteOffset: 0, as: UInt16.self)
            udp.storeBytes(of: UInt16(2000).bigEndian, toByteOffset: 2, as: UInt16.self)
            udp.storeBytes(of: UInt16(8 + payload.count).bigEndian, toByteOffset: 4, as: UInt16.self)
            var pseudo = InternetChecksum()
            pseudo.add(src.rawValue); pseudo.add(dst.rawValue)
            pseudo.add(UInt16(17)); pseudo.add(UInt16(8 + payload.count))
            udp.storeBytes(of: pseudo.partial.bigEndian, toByteOffset: 6, as: UInt16.self)
            for (i, b) in payload.enumerated() { udp[8 + i] = b }
            _ = try UDPPacket(checking: UnsafeRawBufferPointer(udp))
        }
        let clock = VirtualClock()
        let (a, _) = MemoryLink.pair(clock: clock, seed: 1, carriesOffloadMetadata: true)
        var captured = CaptureLink(a, writer: try PcapFileWriter(path: path), clock: clock)
        try frame.withUnsafeBytes {
            try captured.transmit(header: $0, payloads: .none, metadata: .partialChecksum(checksumStart: 34, checksumOffset: 6))
        }
        try captured.writer.flush()
        let replay = try PcapReplayLink(path: path)
        let pool = BufferPool(count: 2, bufferSize: 2048, headroom: 0)
        var got: [UInt8] = []
        _ = try replay.receive(into: pool, max: 1) { got = Array($0.bytes) }
        try got.withUnsafeBytes { raw in
            let ip = try IPv4Packet(checking: UnsafeRawBufferPointer(rebasing: raw[14...]))
            #expect(ipv4L4Checksum(ip.payload, source: src, destination: dst, protocol: 17) == 0)
        }
    }

    @Test func damagedFilesAreTypedErrors() throws {
        let path = temporaryPath("damaged")
        defer { unlink(path) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data([1, 2, 3])))
        #expect(throws: LinkError.self) { try PcapReplayLink(path: path) }
        #expect(throws: LinkError.self) { try PcapReplayLink(path: "/nonexistent/file.pcap") }
        // A good header and a record cut short: the good records come out, then `damage`.
        let writer = try PcapFileWriter(path: path)
        let frame = [UInt8](repeating: 9, count: 64)
        for _ in 0..<2 { frame.withUnsafeBytes { writer.write(header: $0, payloads: .none, metadata: .none, nanoseconds: 0) } }
        try writer.flush()
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        truncate(path, off_t(size - 10))
        let replay = try PcapReplayLink(path: path)
        let pool = BufferPool(count: 4, bufferSize: 2048, headroom: 0)
        var n = 0
        _ = try replay.receive(into: pool, max: 8) { _ in n += 1 }
        #expect(n == 1)
        #expect(replay.damage != nil)
    }
}
