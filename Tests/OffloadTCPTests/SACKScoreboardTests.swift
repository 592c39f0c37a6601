import Testing
import OffloadCore
import OffloadWire
import OffloadTCP

@Suite struct SACKScoreboardTests {
    /// Near the wrap, so every test crosses it.
    let base = SequenceNumber(0xFFFF_F000)
    let smss = 1000

    func seq(_ offset: Int) -> SequenceNumber { base + offset }
    func range(_ from: Int, _ to: Int) -> SequenceRange { SequenceRange(seq(from), seq(to)) }
    func blocks(_ ranges: [(Int, Int)]) -> TCPSACKBlocks {
        TCPSACKBlocks(ranges.map { TCPSACKBlock(left: seq($0.0).rawValue, right: seq($0.1).rawValue) })
    }

    /// Ten segments of 1000 bytes sent from `base`.
    func board(counting: SACKScoreboard.LossCounting = .segmentsOrBytes, rangeLimit: Int = 32) -> SACKScoreboard {
        var b = SACKScoreboard(configuration: .init(maximumSegmentSize: smss, lossCounting: counting,
                                                    rangeLimit: rangeLimit),
                               unacknowledged: base)
        b.sent(upTo: seq(10_000))
        return b
    }

    @Test func blocksMergeAndCumulativeACKsTrimThem() {
        var b = board()
        var u = b.update(cumulativeAcknowledgment: base, blocks: blocks([(2000, 3000), (5000, 6000)]))
        #expect(u.newlySACKed == 2000 && u.newlyAcknowledged == 0 && !u.duplicateSACK)
        u = b.update(cumulativeAcknowledgment: base, blocks: blocks([(3000, 4000), (2500, 5000)]))
        #expect(u.newlySACKed == 1000 + 1000, "only bytes new to the board count")
        #expect(b.sackedRanges == [range(2000, 6000)])
        u = b.update(cumulativeAcknowledgment: seq(2500), blocks: [])
        #expect(u.newlyAcknowledged == 2500 && b.sackedRanges == [range(2500, 6000)])
        u = b.update(cumulativeAcknowledgment: seq(7000), blocks: [])
        #expect(b.sackedRanges.isEmpty && b.unacknowledged == seq(7000))
    }

    @Test func blocksBelowSNDUNAAreIgnoredAsDSACK() {
        var b = board()
        _ = b.update(cumulativeAcknowledgment: seq(3000), blocks: [])
        var u = b.update(cumulativeAcknowledgment: seq(3000), blocks: blocks([(1000, 2000), (5000, 6000)]))
        #expect(u.duplicateSACK && u.ignoredBlocks == 1 && u.newlySACKed == 1000)
        #expect(b.sackedRanges == [range(5000, 6000)])
        u = b.update(cumulativeAcknowledgment: seq(3000), blocks: blocks([(5200, 5300), (5000, 6000)]))
        #expect(u.duplicateSACK && u.newlySACKed == 0, "a first block inside the second is a D-SACK (RFC 2883)")
        u = b.update(cumulativeAcknowledgment: seq(3000), blocks: blocks([(9000, 11_000), (6000, 5000)]))
        #expect(u.ignoredBlocks == 2 && b.sackedRanges == [range(5000, 6000)], "past what was sent, or reversed")
        u = b.update(cumulativeAcknowledgment: seq(12_000), blocks: blocks([(7000, 8000)]))
        #expect(u.acknowledgesUnsentData && b.unacknowledged == seq(3000) && b.sackedRanges.count == 1)
    }

    @Test func lostAfterThreeSegmentsOrTwoSegmentsWorthOfBytes() {
        var b = board()
        _ = b.update(cumulativeAcknowledgment: base, blocks: blocks([(1000, 2000), (3000, 4000)]))
        #expect(!b.isLost(base), "two segments SACKed above, 2000 bytes: not more than (3 - 1) * SMSS")
        _ = b.update(cumulativeAcknowledgment: base, blocks: blocks([(5000, 5001)]))
        #expect(b.isLost(base) && b.isLost(seq(999)), "three discontiguous SACKed sequences above")
        #expect(!b.isLost(seq(4000)) && !b.isLost(seq(3000)), "only what lies above counts")
        var bytes = board(counting: .bytes)
        _ = bytes.update(cumulativeAcknowledgment: base, blocks: blocks([(1000, 1001), (2000, 2001), (3000, 3001)]))
        #expect(!bytes.isLost(base), "three bytes are not 2 * SMSS")
        _ = bytes.update(cumulativeAcknowledgment: base, blocks: blocks([(5000, 7000)]))
        #expect(bytes.isLost(base) && !bytes.isLost(seq(4000)))
        _ = bytes.update(cumulativeAcknowledgment: base, blocks: blocks([(4000, 4001)]))
        #expect(bytes.isLost(seq(3500)) && !bytes.isLost(seq(4000)), "2001 bytes above 3500, 2000 above 4000")
    }

