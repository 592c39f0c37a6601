import Testing
import OffloadCore
import OffloadWire
import OffloadLink
import OffloadSim
import OffloadHost
import OffloadTCP

/// Two hosts on a memory wire, run by a simulation.
final class TwoHosts {
    let sim: Simulation
    let a: IPv4Host, b: IPv4Host
    var linkA: MemoryLink, linkB: MemoryLink
    let pool = BufferPool(count: 64, bufferSize: 2048, headroom: 0)

    init(seed: UInt64, impairments: Impairments = .none, neighbors: NeighborCache.Configuration = .init(),
         tcp: TCPStack.Configuration? = nil, pendingPerNeighbor: Int? = nil) throws {
        sim = Simulation(seed: seed)
        (linkA, linkB) = MemoryLink.pair(clock: sim.clock, seed: seed, forward: impairments, backward: impairments)
        var configA = IPv4Host.Configuration(interface: try IPv4CIDR(parsing: "10.5.0.1/24"), hardwareAddress: .local(1))
        var configB = IPv4Host.Configuration(interface: try IPv4CIDR(parsing: "10.5.0.2/24"), hardwareAddress: .local(2))
        configA.neighbors = neighbors
        configB.neighbors = neighbors
        if let pendingPerNeighbor {
            configA.pendingPerNeighbor = pendingPerNeighbor
            configB.pendingPerNeighbor = pendingPerNeighbor
        }
        a = IPv4Host(configA, tcp: tcp)
        b = IPv4Host(configB, tcp: tcp.map { var c = $0; c.seed &+= 1; return c })
        sim.addProcess("a") { [unowned self] in self.step(host: self.a, isA: true) }
        sim.addProcess("b") { [unowned self] in self.step(host: self.b, isA: false) }
    }

    func send(_ isA: Bool) -> IPv4Host.Transmit {
        { [unowned self] header, payload in
            if isA {
                try! self.linkA.transmit(header: header, payloads: payload, metadata: .none)
            } else {
                try! self.linkB.transmit(header: header, payloads: payload, metadata: .none)
            }
        }
    }

    func step(host: IPv4Host, isA: Bool) -> Bool {
        let now = sim.clock.now
        let transmittedBefore = host.counters.framesTransmitted
        host.poll(now: now, transmit: send(isA))
        // Frames sent from the poll (queued UDP) are work: the other host must run again.
        let transmitted = host.counters.framesTransmitted != transmittedBefore
        var frames: [PacketBufferBox] = []
        let n: Int
        if isA { n = try! linkA.receive(into: pool, max: 32) { frames.append(PacketBufferBox($0)) } }
        else { n = try! linkB.receive(into: pool, max: 32) { frames.append(PacketBufferBox($0)) } }
        for f in frames { host.receive(f.buffer, now: now, transmit: send(isA)) }
        if let next = host.nextDeadline, next > now, n == 0 {
            sim.schedule(at: next) {}
        }
        return n > 0 || transmitted
    }
}

/// Holds a received buffer so that a test can collect a burst and handle it afterwards.
final class PacketBufferBox {
    var buffer: PacketBuffer
    init(_ b: consuming PacketBuffer) { buffer = b }
}

@Suite struct IPv4HostTests {
    @Test func pingResolvesThenEchoes() throws {
        let w = try TwoHosts(seed: 1)
        w.a.ping(IPv4Address(10, 5, 0, 2), identifier: 7, sequence: 1, now: w.sim.clock.now, transmit: w.send(true))
        w.sim.run(until: Instant(nanoseconds: 10_000_000))
        #expect(w.a.echoReplies.map(\.sequence) == [1])
        #expect(w.a.counters.arpRequestsSent == 1)
        #expect(w.b.counters.arpRequestsAnswered == 1)
        #expect(w.b.counters.echoRequestsAnswered == 1)
        #expect(w.a.neighbors.lookup(IPv4Address(10, 5, 0, 2), now: w.sim.clock.now) == .local(2))
        // B learned A from A's request (RFC 826: the request was for B) and needed no ARP of its own.
        #expect(w.b.counters.arpRequestsSent == 0)
        #expect(w.a.counters.totalDrops == 0 && w.b.counters.totalDrops == 0)
        #expect(w.pool.inUse == 0)
    }

    @Test func manyPingsUnderLossGetAnswersForWhatArrives() throws {
        let w = try TwoHosts(seed: 3, impairments: Impairments(loss: 0.1, delay: .microseconds(50)))
        for seq in 0..<200 {
            w.sim.schedule(at: Instant(nanoseconds: Int64(seq) * 1_000_000)) {
                w.a.ping(IPv4Address(10, 5, 0, 2), identifier: 9, sequence: UInt16(seq), now: w.sim.clock.now, transmit: w.send(true))
            }
        }
        w.sim.run(until: Instant(nanoseconds: 5_000_000_000))
        let replies = w.a.echoReplies.count
        // Each ping crosses twice: about 81% come back; ARP retries recover a lost first request.
        #expect(replies > 140 && replies < 185, "replies \(replies)")
        #expect(w.b.counters.echoRequestsAnswered >= UInt64(replies))
    }

