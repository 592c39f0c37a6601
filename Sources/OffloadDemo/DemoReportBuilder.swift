import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink

/// Reads the world's counters after a run into a `DemoReport`, and decides each check.
struct DemoReportBuilder {
    let configuration: DemoConfiguration
    let network: DemoNetwork
    let streams: StreamTransfers
    let datagrams: DatagramFlows
    let ending: Demo.Ending
    let wallTime: Duration

    var report: DemoReport {
        var r = DemoReport(configuration: configuration)
        fillTCP(&r.tcp)
        fillUDP(&r.udp)
        fillGateway(&r.gateway)
        r.order = .init(guardOn: configuration.orderGuard, packetsChecked: network.order.packetsChecked,
                        violations: network.order.violations, flowsReordered: network.order.flowsReordered)
        r.hosts = .init(clientDrops: Self.drops(of: network.client), serverDrops: Self.drops(of: network.server))
        let wires = network.wires
        r.wires = .init(framesSent: wires.sent, framesLost: wires.lost, queueDrops: wires.queueDrops)
        let simulated = Demo.seconds(network.sim.clock.now - .zero), wall = Demo.seconds(wallTime)
        let transfer = streams.finishedAt.map { Demo.seconds($0 - .zero) }
        r.time = .init(simulatedSeconds: simulated, transferSimulatedSeconds: transfer, wallSeconds: wall,
                       wallGigabitsPerSecond: wall > 0 ? Double(r.tcp.bytesVerified) * 8 / wall / 1e9 : 0)
        addChecks(&r)
        r.passed = r.checks.allSatisfy(\.passed)
        return r
    }

    private func fillTCP(_ t: inout DemoReport.TCP) {
        t.connections = configuration.flows
        t.offloadedByClient = network.client.tcp.counters.connectionsOffloaded
        t.offloadedByServer = network.server.tcp.counters.connectionsOffloaded
        t.bytesSent = streams.senders.reduce(0) { $0 + $1.queued - StreamTransfers.headerSize * ($1.queued > 0 ? 1 : 0) }
        t.bytesVerified = streams.bytesVerified
        t.messages = streams.senders.reduce(0) { $0 + $1.messages.count }
        t.messagesCompleted = streams.senders.reduce(0) { $0 + $1.completed.count }
        t.completionRanges = streams.senders.reduce(0) { $0 + $1.completionRanges }
        let c = streams.clientTotals(network.client.tcp)
        t.segmentsRetransmitted = c.segmentsRetransmitted
        t.retransmissionTimeouts = c.retransmissionTimeouts
        t.fastRetransmits = c.fastRetransmits
        t.outOfOrderSegmentsAtServer = streams.serverCounters.outOfOrderSegments
        t.engineBytesSent = network.client.engine.tcp.counters.payloadBytesSent
        t.engineSegmentsSent = network.client.engine.tcp.counters.segmentsSent
        t.hostBytesCopied = network.client.policy.payloadBytesCopied
    }

    private func fillUDP(_ u: inout DemoReport.UDP) {
        u.flows = datagrams.count
        u.rtpFlows = (0..<datagrams.count).count(where: datagrams.isRTP)
        u.datagramsSent = datagrams.sent
        u.datagramsRefused = datagrams.refused
        u.datagramsVerified = datagrams.received
        u.datagramsLost = datagrams.sent - datagrams.received
        u.duplicates = datagrams.duplicates
        u.corrupt = datagrams.corrupt
        u.outOfOrderAtServer = datagrams.outOfOrder
        for stats in network.rtpStatistics {
            u.rtpPackets += stats.packets
            u.rtpSequenceGaps += stats.gaps
            u.rtpReordered += stats.reordered
            // Jitter is in timestamp units: 90 kHz for the demo's payload type.
            u.rtpMaxJitterMicroseconds = max(u.rtpMaxJitterMicroseconds, Double(stats.jitter) / 0.09)
        }
    }

