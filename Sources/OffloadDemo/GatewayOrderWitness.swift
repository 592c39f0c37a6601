import OffloadCore
import OffloadEngine

/// B5 checked where it is promised: for every flow, the order of its packets leaving the
/// gateway against the order they came in. The witness sees both sides of every port
/// (`TappedLink`). A packet is known again on the way out by what NAT and routing leave
/// alone (IPv4 identification and length, TCP sequence, acknowledgement and flags, the
/// first bytes of a UDP payload); a packet that leaves after a later one of its flow has
/// been overtaken, and counts as a violation.
final class GatewayOrderWitness {
    /// Ingress flows, numbered as they are first seen.
    private var flows: [FlowKey: Int] = [:]
    private var arrivals: [Int] = []
    /// Per flow, the arrival number of the latest packet to leave.
    private var latestDeparted: [Int] = []
    /// Packets inside the gateway, by fingerprint: their flow and arrival number, oldest first.
    private var inside: [UInt64: [(flow: Int, arrival: Int)]] = [:]
    private var reorderedFlows: Set<Int> = []

    private(set) var packetsChecked = 0
    /// Of those, UDP datagrams.
    private(set) var datagramsChecked = 0
    private(set) var violations = 0
    var flowsReordered: Int { reorderedFlows.count }

    func arrived(_ frame: UnsafeRawBufferPointer, port: UInt16) {
        guard let fingerprint = Self.fingerprint(frame), let key = FlowKey(frame: frame, port: port) else { return }
        let flow: Int
        if let known = flows[key] {
            flow = known
        } else {
            flow = arrivals.count
            flows[key] = flow
            arrivals.append(0)
            latestDeparted.append(-1)
        }
        inside[fingerprint, default: []].append((flow, arrivals[flow]))
        arrivals[flow] += 1
    }

    /// A frame the gateway sent: one it forwarded (checked), or its software's own (ARP,
    /// ICMP errors), which no flow brought in.
    func departed(_ frame: UnsafeRawBufferPointer) {
        guard let fingerprint = Self.fingerprint(frame), var waiting = inside[fingerprint], !waiting.isEmpty else { return }
        let (flow, arrival) = waiting.removeFirst()
        inside[fingerprint] = waiting.isEmpty ? nil : waiting
        packetsChecked += 1
        if frame[14 + 9] == 17 { datagramsChecked += 1 }
        if arrival < latestDeparted[flow] {
            violations += 1
            reorderedFlows.insert(flow)
        } else {
            latestDeparted[flow] = arrival
        }
    }

    /// FNV-1a over the fields a gateway does not rewrite; nil for what is not IPv4 TCP or UDP.
    static func fingerprint(_ frame: UnsafeRawBufferPointer) -> UInt64? {
        guard frame.count >= 34, frame[12] == 0x08, frame[13] == 0x00 else { return nil }
        let ip = 14, l4 = ip + Int(frame[ip] & 0x0f) * 4
        let proto = frame[ip + 9]
        guard proto == 6 || proto == 17 else { return nil }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ range: Range<Int>) {
            for i in range where i < frame.count { hash = (hash ^ UInt64(frame[i])) &* 0x100_0000_01b3 }
        }
        mix(ip + 2..<ip + 6)      // total length, identification
        mix(ip + 9..<ip + 10)     // protocol
        if proto == 6 {
            mix(l4 + 4..<l4 + 14)  // sequence, acknowledgement, offset, flags
            let payload = l4 + Int(frame.count > l4 + 12 ? frame[l4 + 12] >> 4 : 5) * 4
            mix(payload..<payload + 8)
        } else {
            mix(l4 + 8..<l4 + 28)  // the payload's first 20 bytes (the demo's headers, flow and sequence numbers)
        }
        return hash
    }
}