    @Test func silentNeighborFailsAfterRetriesAndWaitingPacketsAreDropped() throws {
        var neighbors = NeighborCache.Configuration()
        neighbors.retryInterval = .milliseconds(100)
        neighbors.maxAttempts = 3
        let w = try TwoHosts(seed: 2, neighbors: neighbors, pendingPerNeighbor: 4)
        for seq in 0..<6 {
            w.a.ping(IPv4Address(10, 5, 0, 99), identifier: 1, sequence: UInt16(seq), now: w.sim.clock.now, transmit: w.send(true))
        }
        w.sim.run(until: Instant(nanoseconds: 1_000_000_000))
        #expect(w.a.counters.arpRequestsSent == 3)
        #expect(w.a.counters[drop: .resolutionQueueFull] == 2)
        #expect(w.a.counters[drop: .resolutionFailed] == 4)
        #expect(w.a.neighbors.entries.isEmpty)
    }

    @Test func learnedNeighborsExpire() throws {
        var neighbors = NeighborCache.Configuration()
        neighbors.lifetime = .seconds(2)
        let w = try TwoHosts(seed: 4, neighbors: neighbors)
        w.a.ping(IPv4Address(10, 5, 0, 2), identifier: 1, sequence: 1, now: w.sim.clock.now, transmit: w.send(true))
        w.sim.run(until: Instant(nanoseconds: 100_000_000))
        #expect(w.a.neighbors.entries.count == 1)
        w.sim.run(until: Instant(nanoseconds: 3_000_000_000))
        // Expired: stale, no longer used to send (kept to tell a move).
        let now = w.sim.clock.now
        #expect(w.a.neighbors.lookup(IPv4Address(10, 5, 0, 2), now: now) == nil)
        #expect(w.b.neighbors.lookup(IPv4Address(10, 5, 0, 1), now: now) == nil)
        #expect(w.a.neighbors.entries.values.allSatisfy { if case .stale = $0 { true } else { false } })
        #expect(w.b.neighbors.entries.values.allSatisfy { if case .stale = $0 { true } else { false } })
    }

    @Test func badFramesAreCountedDrops() throws {
        let host = IPv4Host(.init(interface: try IPv4CIDR(parsing: "10.5.0.1/24"), hardwareAddress: .local(1)))
        let pool = BufferPool(count: 4, bufferSize: 2048, headroom: 0)
        var sent = 0
        func deliver(_ bytes: [UInt8]) {
            guard var buffer = pool.take() else { return }
            bytes.withUnsafeBytes { try! buffer.append(contentsOf: $0) }
            host.receive(buffer, now: .zero) { _, _ in sent += 1 }
        }
        let us = MACAddress.local(1).bytes, them = MACAddress.local(5).bytes
        deliver([1, 2, 3])  // shorter than an Ethernet header
        deliver(us + them + [0x86, 0xdd] + [UInt8](repeating: 0, count: 40))  // IPv6
        deliver(MACAddress.local(9).bytes + them + [0x08, 0x00] + [UInt8](repeating: 0, count: 40))  // other MAC
        deliver(us + them + [0x08, 0x06] + [0, 1, 8, 0, 6, 4, 0, 1])  // ARP cut short
        var ip = [UInt8](repeating: 0, count: 28)
        ip.withUnsafeMutableBytes {
            IPv4Repr(source: IPv4Address(10, 5, 0, 2), destination: IPv4Address(10, 5, 0, 1), protocol: .icmp, payloadLength: 8)
                .emit(into: $0, checksums: .verify)
        }
        var badSum = ip
        badSum[8] ^= 1  // TTL changed: header checksum no longer verifies
        deliver(us + them + [0x08, 0x00] + badSum)
        var icmp = ip
        icmp[20] = 8  // echo request with a wrong ICMP checksum (zero)
        deliver(us + them + [0x08, 0x00] + icmp)
        #expect(host.counters[drop: .malformedEthernet] == 1)
        #expect(host.counters[drop: .unsupportedEtherType] == 1)
        #expect(host.counters[drop: .notForUs] == 1)
        #expect(host.counters[drop: .malformedARP] == 1)
        #expect(host.counters[drop: .badChecksum] == 2)
        #expect(sent == 0)
        #expect(host.counters.framesReceived == 6)
    }

    @Test func neighborTableHasACapacity() {
        var config = NeighborCache.Configuration()
        config.capacity = 4
        var cache = NeighborCache(configuration: config)
        for i in 0..<10 {
            let learned = cache.learn(IPv4Address(10, 0, 0, UInt8(i)), is: .local(UInt64(i)), now: Instant(nanoseconds: Int64(i)), add: true)
            #expect(learned == .recorded)
        }
        #expect(cache.entries.count == 4)
        #expect(cache.lookup(IPv4Address(10, 0, 0, 9), now: Instant(nanoseconds: 10)) == .local(9))
        #expect(cache.lookup(IPv4Address(10, 0, 0, 0), now: Instant(nanoseconds: 10)) == nil)
        // A table full of static entries refuses more.
        var busy = NeighborCache(configuration: config)
        for i in 0..<4 { busy.addPermanent(IPv4Address(10, 1, 0, UInt8(i)), is: .local(UInt64(i))) }
        let learned = busy.learn(IPv4Address(10, 2, 0, 1), is: .local(1), now: .zero, add: true)
        #expect(learned == .tableFull)
    }
}
