import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink
import OffloadSim
import OffloadTCP

/// The demo's world, all in one simulation:
///
///     client 10.1.0.2 ── wire ── [port 0  gateway  port 1] ── wire ── server 10.2.0.2
///     (engine + host)            10.1.0.1   NAT   10.2.0.1            (engine + host)
///
/// Each host is a `HostEndpoint`: an engine that runs its offloaded TCP connections, and
/// host software behind it. The gateway is an engine and its slow path (routes, NAT, ARP).
/// Its software is slower than its engine (each step costs virtual time), so packets of a
/// new flow keep arriving while the software builds the flow's entry: the order guard's case.
final class DemoNetwork {
    static let clientAddress = IPv4Address(10, 1, 0, 2), serverAddress = IPv4Address(10, 2, 0, 2)
    static let gatewayInside = IPv4Address(10, 1, 0, 1), gatewayOutside = IPv4Address(10, 2, 0, 1)

    let sim: Simulation
    let client: HostEndpoint<MemoryLink>
    let server: HostEndpoint<MemoryLink>
    let gateway: Engine<TappedLink<MemoryLink>>
    let gatewayPolicy: GatewayPolicy
    let gatewaySoftware: SlowPath
    let order = GatewayOrderWitness()
    let capture: PcapFileWriter?
    /// The gateway's statistics of the RTP flows, kept when the streams end (before their
    /// entries idle out), or read at the end of a shorter run.
    var rtpSnapshot: [RTPFlowStatistics]?
    var rtpStatistics: [RTPFlowStatistics] { rtpSnapshot ?? Array(gateway.rtpStatistics.values) }
    /// The wires' ends at the hosts, for their counters (loss).
    private let clientEnd: MemoryLink, serverEnd: MemoryLink

    init(_ configuration: DemoConfiguration) throws {
        sim = Simulation(seed: configuration.seed)
        let clock = sim.clock
        let loss = Impairments(loss: configuration.loss)
        let (clientEnd, gatewayInsideEnd) = MemoryLink.pair(clock: clock, seed: configuration.seed, forward: loss,
                                                             backward: loss, framesInFlight: 4096)
        let (gatewayOutsideEnd, serverEnd) = MemoryLink.pair(clock: clock, seed: configuration.seed &+ 1, forward: loss,
                                                              backward: loss, framesInFlight: 4096)
        self.clientEnd = clientEnd
        self.serverEnd = serverEnd

        var tcp = TCPStack.Configuration()
        tcp.tcp.maximumSegmentLifetime = .milliseconds(500)
        tcp.seed = configuration.seed
        var clientConfiguration = IPv4Host.Configuration(
            interface: try IPv4CIDR(address: Self.clientAddress, prefixLength: 24), hardwareAddress: .local(0xc1),
            gateway: Self.gatewayInside)
        // Every flow starts at once, all waiting for the gateway's ARP reply: a SYN per
        // connection and the first datagrams of each UDP flow.
        clientConfiguration.pendingPerNeighbor = 8 * configuration.flows + 64
        client = try HostEndpoint(host: clientConfiguration, tcp: tcp, offload: true, clock: clock) { clientEnd }
        tcp.seed &+= 1
        var serverConfiguration = IPv4Host.Configuration(
            interface: try IPv4CIDR(address: Self.serverAddress, prefixLength: 24), hardwareAddress: .local(0x51))
        serverConfiguration.pendingPerNeighbor = clientConfiguration.pendingPerNeighbor
        server = try HostEndpoint(host: serverConfiguration, tcp: tcp, offload: true, clock: clock) { serverEnd }

        capture = try configuration.pcapPath.map { path throws(DemoError) in
            do { return try PcapFileWriter(path: path) } catch { throw .setup("cannot write the capture: \(error)") }
        }
        var engineConfiguration = Engine<TappedLink<MemoryLink>>.Configuration()
        engineConfiguration.audit = AuditSwitch(configuration.audit)
        engineConfiguration.orderGuard = configuration.orderGuard
        engineConfiguration.tableCapacity = 4096
        engineConfiguration.announcesTranslations = true
        // Room in the exception queue for every flow's first packets at once: the demo's
        // burst is one client's, which the per-source share (B10) would otherwise clip.
        var queue = 1024
        while queue < 16 * configuration.flows { queue *= 2 }
        engineConfiguration.queueCapacity = queue
        let ends = [gatewayInsideEnd, gatewayOutsideEnd]
        let (order, capture) = (self.order, self.capture)
        gateway = Engine(configuration: engineConfiguration, portCount: 2, clock: clock) { i in
            TappedLink(ends[i]) { direction, header, payloads, metadata in
                capture?.write(header: header, payloads: payloads, metadata: metadata, nanoseconds: clock.now.nanoseconds)
                // The gateway forwards whole frames: the header is the frame.
                switch direction {
                case .received: order.arrived(header, port: UInt16(i))
                case .transmitted: order.departed(header)
                }
            }
        }
        gatewayPolicy = GatewayPolicy(
            ports: [.init(address: try IPv4CIDR(address: Self.gatewayInside, prefixLength: 24), hardwareAddress: .local(0x90)),
                    .init(address: try IPv4CIDR(address: Self.gatewayOutside, prefixLength: 24), hardwareAddress: .local(0x91))],
            routes: RouteTable([.init(prefix: try IPv4CIDR(address: IPv4Address(10, 1, 0, 0), prefixLength: 24), port: 0),
                                .init(prefix: try IPv4CIDR(address: IPv4Address(10, 2, 0, 0), prefixLength: 24), port: 1)]),
            outsidePort: 1, clock: clock)
        // Every flow's first packets wait together for the gateway's ARP answer for the server.
        gatewaySoftware = SlowPath(exceptions: gateway.exceptions, reinsertion: gateway.reinsertion,
                                   processing: .partial, policy: gatewayPolicy,
                                   heldCapacity: clientConfiguration.pendingPerNeighbor)

        sim.addProcess("client") { [unowned self] in step(client) }
        sim.addProcess("server") { [unowned self] in step(server) }
        // The gateway's engine polls fast; its software takes a few packets per step, and
        // each step costs virtual time.
        sim.addProcess("gateway engine", cost: .nanoseconds(300)) { [unowned self] in gateway.poll(now: sim.clock.now) }
        sim.addProcess("gateway software", weight: 0.3, cost: .microseconds(4)) { [unowned self] in
            gatewaySoftware.step(max: 8) > 0
        }
    }

    /// One turn of a host; when it has nothing to do, time may move on to its next timer.
    private func step(_ endpoint: HostEndpoint<MemoryLink>) -> Bool {
        let (again, wakeAt) = endpoint.scheduledTurn(now: sim.clock.now)
        if let wakeAt { sim.schedule(at: wakeAt) {} }
        return again
    }

    /// What the wires did, summed over both wires and both ways: frames sent, and frames
    /// lost (the `--loss`) or dropped for want of room on the wire.
    var wires: (sent: UInt64, lost: UInt64, queueDrops: UInt64) {
        let all = [clientEnd.sentCounters, clientEnd.receivedCounters, serverEnd.sentCounters, serverEnd.receivedCounters]
        return (all.reduce(0) { $0 + $1.transmitted }, all.reduce(0) { $0 + $1.lost },
                all.reduce(0) { $0 + $1.queueDrops })
    }
}