    private func fillGateway(_ g: inout DemoReport.Gateway) {
        let engine = network.gateway
        let c = engine.counters
        g.received = c.received
        g.fastPath = c.fastPath
        g.slowPath = c.totalToSoftware
        g.reinserted = c.reinsertedOut
        g.completedByEngine = c.completedByEngine
        g.consumedBySoftware = c.consumedBySoftware
        g.originatedBySoftware = c.originated
        g.audited = engine.reinsertion.tested
        g.validMarks = c.auditValidMarks
        g.invalidMarks = c.auditInvalidMarks
        g.auditFailures = Self.nonZero(engine.reinsertion.failures.rows(""))
        g.dropped = Self.nonZero(c.drops.rows(""))
        g.softwareDrops = network.gatewaySoftware.dropped.filter { $0.value > 0 }
        g.toSoftware = Self.nonZero(c.toSoftware.rows(""))
        g.entries = engine.table.count
        g.flagsCleared = c.flagsCleared
    }

    /// A host's drops: its software's, its UDP sockets', its engine's.
    static func drops(of endpoint: HostEndpoint<MemoryLink>) -> [String: UInt64] {
        let udp = endpoint.host.udp.counters
        return nonZero(endpoint.host.counters.drops.rows("host: ") + endpoint.engine.counters.drops.rows("engine: ")
                       + [("UDP: no socket", udp.droppedNoPort), ("UDP: socket queue full", udp.droppedQueueFull)])
    }

    static func nonZero(_ rows: [(String, UInt64)]) -> [String: UInt64] {
        Dictionary(rows.filter { $0.1 > 0 }, uniquingKeysWith: +)
    }

