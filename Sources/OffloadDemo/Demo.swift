import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadSim

/// `offload demo`: builds the world (`DemoNetwork`), starts every TCP connection and UDP
/// flow at once, runs the simulation until every transfer is checked and every stack is at
/// rest, and reports what happened and whether every check held.
public enum Demo {
    /// How far along a run is, for a progress line.
    public struct Progress: Sendable {
        public var tcpBytesVerified: Int
        public var tcpBytesTotal: Int
        public var connectionsDone: Int
        public var connections: Int
        public var datagramsVerified: Int
        public var datagramsTotal: Int
        public var simulatedSeconds: Double
    }

    /// Virtual time after which a run that has not finished gives up (and fails).
    static let timeLimit = Duration.seconds(3600)

    public static func run(_ configuration: DemoConfiguration, progressEvery: Duration = .seconds(1),
                           progress: (Progress) -> Void = { _ in }) throws(DemoError) -> DemoReport {
        try configuration.validate()
        let network: DemoNetwork
        do { network = try DemoNetwork(configuration) } catch let error as DemoError { throw error } catch {
            throw .setup("cannot build the demo's network: \(error)")
        }
        let payload = DemoPayload(seed: configuration.seed)
        let streams = StreamTransfers(payload: payload, connections: configuration.flows,
                                      bytesPerConnection: configuration.bytesPerConnection,
                                      messageSize: configuration.messageSize)
        let datagrams = DatagramFlows(payload: payload, count: configuration.flows,
                                      datagramsPerFlow: configuration.datagramsPerFlow, size: configuration.datagramSize)
        let (client, server, sim) = (network.client, network.server, network.sim)
        streams.start(client: client.tcp, server: server.tcp, to: DemoNetwork.serverAddress, now: sim.clock.now)
        do { try datagrams.start(client: client.host, server: server.host, in: network) } catch {
            throw .setup("cannot bind the UDP sockets: \(error)")
        }
        // The simulation keeps its processes and events: they must not keep it in turn.
        sim.addProcess("applications") { [unowned sim] in
            let tcp = streams.step(client: client.tcp, server: server.tcp, now: sim.clock.now)
            return datagrams.step(server: server.host) || tcp
        }

        let ticking = Ticker(sim)
        ticking.start()

        let wall = MonotonicClock()
        let started = wall.now
        var lastProgress = started
        let isAtRest = {
            streams.isDone && datagrams.allSent && client.tcp.isQuiescent && server.tcp.isQuiescent
                && client.engine.tcp.count == 0 && server.engine.tcp.count == 0
        }
        let limit = sim.clock.now + timeLimit
        var stuck = false
        while !isAtRest() && sim.clock.now < limit && !stuck {
            // A slice of virtual time, then a look at the wall clock for the progress line.
            let before = sim.clock.now
            sim.run(until: sim.clock.now + .milliseconds(20), maxSteps: 200_000) { !isAtRest() }
            // Processes that always claim work without time moving on would spin forever;
            // the tick guarantees time moves in any sound run.
            stuck = sim.clock.now == before && !isAtRest()
            if wall.now - lastProgress >= progressEvery {
                lastProgress = wall.now
                progress(Progress(tcpBytesVerified: streams.bytesVerified,
                                  tcpBytesTotal: configuration.flows * configuration.bytesPerConnection,
                                  connectionsDone: streams.receiversDone, connections: configuration.flows,
                                  datagramsVerified: datagrams.received, datagramsTotal: datagrams.planned,
                                  simulatedSeconds: seconds(sim.clock.now - .zero)))
            }
        }
        ticking.stop()
        // What is still in flight inside the engines comes back (messages, buffers).
        sim.run(until: sim.clock.now + .milliseconds(50), maxSteps: 100_000)
        let wallTime = wall.now - started

        return DemoReportBuilder(configuration: configuration, network: network, streams: streams,
                                 datagrams: datagrams, ending: isAtRest() ? .atRest : stuck ? .stuck : .timedOut,
                                 wallTime: wallTime).report
    }

    /// How a run ended.
    enum Ending { case atRest, timedOut, stuck }

    /// Polls every 10 ms of virtual time while the run lasts: the gateway's software has
    /// timers (ARP retries) and the engines expire entries, and they need a poll while
    /// everyone else waits.
    private final class Ticker {
        unowned let sim: Simulation
        var running = false
        init(_ sim: Simulation) { self.sim = sim }
        func start() { running = true; tick() }
        func stop() { running = false }
        private func tick() { if running { sim.schedule(after: .milliseconds(10)) { self.tick() } } }
    }

    static func seconds(_ d: Duration) -> Double { Double(d.nanoseconds) / 1e9 }
}
