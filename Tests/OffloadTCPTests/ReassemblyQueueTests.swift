import Testing
import OffloadCore
import OffloadWire
import OffloadTCP

@Suite struct ReassemblyQueueTests {
    /// Sequence numbers start just short of the wrap so every test crosses it.
    let isn = SequenceNumber(0xFFFF_FF00)
    let stream: [UInt8] = (0..<40_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 8) }

    func range(_ from: Int, _ to: Int) -> SequenceRange { SequenceRange(isn + from, isn + to) }

    /// Inserts stream bytes [from, to), returning the outcome and what was delivered.
    func insert(_ q: inout ReassemblyQueue, _ from: Int, _ to: Int, window: Int? = nil,
                bytes: [UInt8]? = nil) throws(ReassemblyQueue.InsertError) -> (ReassemblyQueue.Outcome, [UInt8]) {
        var delivered: [UInt8] = []
        let segment = bytes ?? Array(stream[from..<to])
        let outcome = segment.withUnsafeBytes { b in
            Result { () throws(ReassemblyQueue.InsertError) in
                try q.insert(b, at: isn + from, window: window) { delivered.append(contentsOf: $0) }
            }
        }
        return (try outcome.get(), delivered)
    }

    @Test func inOrderDataGoesStraightFromTheSegment() throws {
        var q = ReassemblyQueue(nextExpected: isn, capacity: 1000)
        let segment = Array(stream[0..<500])
        var pieces: [UnsafeRawBufferPointer] = []
        var base: UnsafeRawPointer?
        let outcome = try segment.withUnsafeBytes { (b) throws(ReassemblyQueue.InsertError) in
            base = b.baseAddress
            return try q.insert(b, at: isn) { pieces.append($0) }
        }
        #expect(pieces.count == 1 && pieces[0].baseAddress == base && pieces[0].count == 500, "no copy")
        #expect(outcome.delivered == 500 && outcome.accepted == 500 && outcome.duplicate == 0)
        #expect(q.nextExpected == isn + 500 && q.isEmpty)
    }

    @Test func aFilledGapDeliversEverythingBehindIt() throws {
        var q = ReassemblyQueue(nextExpected: isn, capacity: 1000)
        let (ahead, none) = try insert(&q, 300, 600)
        #expect(none.isEmpty && ahead.accepted == 300 && ahead.delivered == 0)
        #expect(Array(q.heldRanges) == [range(300, 600)] && q.heldBytes == 300)
        let (middle, _) = try insert(&q, 100, 200)
        #expect(Array(q.heldRanges) == [range(100, 200), range(300, 600)])
        let (fill, delivered) = try insert(&q, 0, 300)
        #expect(delivered == Array(stream[0..<600]))
        #expect(fill.delivered == 600 && fill.accepted == 200 && fill.duplicate == 100 && middle.accepted == 100)
        #expect(q.isEmpty && q.nextExpected == isn + 600 && q.sackBlocks().isEmpty)
    }

    @Test func duplicatesAndOldDataAreCountedNotDelivered() throws {
        var q = ReassemblyQueue(nextExpected: isn, capacity: 1000)
        _ = try insert(&q, 0, 100)
        let (old, nothing) = try insert(&q, 20, 80)
        #expect(nothing.isEmpty && old.duplicate == 60 && old.accepted == 0)
        _ = try insert(&q, 200, 300)
        let (overlap, _) = try insert(&q, 150, 350)
        #expect(overlap.accepted == 100 && overlap.duplicate == 100)
        let (straddle, delivered) = try insert(&q, 50, 160)
        #expect(straddle.duplicate == 50 + 10 && straddle.accepted == 50)
        #expect(delivered == Array(stream[100..<350]))
    }

    @Test func heldBytesAreNotOverwritten() throws {
        var q = ReassemblyQueue(nextExpected: isn, capacity: 1000)
        _ = try insert(&q, 100, 200)
        let forged = [UInt8](repeating: 0xEE, count: 300)
        let (_, delivered) = try insert(&q, 0, 300, bytes: forged)
        #expect(Array(delivered[100..<200]) == Array(stream[100..<200]), "the first copy wins")
        #expect(Array(delivered[0..<100]) == Array(forged[0..<100]))
    }

    @Test func theWindowBoundsWhatIsKept() throws {
        var q = ReassemblyQueue(nextExpected: isn, capacity: 1000)
        let (cut, _) = try insert(&q, 900, 1200)
        #expect(cut.accepted == 100 && cut.beyondWindow == 200)
        let (narrow, _) = try insert(&q, 100, 300, window: 150)
        #expect(narrow.accepted == 50 && narrow.beyondWindow == 150)
        let (outside, _) = try insert(&q, 1500, 1600)
        #expect(outside.beyondWindow == 100 && outside.accepted == 0)
        let (closed, nothing) = try insert(&q, 0, 10, window: 0)
        #expect(closed.beyondWindow == 10 && nothing.isEmpty, "a zero window takes nothing")
        #expect(Array(q.heldRanges) == [range(100, 150), range(900, 1000)])
    }

    @Test func tooManyRangesDropsTheSegmentWhole() throws {
        var q = ReassemblyQueue(nextExpected: isn, capacity: 1000, rangeLimit: 2)
        _ = try insert(&q, 100, 200)
        _ = try insert(&q, 300, 400)
        #expect(throws: ReassemblyQueue.InsertError.tooManyRanges(limit: 2)) { _ = try insert(&q, 500, 600) }
        #expect(Array(q.heldRanges) == [range(100, 200), range(300, 400)], "nothing kept")
        let (bridge, _) = try insert(&q, 200, 300)
        #expect(bridge.accepted == 100 && Array(q.heldRanges) == [range(100, 400)], "merging needs no new range")
        let (_, delivered) = try insert(&q, 0, 50)
        #expect(delivered == Array(stream[0..<50]), "in-order data always gets in")
    }

    @Test func sackBlocksGoMostRecentFirst() throws {
        var q = ReassemblyQueue(nextExpected: isn, capacity: 10_000)
        for start in [100, 300, 500, 700, 900] { _ = try insert(&q, start, start + 50) }
        #expect(Array(q.sackBlocks()) == [900, 700, 500, 300].map { TCPSACKBlock(range($0, $0 + 50)) })
        #expect(Array(q.sackBlocks(limit: 3)) == [900, 700, 500].map { TCPSACKBlock(range($0, $0 + 50)) })
        _ = try insert(&q, 150, 160) // extends the oldest block
        #expect(Array(q.sackBlocks(limit: 3)) == [TCPSACKBlock(range(100, 160))]
            + [900, 700].map { TCPSACKBlock(range($0, $0 + 50)) })
        _ = try insert(&q, 710, 720) // a duplicate inside a block still makes it the most recent
        #expect(q.sackBlocks(limit: 1).first == TCPSACKBlock(range(700, 750)))
        let blocks = q.sackBlocks()
        #expect(blocks.first?.left == (isn + 700).rawValue && blocks.count == 4)
    }

    /// A receiver kept as one flag per stream byte: the definition the queue must match.
    struct Model {
        var received: [Bool]
        var next = 0
        var runs: [Range<Int>] {
            var result: [Range<Int>] = []
            var i = next
            while i < received.count {
                if !received[i] { i += 1; continue }
                let s = i
                while i < received.count && received[i] { i += 1 }
                result.append(s..<i)
            }
            return result
        }
    }

    @Test(arguments: Array(UInt64(1)...UInt64(30)))
    func randomOrderAndDuplicatesDeliverTheStreamExactlyOnce(seed: UInt64) throws {
        var random = SeededRandom(seed: seed)
        let length = 5_000 + Int(random.next() % 35_000)
        let capacity = 500 + Int(random.next() % 4_000)
        let limit = 1 + Int(random.next() % 8)
        var q = ReassemblyQueue(nextExpected: isn, capacity: capacity, rangeLimit: limit)
        var model = Model(received: [Bool](repeating: false, count: length))
        var delivered: [UInt8] = []
        var rightEdge = capacity
        var steps = 0
        while model.next < length {
            steps += 1
            try #require(steps < 200_000)
            rightEdge = max(rightEdge, model.next + Int(random.next() % UInt64(capacity + 1)))
            let window = rightEdge - model.next
            let from = random.chance(0.2) ? model.next
                : max(0, model.next - 600 + Int(random.next() % UInt64(capacity + 1200)))
            guard from < length else { continue }
            let to = min(length, from + 1 + Int(random.next() % 900))

            // What the model says this segment does.
            var expected = ReassemblyQueue.Outcome()
            var after = model
            for i in from..<to {
                if i < model.next || model.received[i] { expected.duplicate += 1 }
                else if i >= model.next + window { expected.beyondWindow += 1 }
                else { expected.accepted += 1; after.received[i] = true }
            }
            while after.next < length && after.received[after.next] { after.next += 1 }
            expected.delivered = after.next - model.next
            let overLimit = after.runs.count > limit && expected.delivered == 0 && expected.accepted > 0

            do {
                let (outcome, bytes) = try insert(&q, from, to, window: window)
                #expect(!overLimit, "seed \(seed) step \(steps): a range past the limit was kept")
                #expect(outcome == expected, "seed \(seed) step \(steps)")
                delivered += bytes
                model = after
            } catch {
                #expect(overLimit, "seed \(seed) step \(steps): dropped \(from)..<\(to) needlessly")
            }
            #expect(delivered.count == model.next)
            #expect(q.nextExpected == isn + model.next)
            let runs = model.runs.map { range($0.lowerBound, $0.upperBound) }
            #expect(Array(q.heldRanges) == runs, "seed \(seed) step \(steps)")
            let blocks = q.sackBlocks()
            #expect(blocks.count == min(4, runs.count))
            #expect(blocks.allSatisfy { b in runs.contains { TCPSACKBlock($0) == b } })
            if expected.delivered == 0, from < model.next + window, to > model.next, !overLimit {
                let touched = range(max(from, model.next), min(to, model.next + window))
                #expect(blocks.first.flatMap(SequenceRange.init).map { touched.clamped(to: $0) == touched } == true,
                        "the block holding the latest segment comes first")
            }
        }
        // Compared as a Bool: a failure should not print 40,000 bytes.
        let exact = delivered.elementsEqual(stream[0..<length])
        #expect(exact, "seed \(seed): the stream, in order, exactly once")
        #expect(q.isEmpty)
    }
}
