import Testing
import OffloadCore
@testable import OffloadLink

/// Sends `count` numbered frames one way, advancing a virtual clock `spacing` per frame,
/// and returns the numbers in the order they arrived (and the raw frames).
func runWire(_ impairments: Impairments, seed: UInt64 = 1, count: Int = 20_000, frameSize: Int = 100,
             spacing: Duration = .microseconds(10)) -> (order: [UInt32], frames: [[UInt8]], sent: MemoryWireCounters) {
    let clock = VirtualClock()
    var (a, b) = MemoryLink.pair(clock: clock, seed: seed, forward: impairments, framesInFlight: 4096)
    let pool = BufferPool(count: 64, bufferSize: 2048, headroom: 0)
    var order: [UInt32] = []
    var frames: [[UInt8]] = []
    var frame = [UInt8](repeating: 0xab, count: frameSize)
    func drain() {
        _ = try? b.receive(into: pool, max: 64) { buffer in
            order.append(buffer.bytes.loadUnaligned(as: UInt32.self))
            frames.append(Array(buffer.bytes))
        }
    }
    for n in 0..<UInt32(count) {
        frame.withUnsafeMutableBytes { $0.storeBytes(of: n, as: UInt32.self) }
        try! frame.withUnsafeBytes { try a.transmit($0) }
        clock.advance(by: spacing)
        drain()
    }
    clock.advance(by: .seconds(10))
    while b.framesWaiting > 0 { drain() }
    return (order, frames, a.sentCounters)
}

@Suite struct MemoryLinkTests {
    @Test func perfectWireDeliversEverythingInOrder() {
        let r = runWire(.none, count: 5000)
        #expect(r.order == Array(0..<5000))
        #expect(r.sent.delivered == 5000 && r.sent.lost == 0)
    }

    @Test func lossRateWithinTolerance() {
        let r = runWire(Impairments(loss: 0.1))
        let lost = 20_000 - r.order.count
        #expect(abs(Double(lost) / 20_000 - 0.1) < 0.01, "lost \(lost)")
        #expect(UInt64(lost) == r.sent.lost)
        #expect(r.order == r.order.sorted(), "loss alone does not reorder")
    }

    @Test func duplicationRateWithinTolerance() {
        let r = runWire(Impairments(duplication: 0.05))
        let extra = r.order.count - 20_000
        #expect(abs(Double(extra) / 20_000 - 0.05) < 0.006, "duplicated \(extra)")
        #expect(Set(r.order).count == 20_000, "every frame arrives at least once")
        #expect(UInt64(extra) == r.sent.duplicated)
    }

    @Test func reorderingRateWithinTolerance() {
        // A held-back frame waits 200 µs, frames are 10 µs apart: it lands ~20 frames late.
        let r = runWire(Impairments(reordering: 0.02))
        #expect(r.order.count == 20_000 && Set(r.order).count == 20_000)
        // A frame is late when some frame sent after it arrived before it.
        var late = 0
        var maxSeen: UInt32 = 0
        for (i, n) in r.order.enumerated() {
            if i > 0 && n < maxSeen { late += 1 }
            maxSeen = max(maxSeen, n)
        }
        #expect(abs(Double(late) / 20_000 - 0.02) < 0.004, "late \(late)")
        #expect(UInt64(late) <= r.sent.reordered)
    }

    @Test func delayAndJitterBoundArrivalTimes() {
        let clock = VirtualClock()
        var (a, b) = MemoryLink.pair(clock: clock, seed: 9,
                                     forward: Impairments(delay: .milliseconds(5), jitter: .milliseconds(2)))
        let pool = BufferPool(count: 8, bufferSize: 256, headroom: 0)
        var lateness: [Int64] = []
        let frame = [UInt8](repeating: 1, count: 60)
        for _ in 0..<2000 {
            let sentAt = clock.now
            try! frame.withUnsafeBytes { try a.transmit($0) }
            // Step 10 µs at a time until it arrives.
            var got = false
            while !got {
                _ = try! b.receive(into: pool, max: 1) { _ in got = true }
                if !got { clock.advance(by: .microseconds(10)) }
            }
            lateness.append((clock.now - sentAt).nanoseconds)
        }
        #expect(lateness.min()! >= 5_000_000)
        #expect(lateness.max()! <= 7_010_000)
        let mean = Double(lateness.reduce(0, +)) / Double(lateness.count)
        #expect(abs(mean - 6_000_000) < 100_000, "mean \(mean)")
    }

