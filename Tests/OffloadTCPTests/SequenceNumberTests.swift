import Testing
import OffloadCore
import OffloadWire
import OffloadTCP

@Suite struct SequenceNumberTests {
    let nearWrap = SequenceNumber(0xFFFF_FFF0)

    @Test func addingLengthsWrapsAround() {
        #expect((nearWrap + 0x10).rawValue == 0)
        #expect((nearWrap + 0x20).rawValue == 0x10)
        #expect((SequenceNumber(5) - 10).rawValue == 0xFFFF_FFFB)
        var s = nearWrap
        s += 100
        #expect(s.rawValue == 84)
        #expect((nearWrap + Int(Int32.max)).rawValue == 0x7FFF_FFEF)
    }

    @Test func distanceIsSignedAcrossTheWrap() {
        let after = SequenceNumber(0x10)
        #expect(after.distance(from: nearWrap) == 0x20)
        #expect(nearWrap.distance(from: after) == -0x20)
        #expect(after - nearWrap == 0x20)
        #expect(nearWrap.distance(to: after) == 0x20)
        // (a + n) - a == n for lengths across the whole signed range.
        var random = SeededRandom(seed: 1)
        for _ in 0..<10_000 {
            let a = SequenceNumber(UInt32(truncatingIfNeeded: random.next()))
            let n = Int(Int32(truncatingIfNeeded: random.next()))
            #expect((a + n).distance(from: a) == n)
            #expect((a + n) - n == a)
        }
    }

    @Test func orderAcrossTheWrap() {
        let after = SequenceNumber(0x10)
        #expect(nearWrap < after)
        #expect(!(after < nearWrap))
        #expect(after > nearWrap)
        #expect(nearWrap <= after && nearWrap <= nearWrap && nearWrap >= nearWrap)
        #expect(!(nearWrap < nearWrap))
        #expect(after >= nearWrap && !(nearWrap >= after))
        #expect(SequenceNumber.later(nearWrap, after) == after)
        #expect(SequenceNumber.earlier(after, nearWrap) == nearWrap)
        // The farthest ahead that still counts as after: 2^31 - 1.
        #expect(nearWrap < nearWrap + Int(Int32.max))
        #expect(nearWrap > nearWrap - Int(Int32.max))
    }

    @Test func halfwayApartIsUnordered() {
        let a = SequenceNumber(0x1234)
        let b = SequenceNumber(0x1234 + 0x8000_0000)
        #expect(!(a < b) && !(b < a) && !(a <= b) && !(a >= b) && a != b)
    }

    @Test func notTransitiveOverLongSpans() {
        // Why SequenceNumber is not Comparable: each step is "after", yet the cycle closes.
        let a = SequenceNumber(0), b = SequenceNumber(0x6000_0000), c = SequenceNumber(0xC000_0000)
        #expect(a < b && b < c && c < a)
    }

    @Test func orderMatchesSignedDistanceOnRandomPairs() {
        var random = SeededRandom(seed: 2)
        for _ in 0..<10_000 {
            let a = SequenceNumber(UInt32(truncatingIfNeeded: random.next()))
            let b = SequenceNumber(UInt32(truncatingIfNeeded: random.next()))
            let d = b.distance(from: a)
            if d == Int(Int32.min) { continue }
            #expect((a < b) == (d > 0))
            #expect((a <= b) == (d >= 0))
            #expect((a > b) == (d < 0))
        }
    }

    @Test func windowMembership() {
        let lower = SequenceNumber(0xFFFF_FF00), upper = SequenceNumber(0x100)
        #expect(lower.isIn(lower, upper))
        #expect(SequenceNumber(0).isIn(lower, upper))
        #expect(SequenceNumber(0xFF).isIn(lower, upper))
        #expect(!upper.isIn(lower, upper))
        #expect(!SequenceNumber(0xFFFF_FEFF).isIn(lower, upper))
        #expect(!lower.isIn(lower, lower), "an empty window holds nothing")
    }

    @Test func rangesAcrossTheWrap() {
        let r = SequenceRange(nearWrap, count: 0x20)
        #expect(r.count == 0x20)
        #expect(r.upper.rawValue == 0x10)
        #expect(r.contains(SequenceNumber(0)) && !r.contains(SequenceNumber(0x10)) && r.contains(nearWrap))
        let s = SequenceRange(SequenceNumber(0x8), SequenceNumber(0x40))
        #expect(r.overlaps(s) && s.overlaps(r))
        #expect(r.clamped(to: s) == SequenceRange(SequenceNumber(0x8), SequenceNumber(0x10)))
        let adjacent = SequenceRange(SequenceNumber(0x10), SequenceNumber(0x20))
        #expect(!r.overlaps(adjacent) && r.clamped(to: adjacent) == nil)
        #expect(!r.overlaps(SequenceRange(SequenceNumber(0), count: 0)), "an empty range overlaps nothing")
    }

    @Test func sackBlocksConvert() {
        let block = TCPSACKBlock(left: 0xFFFF_FFF0, right: 0x10)
        let range = SequenceRange(block)
        #expect(range == SequenceRange(nearWrap, count: 0x20))
        #expect(range.map(TCPSACKBlock.init) == block)
        #expect(SequenceRange(TCPSACKBlock(left: 0x10, right: 0xFFFF_FFF0)) == nil, "right edge before left")
    }
}