    @Test func pipeCountsHolesNotLostAndRetransmissions() {
        var b = board()
        #expect(b.pipe == 10_000)
        _ = b.update(cumulativeAcknowledgment: base, blocks: blocks([(3000, 4000), (5000, 6000), (7000, 8000)]))
        // [0, 3000) lost (three SACKed above), [4000, 5000), [6000, 7000), [8000, 10000) not.
        #expect(b.pipe == 4000)
        #expect(b.enterRecovery() == range(0, 1000))
        #expect(b.pipe == 5000, "the retransmission is in flight again")
    }

    /// Only bytes not SACKed count in the pipe, those below HighRxt too: a SACKed segment
    /// between two retransmitted holes is not in flight (RFC 6675 SetPipe). It was counted,
    /// and recovery with many holes sent less than the congestion window allowed.
    @Test func pipeLeavesOutSACKedBytesBetweenRetransmissions() {
        var b = board()
        _ = b.update(cumulativeAcknowledgment: base,
                     blocks: blocks([(1000, 2000), (3000, 4000), (5000, 6000), (7000, 8000)]))
        #expect(b.enterRecovery() == range(0, 1000))
        b.retransmitted(.retransmitLost(range(2000, 3000)))
        // Holes [0, 1000) and [2000, 3000): lost (three SACKed ranges above each) and sent
        // again; [4000, 5000), [6000, 7000) and [8000, 10000): not lost, in flight. The
        // SACKed [1000, 2000) below HighRxt is not.
        #expect(b.pipe == 2000 + 4000, "\(b.pipe)")
    }

    @Test func nextSegmentFollowsTheRulesInOrder() {
        var b = board()
        _ = b.update(cumulativeAcknowledgment: base, blocks: blocks([(2000, 3000), (4000, 5000), (6000, 7000)]))
        #expect(b.enterRecovery() == range(0, 1000))
        #expect(b.recoveryPoint == seq(10_000) && b.isInRecovery)
        // Rule 1: the first lost byte above HighRxt, up to SMSS and not into SACKed data.
        var next = b.nextSegment(newDataAvailable: true)
        #expect(next == .retransmitLost(range(1000, 2000)))
        b.retransmitted(next)
        #expect(b.retransmittedEnd == seq(2000))
        // [3000, 4000) has two SACKed segments above: not lost, so new data goes first (rule 2).
        #expect(b.nextSegment(newDataAvailable: true) == .newData)
        next = b.nextSegment(newDataAvailable: false)
        #expect(next == .retransmitUnSACKed(range(3000, 4000)), "rule 3 without new data")
        b.retransmitted(next)
        b.retransmitted(b.nextSegment(newDataAvailable: false))
        #expect(b.retransmittedEnd == seq(6000))
        // Nothing unSACKed below the highest SACK is left above HighRxt, and the first
        // retransmission is not acknowledged yet: no rescue.
        #expect(b.nextSegment(newDataAvailable: false) == .nothing)
        _ = b.update(cumulativeAcknowledgment: seq(1500), blocks: [])
        let rescue = b.nextSegment(newDataAvailable: false)
        #expect(rescue == .rescue(range(9000, 10_000)), "rule 4: the highest unSACKed byte, SMSS back")
        b.retransmitted(rescue)
        #expect(b.rescueEnd == seq(10_000) && b.retransmittedEnd == seq(6000), "HighRxt unchanged")
        #expect(b.nextSegment(newDataAvailable: false) == .nothing, "one rescue per recovery")
        let u = b.update(cumulativeAcknowledgment: seq(10_000), blocks: [])
        #expect(u.recoveryEnded && !b.isInRecovery && b.mayEnterRecovery)
    }

