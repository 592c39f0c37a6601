import Foundation
import Testing
import OffloadCore

/// A move-only value, standing in for a packet buffer.
struct Token: ~Copyable {
    let value: Int
}

@Suite struct SPSCRingTests {
    @Test func fifoFullAndEmpty() {
        let ring = SPSCRing<Token>(capacity: 4)
        #expect(value(ring.pop()) == nil)
        for i in 0..<4 { #expect(value(ring.push(Token(value: i))) == nil) }
        #expect(value(ring.push(Token(value: 99))) == 99, "a full ring hands the element back")
        #expect(ring.count == 4)
        #expect(value(ring.pop()) == 0)
        #expect(value(ring.push(Token(value: 4))) == nil)
        var seen: [Int] = []
        #expect(ring.pop(max: 3) { seen.append($0.value) } == 3)
        #expect(seen == [1, 2, 3])
        #expect(value(ring.pop()) == 4)
        #expect(ring.isEmpty)
    }

    func value(_ token: consuming Token?) -> Int? {
        switch consume token {
        case .some(let t): return t.value
        case .none: return nil
        }
    }

    @Test func peekLooksWithoutTaking() {
        let ring = SPSCRing<Token>(capacity: 4)
        #expect(ring.peek(at: 0) { $0.value } == nil)
        for i in 0..<3 { _ = ring.push(Token(value: i)) }
        #expect(ring.peek(at: 0) { $0.value } == 0)
        #expect(ring.peek(at: 2) { $0.value } == 2)
        #expect(ring.peek(at: 3) { $0.value } == nil, "past the newest")
        #expect(value(ring.pop()) == 0)
        #expect(ring.peek(at: 1) { $0.value } == 2, "offsets count from the oldest left")
        // Across the wrap of the slots: 1, 2, 3, 4 in slots 1, 2, 3, 0.
        for i in 3...4 { _ = ring.push(Token(value: i)) }
        #expect(ring.peek(at: 3) { $0.value } == 4)
        #expect(ring.count == 4)
    }

    @Test func elementsLeftInTheRingAreDestroyed() {
        let pool = BufferPool(count: 4, bufferSize: 128, headroom: 0)
        do {
            let ring = SPSCRing<PacketBuffer>(capacity: 4)
            for _ in 0..<3 { if let b = pool.take() { _ = ring.push(b) } }
            #expect(pool.inUse == 3)
        }
        #expect(pool.inUse == 0)
    }

    @Test func twoThreadsKeepOrderAndLoseNothing() async {
        let ring = SPSCRing<Token>(capacity: 64)
        let total = 200_000
        let producer = Thread {
            var i = 0
            while i < total {
                if ring.push(Token(value: i)) != nil { continue }
                i += 1
            }
        }
        producer.start()
        var next = 0
        var outOfOrder = 0
        while next < total {
            let n = ring.pop(max: 32) { token in
                if token.value != next { outOfOrder += 1 }
                next += 1
            }
            if n == 0 { sched_yield() }
        }
        #expect(outOfOrder == 0)
        #expect(next == total)
        #expect(ring.isEmpty)
    }
}
