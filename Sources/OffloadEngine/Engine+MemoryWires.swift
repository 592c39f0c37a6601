import OffloadCore
import OffloadLink

extension Engine where Port == MemoryLink {
    /// An engine whose ports are memory wires, and the far end of each wire (index = port):
    /// the set-up of simulations, tests, benchmarks and the demo. Wire `i` is seeded with
    /// `seed + i` and carries `impairments(i)` from the far end into the engine, and frames
    /// of up to `maxFrameSize(i)` bytes (its MTU 14 bytes less), with their offload metadata
    /// when `carriesOffloadMetadata(i)`.
    public static func onMemoryWires(
        configuration: Configuration, portCount: Int, clock: any Clock, seed: UInt64 = 0,
        maxFrameSize: (Int) -> Int = { _ in 2048 }, framesInFlight: Int = 1024,
        carriesOffloadMetadata: (Int) -> Bool = { _ in false },
        impairments: (Int) -> Impairments = { _ in .none }, log: @escaping (String) -> Void = { print($0) }
    ) -> (engine: Engine<MemoryLink>, farEnds: [MemoryLink]) {
        var farEnds: [MemoryLink] = []
        let engine = Engine(configuration: configuration, portCount: portCount, clock: clock, log: log) { i in
            let (far, near) = MemoryLink.pair(clock: clock, seed: seed &+ UInt64(i), forward: impairments(i),
                                              maxFrameSize: maxFrameSize(i), framesInFlight: framesInFlight,
                                              carriesOffloadMetadata: carriesOffloadMetadata(i))
            farEnds.append(far)
            return near
        }
        return (engine, farEnds)
    }
}
