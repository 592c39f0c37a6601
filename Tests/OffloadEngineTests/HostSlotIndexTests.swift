import Testing
import OffloadCore
@testable import OffloadEngine

/// `HostSlotIndex` against a plain Dictionary on random insert, remove and lookup sequences,
/// with names from a small space so that runs, wrap-around and backward shifts are common.
@Suite struct HostSlotIndexTests {
    @Test(arguments: [1, 3, 8, 64])
    func agreesWithADictionary(capacity: Int) {
        var random = SeededRandom(seed: UInt64(capacity))
        var index = HostSlotIndex(capacity: capacity)
        var model: [UInt32: UInt32] = [:]
        var freeSlots = Array(0..<UInt32(capacity))
        // Names spread over a space a few times the capacity, some far apart.
        let names = (0..<(4 * capacity)).map { i in i % 3 == 0 ? UInt32(i) : UInt32(truncatingIfNeeded: random.next()) }
        for step in 0..<20_000 {
            let name = names[Int(random.next() % UInt64(names.count))]
            if random.next() % 2 == 0, model[name] == nil, let slot = freeSlots.popLast() {
                index.insert(host: name, slot: slot)
                model[name] = slot
            } else if let slot = model[name] {
                index.remove(host: name)
                model[name] = nil
                freeSlots.append(slot)
            } else {
                index.remove(host: name) // not held: nothing changes
            }
            #expect(index.count == model.count, "step \(step)")
            for n in names where index[n] != model[n] {
                Issue.record("step \(step): \(n) found \(String(describing: index[n])), expected \(String(describing: model[n]))")
                return
            }
        }
    }

    @Test func slotZeroAndTheLargestNamesAreHeld() {
        var index = HostSlotIndex(capacity: 2)
        index.insert(host: 0, slot: 0)
        index.insert(host: .max, slot: 1)
        #expect(index[0] == 0 && index[.max] == 1 && index[1] == nil && index.count == 2)
        index.remove(host: 0)
        #expect(index[0] == nil && index[.max] == 1 && index.count == 1)
    }
}
