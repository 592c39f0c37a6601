import Foundation

/// The report as a person reads it: what was checked first, then the figures by part.
extension DemoReport {
    public var text: String {
        var lines: [String] = []
        let c = configuration
        lines.append("offload demo: seed \(c.seed), loss \(percent(c.loss)), \(c.flows) TCP connections × "
                     + "\(bytes(c.bytesPerConnection)) and \(c.flows) UDP flows, order guard \(c.orderGuard ? "on" : "off"), "
                     + "audit \(c.audit ? "on" : "off")")
        lines.append("")
        lines.append("checks")
        for check in checks { lines.append("  \(check.passed ? "ok  " : "FAIL") \(check.name): \(check.detail)") }
        if !order.guardOn {
            lines.append("  --   per-flow order (guard off, not checked): \(order.violations) of \(order.packetsChecked) "
                         + "packets overtaken in \(order.flowsReordered) flows at the gateway; "
                         + "\(udp.outOfOrderAtServer) datagrams out of order at the server")
        }
        lines.append("")
        lines.append("gateway: packets by path")
        var paths: [(String, String)] = [
            ("received", "\(gateway.received)"),
            ("fast path", "\(gateway.fastPath)"),
            ("slow path (to software)", "\(gateway.slowPath)" + breakdown(gateway.toSoftware)),
            ("re-inserted and sent", "\(gateway.reinserted) (\(gateway.completedByEngine) completed by the engine)"),
            ("consumed by the software", "\(gateway.consumedBySoftware) (ARP for the gateway)"),
            ("audited", configuration.audit ? "\(gateway.audited) tested, \(gateway.validMarks) valid marks, "
                + "\(gateway.invalidMarks) invalid" + breakdown(gateway.auditFailures, "failed") : "off"),
            ("dropped", "\(gateway.dropped.values.reduce(0, +))" + breakdown(gateway.dropped)
                + breakdown(gateway.softwareDrops, "by the software")),
        ]
        paths.append(("originated by the software", "\(gateway.originatedBySoftware) (ARP, ICMP)"))
        paths.append(("order", "\(order.violations) of \(order.packetsChecked) forwarded packets overtaken"))
        lines += table(paths)
        lines.append("")
        lines.append("TCP (offloaded, zero-copy send)")
        lines += table([
            ("bytes verified", "\(bytes(tcp.bytesVerified)) of \(bytes(tcp.bytesSent)) sent"),
            ("connections offloaded", "client \(tcp.offloadedByClient), server \(tcp.offloadedByServer) of \(tcp.connections)"),
            ("zero-copy completions", "\(tcp.messagesCompleted) of \(tcp.messages) messages, in \(tcp.completionRanges) ranges"),
            ("engine sent", "\(tcp.engineSegmentsSent) segments, \(bytes(Int(tcp.engineBytesSent))) of payload; host copied \(tcp.hostBytesCopied) bytes"),
            ("retransmissions", "\(tcp.segmentsRetransmitted) segments (\(tcp.retransmissionTimeouts) timeouts, \(tcp.fastRetransmits) fast)"),
            ("out of order at server", "\(tcp.outOfOrderSegmentsAtServer) segments"),
        ])
        lines.append("")
        lines.append("UDP and RTP")
        lines += table([
            ("datagrams verified", "\(udp.datagramsVerified) of \(udp.datagramsSent) (\(udp.datagramsLost) lost, "
                + "\(udp.duplicates) duplicated, \(udp.corrupt) corrupt"
                + (udp.datagramsRefused > 0 ? ", \(udp.datagramsRefused) refused by the client's stack)" : ")")),
            ("out of order at server", "\(udp.outOfOrderAtServer)"),
            ("RTP at the gateway", "\(udp.rtpFlows) flows, \(udp.rtpPackets) packets, \(udp.rtpSequenceGaps) sequence gaps, "
                + "\(udp.rtpReordered) reordered, jitter up to \(format(udp.rtpMaxJitterMicroseconds, 1)) µs"),
        ])
        lines.append("")
        if !hosts.clientDrops.isEmpty || !hosts.serverDrops.isEmpty {
            lines.append("hosts: dropped")
            lines += table([("client", list(hosts.clientDrops)), ("server", list(hosts.serverDrops))])
            lines.append("")
        }
        lines.append("wires and time")
        lines += table([
            ("frames on the wires", "\(wires.framesSent) (\(wires.framesLost) lost, \(wires.queueDrops) dropped for room)"),
            ("simulated time", (time.transferSimulatedSeconds.map { "\(duration($0)) to the last byte, " }
                                ?? "the last byte never arrived, ") + "\(duration(time.simulatedSeconds)) in all"),
            ("throughput", "\(format(time.wallGigabitsPerSecond, 2)) Gbit/s of TCP verified in \(format(time.wallSeconds, 2)) s "
                + "of wall time, with both hosts, the gateway and the checks on one core"),
        ])
        lines.append("")
        lines.append(passed ? "every check held" : "FAILED: \(checks.filter { !$0.passed }.map(\.name).joined(separator: ", "))")
        return lines.joined(separator: "\n")
    }

    private func table(_ rows: [(String, String)]) -> [String] {
        let width = rows.map(\.0.count).max() ?? 0
        return rows.map { "  " + $0.0 + String(repeating: " ", count: width - $0.0.count) + "  " + $0.1 }
    }

    private func breakdown(_ reasons: [String: UInt64], _ label: String = "") -> String {
        guard !reasons.isEmpty else { return "" }
        let parts = reasons.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        return " (" + (label.isEmpty ? "" : label + ": ") + parts + ")"
    }

    private func duration(_ seconds: Double) -> String {
        seconds < 10 ? "\(format(seconds * 1000, 2)) ms" : "\(format(seconds, 1)) s"
    }

    private func list(_ reasons: [String: UInt64]) -> String {
        reasons.isEmpty ? "none" : reasons.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    }

    private func bytes(_ n: Int) -> String {
        n >= 1 << 20 && n % (1 << 20) == 0 ? "\(n >> 20) MiB" : n >= 1 << 20 ? "\(format(Double(n) / 1048576, 2)) MiB" : "\(n) bytes"
    }

    private func percent(_ fraction: Double) -> String { "\(format(fraction * 100, 1))%" }

    private func format(_ value: Double, _ decimals: Int) -> String { String(format: "%.\(decimals)f", value) }
}
