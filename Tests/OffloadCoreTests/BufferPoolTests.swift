import Foundation
import Testing
@testable import OffloadCore

@Suite struct BufferPoolTests {
    @Test func takeAndReturnInConstantSlots() {
        let pool = BufferPool(count: 4, bufferSize: 256, headroom: 32)
        #expect(pool.available == 4)
        do {
            guard let a = pool.take(), let b = pool.take() else { Issue.record("pool empty"); return }
            #expect(pool.inUse == 2)
            _ = consume a
            #expect(pool.inUse == 1)
            _ = b
        }
        #expect(pool.inUse == 0)
        #expect(pool.takes == 2)
    }

    @Test func exhaustionIsCountedNotFatal() {
        let pool = BufferPool(count: 2, bufferSize: 128, headroom: 0)
        let a = pool.take(), b = pool.take()
        if pool.take() != nil { Issue.record("a third buffer from a pool of two") }
        #expect(pool.exhaustions == 1)
        _ = a; _ = b
    }

    @Test func fillTakesABurstAsTakeWouldAndStopsWhereTheWriterDoes() {
        let pool = BufferPool(count: 4, bufferSize: 256, headroom: 32)
        let burst = UnsafeMutablePointer<PacketBuffer>.allocate(capacity: 8)
        defer { burst.deallocate() }
        // The writer stops after three frames: three buffers, each with its frame after the headroom.
        var written = 0
        let n = pool.fill(burst, upTo: 4) { space -> (count: Int, offload: OffloadMetadata)? in
            #expect(space.count == 256 - 32)
            guard written < 3 else { return nil }
            written += 1
            space.storeBytes(of: UInt8(written), as: UInt8.self)
            return (10 * written, written == 2 ? .partialChecksum(checksumStart: 34, checksumOffset: 6) : .none)
        }
        #expect(n == 3)
        #expect(pool.inUse == 3 && pool.takes == 3 && pool.exhaustions == 0)
        var slots = Set<Int>()
        for i in 0..<n {
            let b = (burst + i).move()
            #expect(b.count == 10 * (i + 1) && b.headroom == 32)
            #expect(b.bytes.load(as: UInt8.self) == UInt8(i + 1))
            #expect(b.offload.hasPartialChecksum == (i == 1))
            slots.insert(b.slotIndex)
        }
        #expect(slots == [0, 1, 2], "the warmest slots first, as take() gives them")
        #expect(pool.inUse == 0)

        // Fewer buffers than wanted: as many as there are, and no exhaustion while some were left.
        let held = pool.take()
        let m = pool.fill(burst, upTo: 8) { _ in (1, .none) }
        #expect(m == 3 && pool.available == 0 && pool.exhaustions == 0)
        for i in 0..<m { _ = (burst + i).move() }
        _ = consume held
        // None at all for a frame that waits: counted, as take() counts it.
        let a = pool.take(), b = pool.take(), c = pool.take(), d = pool.take()
        #expect(pool.available == 0)
        let none = pool.fill(burst, upTo: 1) { _ in (1, .none) }
        #expect(none == 0)
        #expect(pool.exhaustions == 1)
        _ = a; _ = b; _ = c; _ = d
    }

    @Test func everySlotIsDistinctAndReused() {
        let pool = BufferPool(count: 8, bufferSize: 64, headroom: 0)
        var seen = Set<Int>()
        for _ in 0..<100 {
            guard let b = pool.take() else { Issue.record("pool empty"); return }
            seen.insert(b.slotIndex)
        }
        #expect(pool.inUse == 0)
        #expect(seen.count == 1, "a lightly used pool keeps reusing its warmest slot")
    }

    @Test func headroomPrependAndBounds() throws {
        let pool = BufferPool(count: 1, bufferSize: 128, headroom: 16)
        guard var b = pool.take() else { Issue.record("pool empty"); return }
        #expect(b.headroom == 16 && b.count == 0 && b.tailroom == 112)
        let payload: [UInt8] = [1, 2, 3, 4]
        try payload.withUnsafeBytes { try b.append(contentsOf: $0) }
        let header = try b.prepend(14)
        header.initializeMemory(as: UInt8.self, repeating: 0xee)
        #expect(b.count == 18 && b.headroom == 2)
        #expect(Array(b.bytes.suffix(4)) == payload)
        #expect(throws: BufferError.noHeadroom(requested: 3, available: 2)) { try b.prepend(3) }
        #expect(throws: BufferError.noTailroom(requested: 200, available: 108)) { try b.append(200) }
        try b.removeFront(14)
        #expect(Array(b.bytes) == payload)
        #expect(throws: BufferError.outOfRange(requested: 5, available: 4)) { try b.removeBack(5) }
        try b.setCount(100)
        #expect(b.count == 100)
        #expect(throws: BufferError.outOfRange(requested: 1000, available: 112)) { try b.setCount(1000) }
        b.offload = OffloadMetadata.partialChecksum(checksumStart: 34, checksumOffset: 16)
        try b.reset(headroom: 8)
        #expect(b.count == 0 && b.headroom == 8 && b.offload == .none)
    }

    @Test func buffersEndingOnAnotherThreadComeBackThroughReclaim() {
        let pool = BufferPool(count: 64, bufferSize: 128, headroom: 0)
        let ring = SPSCRing<PacketBuffer>(capacity: 64)
        for _ in 0..<64 {
            guard var b = pool.take() else { Issue.record("pool empty"); return }
            b.isAway = true
            if ring.push(b) != nil { Issue.record("ring full") }
        }
        #expect(pool.available == 0)
        let done = DispatchSemaphore(value: 0)
        let software = Thread {
            // The other thread lets every buffer go.
            while ring.pop() != nil {}
            done.signal()
        }
        software.start()
        done.wait()
        #expect(pool.inUse == 64, "not back until the owner reclaims")
        // take() reclaims when the free stack is empty.
        guard let again = pool.take() else { Issue.record("reclaim did not happen"); return }
        _ = consume again
        #expect(pool.inUse == 0)
        #expect(pool.exhaustions == 0)
    }
}
