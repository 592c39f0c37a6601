import Testing
import OffloadCore
import OffloadSim

/// Two producers and a consumer sharing a queue; returns the consumed order.
func interleaving(seed: UInt64, weights: (Double, Double) = (1, 1)) -> (order: [String], sim: Simulation) {
    let sim = Simulation(seed: seed)
    var queue: [String] = []
    var left = (a: 50, b: 50)
    var consumed: [String] = []
    sim.addProcess("a", weight: weights.0) {
        guard left.a > 0 else { return false }
        left.a -= 1; queue.append("a"); return true
    }
    sim.addProcess("b", weight: weights.1) {
        guard left.b > 0 else { return false }
        left.b -= 1; queue.append("b"); return true
    }
    sim.addProcess("consumer") {
        guard !queue.isEmpty else { return false }
        consumed.append(queue.removeFirst()); return true
    }
    #expect(sim.run() == .quiescent)
    return (consumed, sim)
}

@Suite struct SimulationTests {
    @Test func sameSeedSameInterleaving() {
        let x = interleaving(seed: 11), y = interleaving(seed: 11)
        #expect(x.order == y.order)
        #expect(x.sim.traceHash == y.sim.traceHash)
        #expect(x.order.count == 100)
    }

    @Test func seedsExploreDifferentInterleavings() {
        let orders = Set((0..<50).map { interleaving(seed: $0).order })
        #expect(orders.count > 40)
    }

    @Test func weightsSetHowOftenAProcessRuns() {
        // With "a" ten times as likely, a's 50 items are mostly consumed before b's.
        let order = interleaving(seed: 5, weights: (10, 1)).order
        let firstHalf = order.prefix(50).filter { $0 == "a" }.count
        #expect(firstHalf > 35)
    }

    @Test func timeJumpsToEventsOnlyWhenIdle() {
        let sim = Simulation(seed: 1)
        var fired: [(String, Int64)] = []
        var work = 3
        sim.addProcess("worker", cost: .microseconds(1)) {
            guard work > 0 else { return false }
            work -= 1; return true
        }
        sim.schedule(after: .milliseconds(2)) { fired.append(("late", sim.clock.now.nanoseconds)) }
        sim.schedule(after: .milliseconds(1)) {
            fired.append(("early", sim.clock.now.nanoseconds))
            work = 2
        }
        let cancelled = sim.schedule(after: .milliseconds(3)) { fired.append(("cancelled", 0)) }
        sim.cancel(cancelled)
        #expect(sim.run() == .quiescent)
        #expect(fired.map(\.0) == ["early", "late"])
        #expect(fired[0].1 == 1_000_000)
        // Two working steps at 1 µs each ran between the events.
        #expect(fired[1].1 == 2_000_000)
        #expect(work == 0)
        #expect(sim.clock.now.nanoseconds == 2_000_000)
    }

    @Test func deadlineAndStepLimit() {
        let sim = Simulation(seed: 2)
        sim.addProcess("spinner") { true }
        #expect(sim.run(maxSteps: 10) == .stepLimit)
        #expect(sim.steps == 10)
        let timed = Simulation(seed: 2)
        var ticks = 0
        func tick() { ticks += 1; timed.schedule(after: .milliseconds(1)) { tick() } }
        tick()
        #expect(timed.run(until: Instant(nanoseconds: 10_500_000)) == .deadline)
        #expect(ticks == 11)
        #expect(timed.clock.now.nanoseconds == 10_500_000)
    }

    @Test func equalTimesRunInScheduleOrder() {
        let sim = Simulation(seed: 3)
        var order: [Int] = []
        for i in 0..<20 { sim.schedule(at: Instant(nanoseconds: 500)) { order.append(i) } }
        sim.run()
        #expect(order == Array(0..<20))
    }
}