    private func addChecks(_ r: inout DemoReport) {
        let total = configuration.flows * configuration.bytesPerConnection
        let failures = streams.failures
        let finished = switch ending {
        case .atRest: "every transfer ended and every stack came to rest"
        case .timedOut: "the transfers did not finish within \(Demo.timeLimit) of simulated time"
        case .stuck: "the simulation stopped moving: its processes kept working without time passing"
        }
        r.check("finished", ending == .atRest, finished)
        r.check("TCP bytes verified", r.tcp.bytesVerified == total && failures.isEmpty,
                failures.isEmpty ? "\(r.tcp.bytesVerified) of \(total) bytes arrived and matched"
                    : "\(failures.count) problem(s), first: \(failures[0])")
        let completionFailures = streams.completionFailures
        r.check("zero-copy completions", r.tcp.messagesCompleted == r.tcp.messages && completionFailures.isEmpty,
                !completionFailures.isEmpty ? "\(completionFailures.count) problem(s), first: \(completionFailures[0])"
                    : r.tcp.messagesCompleted == r.tcp.messages
                    ? "\(r.tcp.messagesCompleted) of \(r.tcp.messages) messages completed once each, in order, with their own buffer"
                    : "only \(r.tcp.messagesCompleted) of \(r.tcp.messages) messages completed")
        let flows = UInt64(configuration.flows)
        r.check("offloaded", r.tcp.offloadedByClient >= flows && r.tcp.offloadedByServer >= flows
                    && r.tcp.engineBytesSent >= UInt64(total) && r.tcp.hostBytesCopied == 0,
                "the engines ran \(r.tcp.offloadedByClient) client and \(r.tcp.offloadedByServer) server connections; "
                    + "the client's engine sent \(r.tcp.engineBytesSent) payload bytes from the application's buffers, "
                    + "its host copied \(r.tcp.hostBytesCopied)")
        let (excused, unexcused) = Self.drops(r, lossyWires: configuration.loss > 0)
        // A datagram may be lost only where frames were: lost on a wire (`--loss`), dropped
        // by a wire whose queue was full (hosts send in no simulated time, so many flows at
        // once can fill one, like a switch's buffer), or dropped waiting for an ARP answer
        // a wire lost.
        let wiresDropped = r.wires.framesLost + r.wires.queueDrops + excused
        let udpIntact = r.udp.corrupt == 0 && r.udp.duplicates == 0
            && r.udp.datagramsSent == datagrams.planned
            && UInt64(max(0, r.udp.datagramsLost)) <= wiresDropped
        r.check("UDP datagrams verified", udpIntact,
                "\(r.udp.datagramsVerified) of \(r.udp.datagramsSent) arrived intact, \(r.udp.duplicates) duplicated, "
                    + "\(r.udp.corrupt) corrupt" + (r.udp.datagramsRefused > 0 ? ", \(r.udp.datagramsRefused) refused" : "")
                    + (r.udp.datagramsLost > 0 && wiresDropped > 0
                       ? " (the rest lost with the \(wiresDropped) frames the wires lost, had no room for, or left waiting for ARP)" : ""))
        if configuration.orderGuard {
            // The witness must have seen every datagram that arrived leave the gateway, or
            // it did not look.
            r.check("per-flow order", r.order.violations == 0 && r.udp.outOfOrderAtServer == 0
                        && network.order.datagramsChecked >= r.udp.datagramsVerified,
                    "\(r.order.violations) of \(r.order.packetsChecked) forwarded packets overtaken at the gateway; "
                        + "\(r.udp.outOfOrderAtServer) datagrams out of order at the server")
        }
        r.check("no drops but the wires'", unexcused.isEmpty,
                unexcused.isEmpty ? (excused == 0 ? "the hosts and the gateway dropped nothing"
                                     : "\(excused) packets dropped waiting for ARP answers the wires lost, nothing else")
                    : "dropped: " + unexcused.sorted().joined(separator: ", "))
        let c = network.gateway.counters
        var inSoftware = 0
        network.gateway.table.forEach { _, stats in inSoftware += Int(stats.inSoftwareCount) }
        let engines = [network.gateway.buffered, network.client.engine.buffered, network.server.engine.buffered]
        r.check("at rest", c.received == c.fastPath + c.reinsertedOut + c.consumedBySoftware + c.totalDrops
                    && engines.allSatisfy { $0 == 0 } && inSoftware == 0 && network.gatewaySoftware.heldCount == 0,
                "gateway: received \(c.received) = fast \(c.fastPath) + re-inserted \(c.reinsertedOut) + consumed "
                    + "\(c.consumedBySoftware) + dropped \(c.totalDrops); buffers held by the engines \(engines); "
                    + "packets still in software \(inSoftware + network.gatewaySoftware.heldCount)")
        if configuration.audit {
            r.check("audit", r.gateway.audited + r.gateway.validMarks > 0 && r.gateway.auditFailures.isEmpty,
                    "\(r.gateway.audited) re-inserted packets tested, \(r.gateway.validMarks) valid marks, "
                        + "\(r.gateway.auditFailures.values.reduce(0, +)) failed")
        }
    }

    /// Drops the wires excuse, and the others by side and reason. A lost ARP request stalls
    /// a neighbour for a second (the retry): what waits for it meanwhile overflows its
    /// queue, as on any host. With lossy wires those drops are the wires' doing too; all
    /// others are not.
    private static func drops(_ r: DemoReport, lossyWires: Bool) -> (excused: UInt64, unexcused: [String]) {
        let waitingForARP: Set<String> = ["host: resolution-queue-full", "host: resolution-failed"]
        let gatewayWaitingForARP: Set<String> = ["unresolved", "resolution-queue-full"]
        var excused: UInt64 = 0, unexcused: [String] = []
        for (side, drops) in [("client", r.hosts.clientDrops), ("server", r.hosts.serverDrops)] {
            for (reason, count) in drops {
                if lossyWires && waitingForARP.contains(reason) { excused += count } else { unexcused.append("\(side) \(reason) \(count)") }
            }
        }
        for (reason, count) in r.gateway.dropped where reason != "software-drop" { unexcused.append("gateway \(reason) \(count)") }
        for (reason, count) in r.gateway.softwareDrops {
            if lossyWires && gatewayWaitingForARP.contains(reason) { excused += count } else { unexcused.append("gateway software \(reason) \(count)") }
        }
        return (excused, unexcused)
    }
}
