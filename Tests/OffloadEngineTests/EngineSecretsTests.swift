import Testing
import OffloadCore
@testable import OffloadEngine
import OffloadLink

/// The engine keys its table's hash with the configured seed, and real links draw the seeds
/// a sender could exploit at random.
@Suite struct EngineSecretsTests {
    @Test func theTableIsKeyedByTheConfiguredSeed() {
        let key = FlowKey(ingressPort: 0, protocol: 17, source: IPv4Address(10, 0, 0, 1),
                          destination: IPv4Address(10, 0, 0, 2), sourcePort: 1000, destinationPort: 2000)
        let (a, b) = key.packed
        var homes: Set<Int> = []
        for seed: UInt64 in [1, 2, 3, 0x6f66_666c_6f61_6421] {
            var configuration = Engine<MemoryLink>.Configuration()
            configuration.tableHashSeed = seed
            let (engine, _) = Engine.onMemoryWires(configuration: configuration, portCount: 2, clock: VirtualClock())
            engine.reinsertion.send(.install(key, .drop))
            engine.poll(now: .zero)
            let home = Int(truncatingIfNeeded: FlowKey.tableHash(a, b, seed: seed)) & (engine.table.slotCount - 1)
            #expect(engine.table.lookup(key)?.index == home)
            homes.insert(home)
        }
        #expect(homes.count > 1, "different seeds put the key in different slots")
    }

    @Test func randomizingSecretsDrawsEverySeed() {
        let fixed = Engine<MemoryLink>.Configuration()
        let first = fixed.randomizingSecrets(), second = fixed.randomizingSecrets()
        #expect(first.tableHashSeed != fixed.tableHashSeed && first.tableHashSeed != second.tableHashSeed)
        #expect(first.markSeed != fixed.markSeed && first.markSeed != second.markSeed)
        #expect(first.sourceFairness?.seed != fixed.sourceFairness?.seed)
        #expect(first.sourceFairness?.seed != second.sourceFairness?.seed)
        // Everything else is kept.
        #expect(first.tableCapacity == fixed.tableCapacity && first.orderGuard == fixed.orderGuard)
    }
}
