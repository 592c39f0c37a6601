import Synchronization

/// The MTU of each of the engine's ports (the largest IPv4 packet it sends as one frame),
/// read by the engine's fast path and the software's slow path, which may run on two
/// threads. An interface's MTU can change while the engine runs (`ip link set … mtu`): the
/// engine asks its ports again each second (`Link.currentMTU()`) and stores what changed.
/// Only the engine's thread stores; relaxed loads suffice, since each value stands alone.
public final class PortMTUs: @unchecked Sendable {
    /// Raw memory the fast path reads with no bounds check or reference count.
    let values: UnsafeMutablePointer<Atomic<Int>>
    public let count: Int

    init(_ mtus: [Int]) {
        count = mtus.count
        values = .allocate(capacity: max(1, mtus.count))
        for (port, mtu) in mtus.enumerated() { (values + port).initialize(to: Atomic(mtu)) }
    }

    deinit {
        values.deinitialize(count: count)
        values.deallocate()
    }

    public subscript(port: Int) -> Int { values[port].load(ordering: .relaxed) }

    /// The smallest port MTU (`Int.max` with no port).
    public var smallest: Int {
        var m = Int.max
        for port in 0..<count { m = min(m, self[port]) }
        return m
    }

    /// The largest port MTU (1500 with no port).
    public var largest: Int {
        var m = count > 0 ? 0 : 1500
        for port in 0..<count { m = max(m, self[port]) }
        return m
    }

    func store(_ mtu: Int, port: Int) { values[port].store(mtu, ordering: .relaxed) }
}
