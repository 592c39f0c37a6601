import Testing
import OffloadCore
import OffloadEngine
import OffloadLink
import OffloadWire

@Suite struct RTPFlowStatisticsTests {
    /// 20 ms G.711 packets (160 timestamp units at 8 kHz), arriving `offsets` ms late.
    func feed(_ sequences: [UInt16], offsetsMs: [Double]? = nil, firstTimestamp: UInt32 = 1000) -> RTPFlowStatistics {
        var s = RTPFlowStatistics()
        for (i, seq) in sequences.enumerated() {
            let n = Int64(seq &- sequences[0])
            let sent = firstTimestamp &+ UInt32(truncatingIfNeeded: n * 160)
            let offset = offsetsMs?[i] ?? 0
            let arrival = Instant(nanoseconds: n * 20_000_000 + Int64(offset * 1_000_000))
            s.record(sequence: seq, timestamp: sent, ssrc: 7, arrival: arrival, clockRate: 8000)
        }
        return s
    }

    @Test func steadyStreamHasNoJitterNoLoss() {
        let s = feed(Array(100..<200))
        #expect(s.packets == 100 && s.expected == 100 && s.lost == 0)
        #expect(s.gaps == 0 && s.reordered == 0 && s.duplicates == 0)
        #expect(s.jitter == 0)
    }

    @Test func gapsCountRunsAndLoss() {
        let s = feed([1, 2, 5, 6, 7, 10])
        #expect(s.gaps == 2)
        #expect(s.expected == 10 && s.lost == 4)
    }

    @Test func reorderingIsCountedNotLost() {
        let s = feed([1, 3, 2, 4, 6, 5])
        #expect(s.reordered == 2)
        #expect(s.lost == 0)
        #expect(s.gaps == 2, "3 after 1 and 6 after 4 were jumps when they came")
    }

    @Test func duplicatesAndWrapAround() {
        let s = feed([65533, 65534, 65535, 65535, 0, 1])
        #expect(s.duplicates == 1 && s.gaps == 0)
        #expect(s.highestExtendedSequence == 65536 + 1)
        #expect(s.expected == 5 && s.lost == -1)
    }

    @Test func jitterFollowsRFC3550() {
        // Every other packet 5 ms late: |D| = 5 ms = 40 units each time; J converges to 40.
        let seqs = Array(UInt16(0)..<UInt16(400))
        let s = feed(seqs, offsetsMs: seqs.map { $0 % 2 == 0 ? 0 : 5 })
        #expect(abs(s.jitter - 40) <= 1, "jitter \(s.jitter)")
        // After the first deviation alone, J = |D|/16 (A.8: J += (|D| - J)/16).
        let one = feed([0, 1], offsetsMs: [0, 10])
        #expect(one.jitter == 80 / 16)
    }

    @Test func otherSSRCIsNotMixedIn() {
        var s = RTPFlowStatistics()
        let first = s.record(sequence: 1, timestamp: 0, ssrc: 1, arrival: .zero, clockRate: 8000)
        let other = s.record(sequence: 2, timestamp: 160, ssrc: 2, arrival: .zero, clockRate: 8000)
        #expect(first && !other)
        #expect(s.packets == 1)
    }
}

/// RTP through the engine in a UDP GSO super-datagram: each of its datagrams is an RTP packet
/// of its own, and each is counted. Only the first was.
@Suite struct RTPSuperDatagramTests {
    @Test func eachDatagramOfASuperDatagramIsCounted() throws {
        let clock = VirtualClock()
        var config = Engine<MemoryLink>.Configuration()
        config.bufferSize = 8192 + Engine<MemoryLink>.headroom
        let (engine, wires) = Engine.onMemoryWires(configuration: config, portCount: 2, clock: clock,
                                                   maxFrameSize: { _ in 8192 }, carriesOffloadMetadata: { _ in true })
        var source = wires[0]
        let src = IPv4Address(10, 1, 0, 2), dst = IPv4Address(10, 2, 0, 2), segment = 172
        let key = FlowKey(ingressPort: 0, protocol: 17, source: src, destination: dst, sourcePort: 5004, destinationPort: 5006)
        engine.reinsertion.send(.install(key, .forward(.init(outputPort: 1, destinationMAC: .local(2),
                                                             sourceMAC: .local(1), carriesRTP: true))))
        engine.poll(now: clock.now)
        // Three RTP packets of 160 bytes of G.711 (12 + 160 bytes each), sequence 100 to 102.
        let payloadLength = 3 * segment
        var frame = [UInt8](repeating: 0, count: 42 + payloadLength)
        frame.withUnsafeMutableBytes { raw in
            EthernetRepr(destination: .local(1), source: .local(9), etherType: .ipv4).emit(into: raw)
            IPv4Repr(source: src, destination: dst, protocol: .udp, payloadLength: 8 + payloadLength)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
            for i in 0..<3 {
                let rtp = 42 + i * segment
                raw[rtp] = 0x80
                raw[rtp + 1] = 0  // PCMU
                raw.storeBytes(of: UInt16(100 + i).bigEndian, toByteOffset: rtp + 2, as: UInt16.self)
                raw.storeBytes(of: UInt32(1000 + 160 * i).bigEndian, toByteOffset: rtp + 4, as: UInt32.self)
                raw.storeBytes(of: UInt32(7).bigEndian, toByteOffset: rtp + 8, as: UInt32.self)
            }
            UDPRepr(sourcePort: 5004, destinationPort: 5006, payloadLength: payloadLength)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[34...]), source: src, destination: dst,
                      checksums: .partial)
        }
        let superDatagram = OffloadMetadata.udpSegmentation(segmentSize: UInt16(segment), headerLength: 42,
                                                            checksumStart: 34, checksumOffset: 6)
        try frame.withUnsafeBytes { try source.transmit(header: $0, payloads: .none, metadata: superDatagram) }
        engine.poll(now: clock.now)
        #expect(engine.counters.fastPath == 1)
        let stats = engine.rtpStatistics[key]
        #expect(stats?.packets == 3 && stats?.expected == 3 && stats?.lost == 0, "\(String(describing: stats))")
    }
}
