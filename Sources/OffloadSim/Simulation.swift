import OffloadCore

/// A deterministic world: a virtual clock, timed events, and processes (an engine's poll
/// loop, the host software, a traffic source) whose steps the simulation interleaves in an
/// order drawn from its seed. The same seed gives the same interleaving, the same timings
/// and so the same run; a failing seed is a reproducible bug.
///
/// Each round, the simulation picks one process at random (weighted) and steps it. A step
/// says whether it did any work. When every process has been found idle since the last
/// work was done, time jumps to the next timed event. With no work and no events left the
/// world is quiescent and `run` returns.
public final class Simulation {
    public let clock: VirtualClock
    public private(set) var random: SeededRandom
    public let seed: UInt64

    private var processes: [Process] = []
    private var events = EventQueue()
    private var nextEventID: UInt64 = 0
    /// Processes found idle since work was last done; when all are, time moves.
    private var idleSinceWork: Set<Int> = []
    /// A running hash of which process ran at which step: equal seeds give equal traces.
    public private(set) var traceHash: UInt64 = 0xcbf2_9ce4_8422_2325
    public private(set) var steps: UInt64 = 0
    public private(set) var eventsFired: UInt64 = 0

    public init(seed: UInt64, start: Instant = .zero) {
        self.seed = seed
        clock = VirtualClock(start: start)
        random = SeededRandom(seed: seed)
    }

    /// Adds a process. `weight` sets how often it is picked relative to the others (a slow
    /// software thread has a low weight); `cost` is the virtual time one working step takes.
    /// The simulation keeps `step` as long as it lives: a step that captures the simulation
    /// itself (say, to read `sim.clock`) is a cycle, and neither is ever freed. Capture what
    /// it needs instead (`[clock = sim.clock]`).
    @discardableResult
    public func addProcess(_ name: String, weight: Double = 1, cost: Duration = .zero,
                           step: @escaping () -> Bool) -> ProcessID {
        precondition(weight > 0, "Simulation: a process needs a positive weight")
        processes.append(Process(name: name, weight: weight, cost: cost, step: step))
        return ProcessID(index: processes.count - 1)
    }

    /// Runs `action` at time `at` (now, if `at` has passed). Events at the same time run in
    /// the order they were scheduled.
    @discardableResult
    public func schedule(at: Instant, _ action: @escaping () -> Void) -> EventID {
        nextEventID += 1
        let id = EventID(value: nextEventID)
        events.push(TimedEvent(at: max(at, clock.now), id: id, action: action))
        return id
    }

    @discardableResult
    public func schedule(after delay: Duration, _ action: @escaping () -> Void) -> EventID {
        schedule(at: clock.now + delay, action)
    }

    /// Cancels an event that has not run yet; cancelling a past event does nothing.
    public func cancel(_ id: EventID) { events.cancel(id) }

    /// Tells the simulation that something outside a process's step gave it work (for
    /// example a frame was put on a wire from an event): every process is tried again.
    public func wake() { idleSinceWork.removeAll(keepingCapacity: true) }

    /// Derives an independent generator for a component (a wire, a traffic source).
    public func makeRandom() -> SeededRandom { random.fork() }

    /// Runs until `done` holds, the world is quiescent, `deadline` passes, or `maxSteps`
    /// process steps have run.
    @discardableResult
    public func run(until deadline: Instant? = nil, maxSteps: UInt64 = .max,
                    while condition: () -> Bool = { true }) -> RunOutcome {
        var budget = maxSteps
        while condition() {
            if let d = deadline, clock.now >= d { return .deadline }
            guard budget > 0 else { return .stepLimit }
            if idleSinceWork.count < processes.count {
                let p = pickProcess()
                budget -= 1
                steps += 1
                traceHash = (traceHash ^ UInt64(p)) &* 0x100_0000_01b3
                if processes[p].step() {
                    idleSinceWork.removeAll(keepingCapacity: true)
                    if processes[p].cost != .zero { clock.advance(by: processes[p].cost) }
                } else {
                    idleSinceWork.insert(p)
                }
                fireDueEvents()
                continue
            }
            guard let next = events.nextTime else { return .quiescent }
            if let d = deadline, next > d {
                clock.advance(to: d)
                return .deadline
            }
            clock.advance(to: next)
            fireDueEvents()
            idleSinceWork.removeAll(keepingCapacity: true)
        }
        return .condition
    }

    /// Runs every event whose time has come.
    private func fireDueEvents() {
        while let next = events.nextTime, next <= clock.now {
            let event = events.pop()
            eventsFired += 1
            traceHash = (traceHash ^ event.id.value) &* 0x100_0000_01b3
            event.action()
            wake()
        }
    }

    /// A process drawn by weight from those not known to be idle.
    private func pickProcess() -> Int {
        var total = 0.0
        for (i, p) in processes.enumerated() where !idleSinceWork.contains(i) { total += p.weight }
        var x = random.unit() * total
        var last = 0
        for (i, p) in processes.enumerated() where !idleSinceWork.contains(i) {
            last = i
            x -= p.weight
            if x < 0 { return i }
        }
        return last
    }

    public var processNames: [String] { processes.map(\.name) }
}

/// Why `Simulation.run` returned.
public enum RunOutcome: Equatable, Sendable {
    /// The `while` condition turned false.
    case condition
    /// No process has work and no event is scheduled.
    case quiescent
    case deadline
    case stepLimit
}

public struct ProcessID: Hashable, Sendable { public let index: Int }
public struct EventID: Hashable, Sendable { public let value: UInt64 }

struct Process {
    let name: String
    let weight: Double
    let cost: Duration
    let step: () -> Bool
}
