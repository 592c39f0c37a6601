import OffloadCore
import OffloadHost

/// The demo's UDP traffic: every flow starts at the same moment and sends datagrams at a
/// steady rate, like video: 1.6 datagrams per µs over all flows (13 Gbit/s of 1000-byte
/// datagrams; with 16 flows, one every 10 µs each). Every other flow
/// is RTP (version 2, a 90 kHz video payload type, timestamps from the send time), which the
/// gateway's engine recognises and keeps statistics for (B8). Together the flows arrive
/// faster than the gateway's software sets flows up, so each flow's later packets reach the
/// gateway while its first ones are still in the software: the case the order guard is for.
/// Each datagram carries its flow and sequence numbers; the server checks its bytes and
/// counts the ones that arrive after a later one of their flow.
final class DatagramFlows {
    static let serverPort: UInt16 = 5004
    static let firstClientPort: UInt16 = 40_000
    /// Time between two datagrams of a flow.
    let spacing: Duration
    /// RTP header, then flow number and sequence number (4 bytes each).
    static let headerSize = 20

    struct Flow {
        var sent = 0
        var refused = 0
        var received = 0
        var highest = -1
        var outOfOrder = 0
        var duplicates = 0
        var corrupt = 0
        var seen: [Bool]
    }

    let payload: DemoPayload
    let count: Int
    let datagramsPerFlow: Int
    let size: Int
    private(set) var flows: [Flow]
    private(set) var allSent = false

    init(payload: DemoPayload, count: Int, datagramsPerFlow: Int, size: Int) {
        self.payload = payload
        self.count = count
        self.datagramsPerFlow = datagramsPerFlow
        self.size = size
        spacing = .nanoseconds(Int64(count) * 625)
        flows = Array(repeating: Flow(seen: Array(repeating: false, count: datagramsPerFlow)), count: count)
    }

    var isRTP: (Int) -> Bool { { $0 % 2 == 0 } }
    /// Datagrams the flows send in all.
    var planned: Int { count * datagramsPerFlow }
    var sent: Int { flows.reduce(0) { $0 + $1.sent } }
    var received: Int { flows.reduce(0) { $0 + $1.received } }
    var outOfOrder: Int { flows.reduce(0) { $0 + $1.outOfOrder } }
    var duplicates: Int { flows.reduce(0) { $0 + $1.duplicates } }
    var corrupt: Int { flows.reduce(0) { $0 + $1.corrupt } }
    var refused: Int { flows.reduce(0) { $0 + $1.refused } }

    /// Binds the sockets and schedules every datagram.
    func start(client: IPv4Host, server: IPv4Host, in network: DemoNetwork) throws(UDPError) {
        try server.udp.bind(port: Self.serverPort, capacity: 64 * count + 64)
        for flow in 0..<count { try client.udp.bind(port: Self.firstClientPort + UInt16(flow)) }
        let start = network.sim.clock.now
        for sequence in 0..<datagramsPerFlow {
            network.sim.schedule(at: start + spacing * sequence) { [unowned self] in
                send(sequence, from: client)
            }
        }
        // The gateway's RTP statistics, read once the streams are over (before their
        // entries idle out).
        network.sim.schedule(at: start + spacing * datagramsPerFlow + .seconds(1)) { [unowned network] in
            network.rtpSnapshot = Array(network.gateway.rtpStatistics.values)
        }
    }

    /// Datagram `sequence` of every flow.
    private func send(_ sequence: Int, from client: IPv4Host) {
        for flow in 0..<count {
            var bytes = [UInt8](repeating: 0, count: size)
            bytes.withUnsafeMutableBytes { out in
                if isRTP(flow) {
                    writeRTPHeader(out, flow: flow, sequence: sequence)
                }
                Self.put(UInt32(flow), at: 12, in: out)
                Self.put(UInt32(sequence), at: 16, in: out)
                payload.fill(UnsafeMutableRawBufferPointer(rebasing: out[Self.headerSize...]),
                             stream: 10_000 + flow, offset: sequence * size)
            }
            do {
                try client.udp.send(from: Self.firstClientPort + UInt16(flow),
                                    UDPDatagram(peer: DemoNetwork.serverAddress, peerPort: Self.serverPort, payload: bytes))
                flows[flow].sent += 1
            } catch {
                flows[flow].refused += 1
            }
        }
        if sequence == datagramsPerFlow - 1 { allSent = true }
    }

    /// RTP version 2, payload type 26 (JPEG video, 90 kHz), the timestamp of the send time,
    /// an SSRC per flow.
    private func writeRTPHeader(_ out: UnsafeMutableRawBufferPointer, flow: Int, sequence: Int) {
        out[0] = 0x80
        out[1] = 26
        out[2] = UInt8(sequence >> 8 & 0xff)
        out[3] = UInt8(sequence & 0xff)
        Self.put(UInt32(truncatingIfNeeded: Int64(sequence) * spacing.nanoseconds * 90_000 / 1_000_000_000), at: 4, in: out)
        Self.put(0x0ff1_0ad0 &+ UInt32(flow), at: 8, in: out)
    }

    private static func put(_ value: UInt32, at offset: Int, in out: UnsafeMutableRawBufferPointer) {
        out.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    /// Reads and checks what reached the server; returns whether there was anything.
    func step(server: IPv4Host) -> Bool {
        var worked = false
        while let datagram = server.udp.receive(port: Self.serverPort) {
            worked = true
            datagram.payload.withUnsafeBytes { check($0) }
        }
        return worked
    }

    private func check(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count == size else { return corruptDatagram() }
        let flow = Int(UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
        let sequence = Int(UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: 16, as: UInt32.self)))
        guard flow < count, sequence < datagramsPerFlow,
              payload.matches(UnsafeRawBufferPointer(rebasing: bytes[Self.headerSize...]), stream: 10_000 + flow,
                              offset: sequence * size)
        else { return corruptDatagram() }
        if flows[flow].seen[sequence] {
            flows[flow].duplicates += 1
            return
        }
        flows[flow].seen[sequence] = true
        flows[flow].received += 1
        if sequence < flows[flow].highest { flows[flow].outOfOrder += 1 }
        flows[flow].highest = max(flows[flow].highest, sequence)
    }

    /// A datagram that is no flow's (never seen in a sound run): counted on flow 0.
    private func corruptDatagram() { flows[0].corrupt += 1 }
}
