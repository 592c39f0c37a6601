/// Something with named counters that can be printed as an aligned two-column table.
public protocol CounterTable {
    /// Name and value of every counter, in a stable order.
    var rows: [(String, UInt64)] { get }
}

extension CounterTable {
    public var table: String {
        let width = rows.map(\.0.count).max() ?? 0
        return rows.map { name, value in
            name + String(repeating: " ", count: width - name.count + 2) + String(value)
        }.joined(separator: "\n")
    }
}