    @Test func rateLimitSpacesFrames() {
        // 1500-byte frames at 12 Mbit/s take 1 ms each to serialize.
        let clock = VirtualClock()
        var (a, b) = MemoryLink.pair(clock: clock, seed: 3, forward: Impairments(rateBitsPerSecond: 12_000_000))
        let pool = BufferPool(count: 256, bufferSize: 2048, headroom: 0)
        let frame = [UInt8](repeating: 2, count: 1500)
        for _ in 0..<100 { try! frame.withUnsafeBytes { try a.transmit($0) } }
        var arrivals: [Int64] = []
        while arrivals.count < 100 {
            _ = try! b.receive(into: pool, max: 100) { _ in arrivals.append(clock.now.nanoseconds) }
            clock.advance(by: .microseconds(100))
        }
        #expect(arrivals.first! >= 1_000_000 && arrivals.first! <= 1_100_000)
        #expect(arrivals.last! >= 100_000_000 && arrivals.last! <= 100_100_000)
    }

    @Test func corruptionFlipsOneBit() {
        let r = runWire(Impairments(corruption: 0.03), frameSize: 200)
        var corrupted = 0
        for f in r.frames {
            // Count flipped bits against the pattern (byte 0 to 3 hold the number: compare the rest).
            let flips = f[4...].reduce(0) { $0 + ($1 ^ 0xab).nonzeroBitCount }
            if flips > 0 { corrupted += 1 }
            #expect(flips <= 1)
        }
        // Flips in the first 4 bytes change the number instead; allow for them.
        #expect(abs(Double(corrupted) / 20_000 - 0.03 * 196 / 200) < 0.005, "corrupted \(corrupted)")
        #expect(abs(Double(r.sent.corrupted) / 20_000 - 0.03) < 0.005)
    }

    @Test func sameSeedSameRunOtherSeedOtherRun() {
        let impairments = Impairments(loss: 0.05, duplication: 0.02, reordering: 0.02, jitter: .microseconds(30),
                                      corruption: 0.01)
        let a = runWire(impairments, seed: 77, count: 3000)
        let b = runWire(impairments, seed: 77, count: 3000)
        let c = runWire(impairments, seed: 78, count: 3000)
        #expect(a.order == b.order && a.frames == b.frames && a.sent == b.sent)
        #expect(a.order != c.order)
    }

    @Test func gatherTransmitJoinsHeaderAndSlices() throws {
        let clock = VirtualClock()
        var (a, b) = MemoryLink.pair(clock: clock, seed: 1)
        let pool = BufferPool(count: 4, bufferSize: 2048, headroom: 64)
        let header: [UInt8] = [1, 2, 3]
        let p1: [UInt8] = [4, 5], p2: [UInt8] = [], p3: [UInt8] = [6, 7, 8, 9]
        try header.withUnsafeBytes { h in
            try p1.withUnsafeBytes { s1 in
                try p2.withUnsafeBytes { s2 in
                    try p3.withUnsafeBytes { s3 in
                        let list = [s1, s2, s3]
                        try list.withUnsafeBufferPointer { try a.transmit(header: h, payloads: PayloadSlices($0), metadata: .none) }
                    }
                }
            }
        }
        var got: [UInt8] = []
        _ = try b.receive(into: pool, max: 8) { got = Array($0.bytes) }
        #expect(got == [1, 2, 3, 4, 5, 6, 7, 8, 9])
        #expect(a.sentCounters.payloadSlices == 3)
        #expect(pool.inUse == 0)
    }

    @Test func partialChecksumIsFinishedOrCarried() throws {
        // A UDP-like region: checksum at offset 6 of the L4 part, holding a pseudo-header sum.
        var frame = [UInt8](repeating: 0, count: 40)
        for i in 20..<40 { frame[i] = UInt8(i) }
        frame[26] = 0x12; frame[27] = 0x34
        let meta = OffloadMetadata.partialChecksum(checksumStart: 20, checksumOffset: 6)
        for carries in [false, true] {
            let clock = VirtualClock()
            var (a, b) = MemoryLink.pair(clock: clock, seed: 1, carriesOffloadMetadata: carries)
            let pool = BufferPool(count: 2, bufferSize: 256, headroom: 0)
            try frame.withUnsafeBytes { try a.transmit(header: $0, payloads: .none, metadata: meta) }
            var got: [UInt8] = []
            var gotMeta = OffloadMetadata.none
            _ = try b.receive(into: pool, max: 1) { got = Array($0.bytes); gotMeta = $0.offload }
            if carries {
                #expect(got == frame && gotMeta == meta)
            } else {
                #expect(gotMeta == .none)
                // With the pseudo-header sum (0x1234) folded back in, the region verifies.
                var verify = InternetChecksum()
                got.withUnsafeBytes { verify.add(UnsafeRawBufferPointer(rebasing: $0[20...])) }
                verify.add(UInt16(0x1234))
                #expect(verify.value == 0)
                #expect(got[26] != 0x12 || got[27] != 0x34)
            }
        }
    }