    @Test func aTimeoutClearsTheBoardAndHoldsOffRecovery() {
        var b = board()
        _ = b.update(cumulativeAcknowledgment: base, blocks: blocks([(2000, 3000), (4000, 5000), (6000, 7000)]))
        _ = b.enterRecovery()
        b.retransmissionTimeout()
        #expect(!b.isInRecovery && b.sackedRanges.isEmpty && b.retransmittedEnd == base)
        #expect(!b.mayEnterRecovery && b.enterRecovery() == nil, "not before RecoveryPoint is acknowledged")
        b.sent(upTo: seq(12_000))
        let u = b.update(cumulativeAcknowledgment: seq(10_000), blocks: [])
        #expect(!u.recoveryEnded && b.mayEnterRecovery)
    }

    @Test func pastTheRangeLimitTheHighestAreForgotten() {
        var b = board(rangeLimit: 2)
        let u = b.update(cumulativeAcknowledgment: base, blocks: blocks([(5000, 6000), (1000, 2000), (3000, 4000)]))
        #expect(u.forgottenRanges == 1 && b.sackedRanges == [range(1000, 2000), range(3000, 4000)])
    }

    /// The RFC's definitions byte by byte: one flag per sent byte.
    struct Model {
        let smss: Int, threshold = 3
        var sacked: [Bool]
        var una = 0, sent = 0, retransmittedEnd = 0
        var rescueEnd: Int?, recoveryPoint: Int?, inRecovery = false

        var runs: [Range<Int>] {
            var result: [Range<Int>] = [], i = una
            while i < sent {
                if !sacked[i] { i += 1; continue }
                let s = i
                while i < sent && sacked[i] { i += 1 }
                result.append(s..<i)
            }
            return result
        }

        /// IsLost for every byte from una to sent, in one pass down from the top.
        var lost: [Bool] {
            var result = [Bool](repeating: false, count: sacked.count)
            var bytes = 0, segments = 0, run = 0
            for o in stride(from: sent - 1, through: una, by: -1) {
                let s = segments + (run + smss - 1) / smss
                result[o] = bytes > (threshold - 1) * smss || s >= threshold
                if sacked[o] { run += 1; bytes += 1 } else { segments += (run + smss - 1) / smss; run = 0 }
            }
            return result
        }

        var pipe: Int {
            let lost = self.lost
            var p = 0
            for o in una..<sent where !sacked[o] {
                if !lost[o] { p += 1 }
                if o < retransmittedEnd { p += 1 }
            }
            return p
        }

        func next(newData: Bool) -> (rule: Int, Range<Int>?) {
            let lost = self.lost
            let highest = (una..<sent).last { sacked[$0] }
            if let h = highest, max(retransmittedEnd, una) < h,
               let s2 = (max(retransmittedEnd, una)..<h).first(where: { !sacked[$0] }) {
                var end = s2
                while end < min(s2 + smss, sent) && !sacked[end] { end += 1 }
                if lost[s2] { return (1, s2..<end) }
                if newData { return (2, nil) }
                return (3, s2..<end)
            }
            if newData { return (2, nil) }
            guard inRecovery, rescueEnd.map({ $0 < una }) ?? true,
                  let x = (una..<sent).last(where: { !sacked[$0] }) else { return (0, nil) }
            var lower = x
            while lower > max(una, x + 1 - smss) && !sacked[lower - 1] { lower -= 1 }
            return (4, lower..<(x + 1))
        }
    }

    func rule(of n: SACKScoreboard.NextSegment) -> (Int, SequenceRange?) {
        switch n {
        case .retransmitLost(let r): (1, r)
        case .newData: (2, nil)
        case .retransmitUnSACKed(let r): (3, r)
        case .rescue(let r): (4, r)
        case .nothing: (0, nil)
        }
    }

