import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink
import OffloadSim
import OffloadTCP
import OffloadWire

/// Two hosts behind their engines (`HostEndpoint`), joined by a memory wire and run by a
/// simulation: every frame crosses an engine, and with `offload` the engines run the
/// established connections (seed 003).
final class TwoEndpoints {
    let sim: Simulation
    let a: HostEndpoint<MemoryLink>, b: HostEndpoint<MemoryLink>
    /// A's and B's ends of the wire (copies: `setMTU` on one changes the wire).
    let linkA: MemoryLink, linkB: MemoryLink

    /// `tso`: the wire carries offload metadata, so the engines send TSO super-segments of
    /// up to 64 KiB (delivered whole, as GRO would). `hostileCopies`: the wire is two wires
    /// with a relay between them that forwards every frame and, with this chance, sends a
    /// mutated copy of it (`HostileFrames.mutate`) after it. `observe`: the relay is there
    /// too, and shows it each frame it forwards, with the side it came from (0: A, 1: B).
    /// `maxFrameSize`: the wire's largest frame (its MTU is 14 bytes less).
    init(seed: UInt64, impairments: Impairments = .none, offload: Bool = true, tso: Bool = false,
         tcp: TCPStack.Configuration = .init(), engine: Engine<MemoryLink>.Configuration = .init(),
         hostileCopies: Double = 0, witness: ((UnsafeRawBufferPointer) -> Void)? = nil,
         observe: ((_ frame: [UInt8], _ from: Int) -> Void)? = nil, maxFrameSize: Int? = nil,
         pathAnswer: (([UInt8]) -> [UInt8]?)? = nil) throws {
        let sim = Simulation(seed: seed)
        self.sim = sim
        var engine = engine
        if tso {
            engine.bufferSize = 65_536 + 14 + Engine<MemoryLink>.headroom
            engine.bufferCount = 256
        }
        let maxFrameSize = maxFrameSize ?? (tso ? 65_536 + 14 : 2048)
        let pair = { (seed: UInt64) in
            MemoryLink.pair(clock: sim.clock, seed: seed, forward: impairments, backward: impairments,
                            maxFrameSize: maxFrameSize, framesInFlight: tso ? 128 : 1024, carriesOffloadMetadata: tso)
        }
        let linkA: MemoryLink, linkB: MemoryLink
        if hostileCopies > 0 || observe != nil || pathAnswer != nil {
            let (a, relayA) = pair(seed), (relayB, b) = pair(seed &+ 1)
            (linkA, linkB) = (a, b)
            var ends = [relayA, relayB]
            let pool = BufferPool(count: 64, bufferSize: maxFrameSize, headroom: 0)
            var random = SeededRandom(seed: seed ^ 0x6d65_6464_6c65)
            sim.addProcess("relay") {
                var moved = 0
                for from in 0..<2 {
                    var frames: [([UInt8], OffloadMetadata)] = []
                    moved += (try? ends[from].receive(into: pool, max: 32) { frames.append((Array($0.bytes), $0.offload)) }) ?? 0
                    for (var frame, metadata) in frames {
                        observe?(frame, from)
                        // A router in A's path that answers some of A's frames (with an ICMP
                        // error) instead of passing them on.
                        if let pathAnswer, from == 0, let answer = pathAnswer(frame) {
                            _ = try? answer.withUnsafeBytes { try ends[0].transmit($0) }
                            continue
                        }
                        func send() {
                            try? frame.withUnsafeBytes { try ends[1 - from].transmit(header: $0, payloads: .none, metadata: metadata) }
                        }
                        send()
                        guard random.chance(hostileCopies) else { continue }
                        HostileFrames.mutate(&frame, &random)
                        send()
                    }
                }
                return moved > 0
            }
        } else {
            (linkA, linkB) = pair(seed)
        }
        if let witness { linkA.witnessPayloads(witness) }
        self.linkA = linkA
        self.linkB = linkB
        let configA = IPv4Host.Configuration(interface: try IPv4CIDR(parsing: "10.6.0.1/24"), hardwareAddress: .local(1))
        let configB = IPv4Host.Configuration(interface: try IPv4CIDR(parsing: "10.6.0.2/24"), hardwareAddress: .local(2))
        var tcpB = tcp
        tcpB.seed &+= 1
        a = try HostEndpoint(host: configA, tcp: tcp, engine: engine, offload: offload, clock: sim.clock) { linkA }
        b = try HostEndpoint(host: configB, tcp: tcpB, engine: engine, offload: offload, clock: sim.clock) { linkB }
        sim.addProcess("a") { [unowned self] in self.step(self.a) }
        sim.addProcess("b") { [unowned self] in self.step(self.b) }
    }

    /// A router's ICMP "fragmentation needed" (RFC 1191) for an IPv4 frame longer than `mtu`
    /// with DF set, sent back to its sender from 10.6.0.254; nil for any other frame.
    static func fragmentationNeeded(_ frame: [UInt8], mtu: Int) -> [UInt8]? {
        unreachable(frame, code: 4, mtu: mtu) { ip in ip.totalLength > mtu && ip.dontFragment }
    }

    /// A router's ICMP destination unreachable with `code` (and `mtu` for code 4) for an IPv4
    /// frame that `applies` to, sent back to its sender from 10.6.0.254; nil for any other.
    static func unreachable(_ frame: [UInt8], code: UInt8, mtu: Int = 0,
                            when applies: (IPv4Packet) -> Bool) -> [UInt8]? {
        frame.withUnsafeBytes { raw -> [UInt8]? in
            guard let ethernet = try? EthernetFrame(checking: raw), ethernet.etherType == .ipv4,
                  let ip = try? IPv4Packet(checking: ethernet.payload), applies(ip),
                  let quoted = try? IPv4Repr.parse(ip, checksums: .ignore), ip.payload.count >= 8 else { return nil }
            let icmp = ICMPv4Repr.destinationUnreachable(code: code, nextHopMTU: UInt16(mtu), quoted: quoted,
                                                         quotedDataLength: 8)
            let packet = IPv4Repr(source: IPv4Address(10, 6, 0, 254), destination: ip.source, protocol: .icmp,
                                  payloadLength: icmp.bufferLength)
            var answer = [UInt8](repeating: 0, count: 14 + packet.bufferLength)
            answer.withUnsafeMutableBytes { out in
                EthernetRepr(destination: ethernet.source, source: ethernet.destination, etherType: .ipv4).emit(into: out)
                let message = UnsafeMutableRawBufferPointer(rebasing: out[34...])
                UnsafeMutableRawBufferPointer(rebasing: message[icmp.headerLength...])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: ip.payload[..<8]))
                icmp.emit(into: message, checksums: .verify)
                packet.emit(into: UnsafeMutableRawBufferPointer(rebasing: out[14...]), checksums: .verify)
            }
            return answer
        }
    }

    private func step(_ endpoint: HostEndpoint<MemoryLink>) -> Bool {
        let (again, wakeAt) = endpoint.scheduledTurn(now: sim.clock.now)
        if let wakeAt { sim.schedule(at: wakeAt) {} }
        return again
    }
}
