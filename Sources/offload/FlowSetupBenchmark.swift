import COffloadShim
import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink
import OffloadWire

/// New flows per second through the slow path with the order guard on: every packet is the
/// first of its flow, so each one misses, makes a pending entry, crosses to the software
/// (on the same core here), has its action installed and comes back to be completed.
enum FlowSetupBenchmark {
    static func run(seconds: Double) -> BenchResult {
        let clock = MonotonicClock()
        let flows = 1 << 20
        var config = Engine<MemoryLink>.Configuration()
        config.tableCapacity = flows
        config.queueCapacity = 4096
        config.expiryBudget = 0
        var outside: [MemoryLink] = []
        let engine = Engine<MemoryLink>(configuration: config, portCount: 2, clock: clock) { i in
            let (o, e) = MemoryLink.pair(clock: clock, seed: UInt64(i), maxFrameSize: 128, framesInFlight: 256)
            outside.append(o)
            return e
        }
        var source = outside[0], sink = outside[1]
        let gateway = MACAddress.local(0xaa)
        let slowPath = SlowPath(exceptions: engine.exceptions, reinsertion: engine.reinsertion, processing: .partial) { key in
            .forward(.init(outputPort: 1, destinationMAC: .local(2), sourceMAC: gateway,
                           translatedSource: IPv4Address(192, 0, 2, 1), translatedSourcePort: key.sourcePort))
        }
        var frame = [UInt8](repeating: 0, count: 64)
        let dst = IPv4Address(10, 200, 0, 1)
        let sinkPool = BufferPool(count: 256, bufferSize: 2048, headroom: 0)
        var sent = 0, completed = 0
        let start = clock.now
        let end = start + .nanoseconds(Int64(seconds * 1e9))
        while clock.now < end, sent + 32 <= flows {
            for _ in 0..<32 {
                let src = IPv4Address(rawValue: 0x0b00_0000 | UInt32(sent))
                frame.withUnsafeMutableBytes { raw in
                    EthernetRepr(destination: gateway, source: .local(1), etherType: .ipv4).emit(into: raw)
                    IPv4Repr(source: src, destination: dst, protocol: .udp, payloadLength: 30)
                        .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
                    UDPRepr(sourcePort: 5000, destinationPort: 4000, payloadLength: 22)
                        .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[34...]), source: src, destination: dst,
                              checksums: .verify)
                }
                try? frame.withUnsafeBytes { try source.transmit($0) }
                sent += 1
            }
            engine.poll(now: clock.now)
            while slowPath.step(max: 64) > 0 { engine.poll(now: clock.now) }
            completed &+= (try? sink.receive(into: sinkPool, max: 256) { _ in }) ?? 0
        }
        let elapsed = Double((clock.now - start).nanoseconds) / 1e9
        return BenchResult(name: "flow setup, guard on", value: Double(completed) / elapsed / 1e6, unit: "M flows/s",
                           reference: nil, target: ">= 1 M flows/s")
    }
}