    @Test func limitsAreErrorsOrCountedDrops() throws {
        let clock = VirtualClock()
        var (a, b) = MemoryLink.pair(clock: clock, seed: 1, maxFrameSize: 128, framesInFlight: 2)
        let big = [UInt8](repeating: 0, count: 129)
        #expect(throws: LinkError.frameTooLarge(size: 129, max: 128)) { try big.withUnsafeBytes { try a.transmit($0) } }
        let small = [UInt8](repeating: 0, count: 64)
        for _ in 0..<3 { try small.withUnsafeBytes { try a.transmit($0) } }
        #expect(a.sentCounters.queueDrops == 1)
        // A pool that is empty leaves frames on the wire.
        let pool = BufferPool(count: 1, bufferSize: 256, headroom: 0)
        var held: [UInt8] = []
        let taken = pool.take()
        #expect(try b.receive(into: pool, max: 8) { _ in } == 0)
        #expect(b.framesWaiting == 2)
        _ = consume taken
        _ = try b.receive(into: pool, max: 8) { held.append(UInt8($0.count)) }
        #expect(held == [64, 64])
        let tso = OffloadMetadata.tcpSegmentation(segmentSize: 1448, headerLength: 54, checksumStart: 34, checksumOffset: 16)
        #expect(throws: LinkError.self) { try small.withUnsafeBytes { try a.transmit(header: $0, payloads: .none, metadata: tso) } }
    }

    /// A frame larger than the pool's buffers cannot be received into them: it is dropped,
    /// counted at the receiving end's queue, its buffer goes back, and the frames around it
    /// arrive in order. On a perfect wire and on a delaying one (the two receive loops).
    @Test(arguments: [Impairments(), Impairments(delay: .microseconds(5))])
    func framesLargerThanThePoolsBuffersAreCountedDrops(impairments: Impairments) throws {
        let clock = VirtualClock()
        var (a, b) = MemoryLink.pair(clock: clock, seed: 1, forward: impairments, maxFrameSize: 512, framesInFlight: 8)
        let pool = BufferPool(count: 4, bufferSize: 256, headroom: 64)
        for size in [100, 300, 150] {
            try [UInt8](repeating: UInt8(size & 0xff), count: size).withUnsafeBytes { try a.transmit($0) }
        }
        clock.advance(by: .milliseconds(1))
        var sizes: [Int] = []
        // `max` bounds the frames taken off the wire, the dropped one included.
        #expect(try b.receive(into: pool, max: 2) { sizes.append($0.count) } == 1)
        #expect(b.framesWaiting == 1)
        #expect(try b.receive(into: pool, max: 8) { sizes.append($0.count) } == 1)
        #expect(sizes == [100, 150])
        #expect(b.receivedCounters.queueDrops == 1 && b.receivedCounters.delivered == 2)
        #expect(b.receivedCounters.deliveredBytes == 250)
        #expect(b.framesWaiting == 0 && pool.inUse == 0)
    }

    /// The engine's receive into its burst: frames in order, across the ring's end, with
    /// their offload metadata; a frame too large for the pool is counted against `max` and
    /// its buffer takes the next frame. On a perfect wire and on a delaying one.
    @Test(arguments: [Impairments(), Impairments(delay: .microseconds(5))])
    func burstReceiveFillsTheBurstInOrder(impairments: Impairments) throws {
        let clock = VirtualClock()
        var (a, b) = MemoryLink.pair(clock: clock, seed: 1, forward: impairments, maxFrameSize: 512,
                                     framesInFlight: 4, carriesOffloadMetadata: true)
        let pool = BufferPool(count: 8, bufferSize: 256, headroom: 64)
        let burst = UnsafeMutablePointer<PacketBuffer>.allocate(capacity: 8)
        defer { burst.deallocate() }
        let partial = OffloadMetadata.partialChecksum(checksumStart: 34, checksumOffset: 6)
        func send(_ size: Int, _ metadata: OffloadMetadata = .none) throws {
            try [UInt8](repeating: UInt8(size & 0xff), count: size).withUnsafeBytes {
                try a.transmit(header: $0, payloads: .none, metadata: metadata)
            }
        }
        var sizes: [Int] = [], partials: [Bool] = []
        func take(max: Int) throws -> Int {
            let n = try b.receive(into: pool, max: max, burst: burst)
            for i in 0..<n {
                let frame = (burst + i).move()
                #expect(frame.bytes.allSatisfy { $0 == UInt8(frame.count & 0xff) })
                sizes.append(frame.count)
                partials.append(frame.offload.hasPartialChecksum)
            }
            return n
        }
        try send(100); try send(110, partial); try send(120)
        clock.advance(by: .milliseconds(1))
        #expect(try take(max: 2) == 2)
        // The next four go round the ring's end; the one of 300 bytes does not fit a buffer.
        try send(300); try send(130); try send(140)
        #expect(b.framesWaiting == 4)
        clock.advance(by: .milliseconds(1))
        #expect(try take(max: 2) == 1, "the dropped frame counts against max")
        #expect(b.framesWaiting == 2)
        #expect(try take(max: 8) == 2)
        #expect(sizes == [100, 110, 120, 130, 140])
        #expect(partials == [false, true, false, false, false])
        #expect(b.receivedCounters.queueDrops == 1 && b.receivedCounters.delivered == 5)
        #expect(b.receivedCounters.deliveredBytes == 600)
        #expect(b.framesWaiting == 0 && pool.inUse == 0)
        #expect(try take(max: 8) == 0)
    }

