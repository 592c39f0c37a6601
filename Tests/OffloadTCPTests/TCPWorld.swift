import OffloadCore
import OffloadWire
import OffloadTCP

/// Two TCP stacks joined by a simulated wire with seeded impairments, on a virtual clock.
/// Every segment is written to bytes (header, options, payload gathered from the sender's
/// slices, checksum) and parsed back on arrival, as a real wire would make it.
final class TCPWorld {
    struct Impairments {
        var loss = 0.0
        var duplication = 0.0
        /// Chance that a segment takes an extra delay of up to `reorderDelay` (and so may pass others).
        var reordering = 0.0
        var delay: Duration = .milliseconds(1)
        var reorderDelay: Duration = .milliseconds(3)
    }

    struct InFlight {
        var arrival: Instant
        var order: UInt64
        var toB: Bool
        var bytes: [UInt8]
    }

    let a: TCPStack
    let b: TCPStack
    var now = Instant(nanoseconds: 1_000_000_000)
    var impairments: Impairments
    var random: SeededRandom
    private var wire: [InFlight] = []
    private var order: UInt64 = 0
    private(set) var segmentsCarried = 0
    private(set) var badSegments = 0
    var trace = false
    /// Segments a stack may send per poll (the transmit path's room); nil for no bound.
    var pollBudget: Int?

    static let addressA = IPv4Address(10, 0, 0, 1)
    static let addressB = IPv4Address(10, 0, 0, 2)

    init(seed: UInt64, impairments: Impairments = .init(), configure: (inout TCPStack.Configuration) -> Void = { _ in }) {
        var configuration = TCPStack.Configuration()
        configure(&configuration)
        configuration.seed = seed
        a = TCPStack(address: Self.addressA, configuration: configuration)
        configuration.seed = seed &+ 1
        b = TCPStack(address: Self.addressB, configuration: configuration)
        self.impairments = impairments
        random = SeededRandom(seed: seed &* 0x9E37_79B9_7F4A_7C15)
    }

    /// Sends what both stacks have due, delivers what arrives by the next event, moves the
    /// clock. Returns false when nothing will ever happen again.
    @discardableResult
    func step() -> Bool {
        flush(a, toB: true)
        flush(b, toB: false)
        var next = wire.min { ($0.arrival, $0.order) < ($1.arrival, $1.order) }?.arrival
        if a.hasOutput || b.hasOutput { next = now } // the budget held some back: poll again now
        for t in [a.nextDeadline, b.nextDeadline] {
            if let t, next.map({ t < $0 }) ?? true { next = t }
        }
        guard let next else { return false }
        if next > now { now = next }
        deliverArrived()
        return true
    }

    /// Steps until `done` holds or `limit` of virtual time passes; returns whether it held.
    @discardableResult
    func run(for limit: Duration = .seconds(600), until done: () -> Bool) -> Bool {
        let end = now + limit
        while !done() {
            guard now < end, step() else { return done() }
        }
        return true
    }

    private func flush(_ stack: TCPStack, toB: Bool) {
        let source = toB ? Self.addressA : Self.addressB
        let destination = toB ? Self.addressB : Self.addressA
        stack.poll(now: now, budget: pollBudget ?? .max) { _, header, payload in
            var bytes = [UInt8](repeating: 0, count: header.bufferLength)
            bytes.withUnsafeMutableBytes { out in
                var at = header.headerLength
                for slice in payload {
                    UnsafeMutableRawBufferPointer(rebasing: out[at..<(at + slice.count)]).copyMemory(from: slice)
                    at += slice.count
                }
                precondition(at == header.bufferLength, "TCPWorld: payload slices do not match the header")
                header.emit(into: out, source: source, destination: destination, checksums: .verify)
            }
            if trace { print("\(now) \(toB ? "A→B" : "B→A") \(header.flags) seq \(header.sequenceNumber) ack \(header.acknowledgmentNumber) win \(header.windowSize) len \(header.payloadLength) ts \(header.timestamp.map { "\($0.value)/\($0.echoReply)" } ?? "-") \(header.sackBlocks.map { "\($0.left)-\($0.right)" })") }
            transmit(bytes, toB: toB)
        }
    }

    private func transmit(_ bytes: [UInt8], toB: Bool) {
        segmentsCarried += 1
        if random.chance(impairments.loss) { return }
        let copies = random.chance(impairments.duplication) ? 2 : 1
        for _ in 0..<copies {
            var delay = impairments.delay
            if random.chance(impairments.reordering) {
                delay += .nanoseconds(Int64(random.unit() * Double(impairments.reorderDelay.nanoseconds)))
            }
            order += 1
            wire.append(InFlight(arrival: now + delay, order: order, toB: toB, bytes: bytes))
        }
    }

    private func deliverArrived() {
        while let i = wire.indices.filter({ wire[$0].arrival <= now })
            .min(by: { (wire[$0].arrival, wire[$0].order) < (wire[$1].arrival, wire[$1].order) }) {
            let segment = wire.remove(at: i)
            let (stack, source, destination) = segment.toB
                ? (b, Self.addressA, Self.addressB) : (a, Self.addressB, Self.addressA)
            segment.bytes.withUnsafeBytes { raw in
                do {
                    let packet = try TCPPacket(checking: raw)
                    let header = try TCPRepr.parse(packet, source: source, destination: destination, checksums: .verify)
                    stack.receive(header, payload: packet.payload, source: source, destination: destination, now: now)
                } catch {
                    badSegments += 1
                }
            }
        }
    }
}