    @Test(arguments: Array(UInt64(1)...UInt64(30)))
    func randomACKsMatchTheRFCDefinitions(seed: UInt64) {
        var random = SeededRandom(seed: seed)
        let smss = [1, 7, 100, 536][Int(random.next() % 4)]
        let length = 40 * smss
        var b = SACKScoreboard(configuration: .init(maximumSegmentSize: smss, rangeLimit: 64), unacknowledged: base)
        var m = Model(smss: smss, sacked: [Bool](repeating: false, count: length))
        func pick(_ n: Int) -> Int { Int(random.next() % UInt64(max(1, n))) }

        for step in 0..<150 {
            let label = "seed \(seed) step \(step)"
            switch pick(10) {
            case 0, 1:
                m.sent = min(length, m.sent + (1 + pick(4)) * smss)
                b.sent(upTo: seq(m.sent))
            case 2...6:
                var ack = m.una
                if random.chance(0.3) { ack = min(m.sent + (random.chance(0.1) ? 1 : 0), m.una + pick(4) * smss) }
                var list: [(Int, Int)] = []
                for _ in 0..<pick(5) {
                    let lo = m.una - 2 * smss + pick(m.sent - m.una + 3 * smss)
                    let hi = random.chance(0.1) ? lo - 1 : lo + 1 + pick(2 * smss)
                    list.append(random.chance(0.7) ? (lo / smss * smss, max(lo / smss * smss, hi / smss * smss)) : (lo, hi))
                }
                let u = b.update(cumulativeAcknowledgment: seq(ack), blocks: blocks(list))
                if ack > m.sent {
                    #expect(u.acknowledgesUnsentData, "\(label)")
                    break
                }
                let newlyAcknowledged = max(0, ack - m.una)
                m.una = max(m.una, ack)
                m.retransmittedEnd = max(m.retransmittedEnd, m.una)
                var newlySACKed = 0
                for (lo, hi) in list where hi > lo && hi <= m.sent && hi > m.una {
                    for o in max(lo, m.una)..<hi where !m.sacked[o] {
                        m.sacked[o] = true
                        newlySACKed += 1
                    }
                }
                #expect(u.newlyAcknowledged == newlyAcknowledged && u.newlySACKed == newlySACKed, "\(label)")
                if let p = m.recoveryPoint, p <= m.una {
                    #expect(u.recoveryEnded == m.inRecovery, "\(label)")
                    m.recoveryPoint = nil
                    m.inRecovery = false
                }
            case 7:
                let first = b.enterRecovery()
                if !m.inRecovery && m.recoveryPoint == nil && m.una < m.sent {
                    // From SND.UNA up to SMSS, not into SACKed data unless SND.UNA itself is SACKed.
                    var end = m.una
                    while end < min(m.una + smss, m.sent) && (!m.sacked[end] || m.sacked[m.una]) { end += 1 }
                    #expect(first == range(m.una, end), "\(label)")
                    m.inRecovery = true
                    m.recoveryPoint = m.sent
                    m.retransmittedEnd = end
                    m.rescueEnd = end
                } else {
                    #expect(first == nil, "\(label)")
                }
            case 8:
                let newData = random.chance(0.3)
                let chosen = b.nextSegment(newDataAvailable: newData)
                let (expectedRule, expectedRange) = m.next(newData: newData)
                let (rule, r) = rule(of: chosen)
                #expect(rule == expectedRule && r == expectedRange.map { range($0.lowerBound, $0.upperBound) },
                        "\(label): \(chosen) vs rule \(expectedRule) \(String(describing: expectedRange))")
                b.retransmitted(chosen)
                if rule == 1 || rule == 3, let e = expectedRange { m.retransmittedEnd = max(m.retransmittedEnd, e.upperBound) }
                if rule == 4 { m.rescueEnd = m.recoveryPoint }
            default:
                if random.chance(0.2) {
                    b.retransmissionTimeout()
                    m.inRecovery = false
                    m.recoveryPoint = m.una < m.sent ? m.sent : nil
                    for o in 0..<length { m.sacked[o] = false }
                    m.retransmittedEnd = m.una
                    m.rescueEnd = nil
                }
            }
            #expect(b.sackedRanges == m.runs.map { range($0.lowerBound, $0.upperBound) }, "\(label)")
            #expect(b.pipe == m.pipe, "\(label)")
            #expect(b.isInRecovery == m.inRecovery, "\(label)")
            let lost = m.lost
            let sampled = (m.una..<m.sent).filter { $0 % max(1, smss / 7) == 0 || m.sacked[$0] != m.sacked[max(0, $0 - 1)] }
            let mismatches = sampled.filter { b.isLost(seq($0)) != lost[$0] }
            #expect(mismatches.isEmpty, "\(label): IsLost differs at \(mismatches.prefix(5))")
        }
    }
}
