#if os(Linux)
import Foundation
import Glibc
import Testing
import OffloadHost

@Suite struct ThreadNiceTests {
    /// Runs `body` on a thread of its own (so that the test's thread keeps its value) and
    /// returns what it returned.
    func onNewThread<T: Sendable>(_ body: @escaping @Sendable () -> T) -> T {
        let box = ResultBox<T>()
        let thread = Thread { box.set(body()) }
        thread.start()
        return box.wait()
    }

    @Test func aValueHoldsForTheThreadAndTheThreadsItStarts() {
        let before = ThreadNice.current
        // Raising the value (less priority) needs no privilege.
        let seen = onNewThread { () -> [Int32] in
            let target = min(ThreadNice.current + 3, ThreadNice.range.upperBound)
            do { try ThreadNice.set(target) } catch { return [] }
            return [target, ThreadNice.current, onNewThread { ThreadNice.current }]
        }
        #expect(seen.count == 3 && seen[1] == seen[0] && seen[2] == seen[0], "\(seen)")
        #expect(ThreadNice.current == before)
    }

    @Test func aValueOutOfRangeIsRefused() {
        for value: Int32 in [-21, 20] {
            let error = #expect(throws: ThreadNice.Refused.self) { try ThreadNice.set(value) }
            #expect(error?.value == value && error?.errno == EINVAL)
        }
    }
}

/// One value handed from a thread to the one that waits for it.
private final class ResultBox<T: Sendable>: @unchecked Sendable {
    private let condition = NSCondition()
    private var value: T?

    func set(_ value: T) {
        condition.lock()
        self.value = value
        condition.signal()
        condition.unlock()
    }

    func wait() -> T {
        condition.lock()
        defer { condition.unlock() }
        while value == nil { condition.wait() }
        return value!
    }
}
#endif
