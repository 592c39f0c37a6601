import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink
import OffloadSim
import OffloadTCP

/// Two hosts behind their engines (`HostEndpoint`), joined by a memory wire and run by a
/// simulation: every frame crosses an engine, and with `offload` the engines run the
/// established connections (seed 003).
final class TwoEndpoints {
    let sim: Simulation
    let a: HostEndpoint<MemoryLink>, b: HostEndpoint<MemoryLink>

    /// `tso`: the wire carries offload metadata, so the engines send TSO super-segments of
    /// up to 64 KiB (delivered whole, as GRO would).
    init(seed: UInt64, impairments: Impairments = .none, offload: Bool = true, tso: Bool = false,
         tcp: TCPStack.Configuration = .init(), engine: Engine<MemoryLink>.Configuration = .init(),
         witness: ((UnsafeRawBufferPointer) -> Void)? = nil) throws {
        sim = Simulation(seed: seed)
        var engine = engine
        if tso {
            engine.bufferSize = 65_536 + 14 + Engine<MemoryLink>.headroom
            engine.bufferCount = 256
        }
        let (linkA, linkB) = MemoryLink.pair(clock: sim.clock, seed: seed, forward: impairments, backward: impairments,
                                             maxFrameSize: tso ? 65_536 + 14 : 2048, framesInFlight: tso ? 128 : 1024,
                                             carriesOffloadMetadata: tso)
        if let witness { linkA.witnessPayloads(witness) }
        let configA = IPv4Host.Configuration(interface: try IPv4CIDR(parsing: "10.6.0.1/24"), hardwareAddress: .local(1))
        let configB = IPv4Host.Configuration(interface: try IPv4CIDR(parsing: "10.6.0.2/24"), hardwareAddress: .local(2))
        var tcpB = tcp
        tcpB.seed &+= 1
        a = try HostEndpoint(host: configA, tcp: tcp, engine: engine, offload: offload, clock: sim.clock) { linkA }
        b = try HostEndpoint(host: configB, tcp: tcpB, engine: engine, offload: offload, clock: sim.clock) { linkB }
        sim.addProcess("a") { [unowned self] in self.step(self.a) }
        sim.addProcess("b") { [unowned self] in self.step(self.b) }
    }

    private func step(_ endpoint: HostEndpoint<MemoryLink>) -> Bool {
        let (again, wakeAt) = endpoint.scheduledTurn(now: sim.clock.now)
        if let wakeAt { sim.schedule(at: wakeAt) {} }
        return again
    }
}