    @Test func lentFramesAreReadAtDeliveryAndDiscardDropsUnread() throws {
        let clock = VirtualClock()
        var (a, b) = MemoryLink.pair(clock: clock, seed: 1, maxFrameSize: 128, framesInFlight: 2)
        let pool = BufferPool(count: 4, bufferSize: 256, headroom: 0)
        let frames = UnsafeMutableRawBufferPointer.allocate(byteCount: 128, alignment: 8)
        defer { frames.deallocate() }
        for i in 0..<128 { frames[i] = UInt8(i) }
        let first = UnsafeRawBufferPointer(rebasing: frames[0..<64]), second = UnsafeRawBufferPointer(rebasing: frames[64..<128])
        try a.transmit(lending: first)
        try a.transmit(lending: second)
        try a.transmit(lending: first)
        #expect(a.sentCounters.transmitted == 3 && a.sentCounters.queueDrops == 1)
        #expect(throws: LinkError.frameTooLarge(size: 129, max: 128)) {
            try [UInt8](repeating: 0, count: 129).withUnsafeBytes { try a.transmit(lending: $0) }
        }
        // The wire holds the sender's bytes, not a copy: what they are at delivery arrives.
        frames[0] = 0xee
        var got: [[UInt8]] = []
        #expect(try b.receive(into: pool, max: 1) { got.append(Array($0.bytes)) } == 1)
        #expect(got == [[0xee] + (1..<64).map(UInt8.init)])
        #expect(b.discard(max: 8) == 1)
        #expect(b.framesWaiting == 0 && pool.inUse == 0)
        #expect(a.sentCounters.delivered == 2 && a.sentCounters.deliveredBytes == 128)

        // An impaired wire copies at once.
        var (c, d) = MemoryLink.pair(clock: clock, seed: 1, forward: Impairments(delay: .microseconds(5)))
        try c.transmit(lending: first)
        frames[0] = 0
        #expect(d.discard(max: 8) == 0, "not arrived yet")
        clock.advance(by: .microseconds(5))
        got = []
        _ = try d.receive(into: pool, max: 8) { got.append(Array($0.bytes)) }
        #expect(got.first?.first == 0xee)
    }

    @Test func discardTakesFramesAcrossTheRingsEnd() throws {
        let clock = VirtualClock()
        var (a, b) = MemoryLink.pair(clock: clock, seed: 1, maxFrameSize: 128, framesInFlight: 4)
        let pool = BufferPool(count: 4, bufferSize: 256, headroom: 0)
        func send(_ n: UInt8) throws { try [UInt8](repeating: n, count: 20).withUnsafeBytes { try a.transmit($0) } }
        var got: [UInt8] = []
        for n in 1...3 { try send(UInt8(n)) }
        _ = try b.receive(into: pool, max: 2) { got.append($0.bytes[0]) }
        for n in 4...5 { try send(UInt8(n)) }
        #expect(b.discard(max: 0) == 0)
        #expect(b.discard(max: 2) == 2)
        _ = try b.receive(into: pool, max: 8) { got.append($0.bytes[0]) }
        #expect(got == [1, 2, 5])
        #expect(b.discard(max: 8) == 0 && b.framesWaiting == 0)
        #expect(a.sentCounters.delivered == 5 && a.sentCounters.deliveredBytes == 100)
    }

    @Test func everyFrameLengthCrossesIntact() throws {
        let clock = VirtualClock()
        var (a, b) = MemoryLink.pair(clock: clock, seed: 1, maxFrameSize: 512)
        let pool = BufferPool(count: 4, bufferSize: 1024, headroom: 0)
        for length in 1...300 {
            let frame = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ length) }
            try frame.withUnsafeBytes { try a.transmit($0) }
            var got: [UInt8] = []
            _ = try b.receive(into: pool, max: 1) { got = Array($0.bytes) }
            #expect(got == frame, "length \(length)")
        }
    }
}
