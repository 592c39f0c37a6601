import Foundation
import Testing
import OffloadCore
import OffloadTCP

@Suite struct TCPSimulationTests {
    @Test func aCleanTransferBothWays() {
        let outcome = runTransfer(seed: 1, impairments: .init(), bytesAToB: 300_000, bytesBToA: 200_000)
        #expect(outcome.passed, "\(outcome)")
        #expect(outcome.retransmitted == 0, "\(outcome)")
    }

    @Test(arguments: [0.01, 0.05, 0.10])
    func lossyTransfersBothWays(loss: Double) {
        let outcome = runTransfer(seed: 7, impairments: .init(loss: loss, duplication: 0.02, reordering: 0.05),
                                  bytesAToB: 200_000, bytesBToA: 100_000)
        #expect(outcome.passed, "\(outcome)")
    }
}

extension TCPSimulationTests {
    /// 1000 seeds, loss 0 to 10%, with duplication and reordering, NewReno and CUBIC, with
    /// and without SACK and timestamps: every byte both ways, every completion once, nothing
    /// left after close.
    @Test func thousandSeedsOfImpairedTransfers() {
        var failures: [TransferOutcome] = []
        var retransmitted: UInt64 = 0, lostRetransmissions: UInt64 = 0
        for seed in UInt64(1)...1000 {
            let outcome = impairedTransfer(seed: seed)
            retransmitted += outcome.retransmitted
            lostRetransmissions += outcome.lostRetransmissions
            if !outcome.passed { failures.append(outcome) }
        }
        #expect(failures.isEmpty, "\(failures.count) seeds failed; first: \(failures.prefix(3))")
        #expect(retransmitted > 0, "the impairments never made anything be resent")
        #expect(lostRetransmissions > 0, "no retransmission was ever found lost during SACK recovery")
    }
}

/// The scenario of one seed of `thousandSeedsOfImpairedTransfers`, to rerun it alone.
func impairedTransfer(seed: UInt64, trace: Bool = false) -> TransferOutcome {
    var r = SeededRandom(seed: seed &* 31)
    let impairments = TCPWorld.Impairments(
        loss: Double(seed % 11) / 100, duplication: r.chance(0.5) ? 0.02 : 0, reordering: r.chance(0.5) ? 0.1 : 0)
    let sack = r.chance(0.75), timestamps = r.chance(0.75), cubic = r.chance(0.5)
    let bytesAToB = Int(r.next() % 60_000), bytesBToA = Int(r.next() % 30_000)
    // A quarter of the seeds send through a narrow transmit path: a few segments per poll.
    let budget: Int? = r.chance(0.25) ? 1 + Int(r.next() % 4) : nil
    return runTransfer(seed: seed, impairments: impairments, bytesAToB: bytesAToB, bytesBToA: bytesBToA,
                       trace: trace, pollBudget: budget) { c in
        c.tcp.selectiveAcknowledgments = sack
        c.tcp.timestamps = timestamps
        c.tcp.congestionControl = cubic ? .cubic : .newReno
    }
}

@Test(.disabled(if: ProcessInfo.processInfo.environment["TCP_SEED"] == nil, "set TCP_SEED to trace one seed"))
func traceOneSeed() {
    let seed = UInt64(ProcessInfo.processInfo.environment["TCP_SEED"] ?? "") ?? 1
    let outcome = impairedTransfer(seed: seed, trace: true)
    print(outcome.detail)
    #expect(outcome.passed, "\(outcome)")
}
