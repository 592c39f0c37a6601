/// The offload slot of each connection by the host's name for it (the host's commands name
/// connections that way): open addressing over at least twice as many places as there are
/// slots, so it is never more than half full; linear probing; deletion by backward shift, so
/// no tombstones. One 8-byte word a place (the host's name above, the slot + 1 below, 0 for
/// empty), allocated once: 16 bytes of engine memory per connection, counted in
/// `TCPOffloadTable.bytesPerConnection`.
struct HostSlotIndex {
    private var places: [UInt64]
    private let mask: Int
    private(set) var count = 0

    init(capacity: Int) {
        var n = 2
        while n < 2 * capacity { n <<= 1 }
        places = Array(repeating: 0, count: n)
        mask = n - 1
    }

    static var bytesPerConnection: Int { 2 * MemoryLayout<UInt64>.stride }

    /// Host names come from the host (a counter), not the network: a multiplicative hash spreads them.
    private func home(_ host: UInt32) -> Int {
        Int(truncatingIfNeeded: (UInt64(host) &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    subscript(_ host: UInt32) -> UInt32? {
        var i = home(host)
        while places[i] != 0 {
            if UInt32(truncatingIfNeeded: places[i] >> 32) == host { return UInt32(truncatingIfNeeded: places[i]) - 1 }
            i = (i + 1) & mask
        }
        return nil
    }

    /// Adds a host name that is not in the index (at most `capacity` names are held).
    mutating func insert(host: UInt32, slot: UInt32) {
        precondition(count < places.count / 2, "HostSlotIndex: more names than slots")
        var i = home(host)
        while places[i] != 0 {
            precondition(UInt32(truncatingIfNeeded: places[i] >> 32) != host, "HostSlotIndex: \(host) is held")
            i = (i + 1) & mask
        }
        places[i] = UInt64(host) << 32 | UInt64(slot + 1)
        count += 1
    }

    /// Removes a host name, if held: the places after it in its run move back into the gap
    /// when their home allows, so that every name stays reachable from its home.
    mutating func remove(host: UInt32) {
        var i = home(host)
        while places[i] != 0 && UInt32(truncatingIfNeeded: places[i] >> 32) != host { i = (i + 1) & mask }
        guard places[i] != 0 else { return }
        var gap = i, j = i
        while true {
            j = (j + 1) & mask
            guard places[j] != 0 else { break }
            // Moves back unless its home lies cyclically in (gap, j].
            let h = home(UInt32(truncatingIfNeeded: places[j] >> 32))
            if (j - h) & mask >= (j - gap) & mask {
                places[gap] = places[j]
                gap = j
            }
        }
        places[gap] = 0
        count -= 1
    }
}
