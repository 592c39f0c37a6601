/// One counter per case of a reason enum (drop reasons, exception reasons), in a fixed array.
public struct ReasonCounters<Reason: CaseIterable & Equatable>: Equatable, Sendable {
    @usableFromInline var storage: [UInt64]
    public var values: [UInt64] { storage }

    public init() { storage = [UInt64](repeating: 0, count: Reason.allCases.count) }

    @inlinable
    public subscript(_ reason: Reason) -> UInt64 {
        get { storage[index(reason)] }
        set { storage[index(reason)] = newValue }
    }

    // Inlinable so that the search is specialized for the reason type where it is used:
    // unspecialized, every count looked up generic metadata in the runtime.
    @inlinable
    func index(_ reason: Reason) -> Int {
        Reason.allCases.distance(from: Reason.allCases.startIndex, to: Reason.allCases.firstIndex(of: reason)!)
    }

    public var total: UInt64 { values.reduce(0, &+) }

    /// `prefix` and each reason's description, with its value, in case order.
    public func rows(_ prefix: String) -> [(String, UInt64)] {
        zip(Reason.allCases, values).map { ("\(prefix)\($0.0)", $0.1) }
    }
}
