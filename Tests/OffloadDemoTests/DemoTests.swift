import Testing
import OffloadEngine
@testable import OffloadDemo

/// The demo's world in process: the same seed gives the same run, and the pieces its checks
/// rest on (the order witness, the payload check) catch what they are there to catch.
@Suite struct DemoTests {
    @Test func theSameSeedGivesTheSameRun() throws {
        var configuration = DemoConfiguration()
        configuration.flows = 4
        configuration.bytesPerConnection = 100_000
        configuration.loss = 0.02
        let first = try Demo.run(configuration), second = try Demo.run(configuration)
        #expect(first.passed, "\(first.text)")
        #expect(first.wires.framesSent == second.wires.framesSent && first.wires.framesLost == second.wires.framesLost)
        #expect(first.gateway.fastPath == second.gateway.fastPath && first.gateway.slowPath == second.gateway.slowPath)
        #expect(first.tcp.segmentsRetransmitted == second.tcp.segmentsRetransmitted)
        #expect(first.time.simulatedSeconds == second.time.simulatedSeconds)
        configuration.seed = 2
        let other = try Demo.run(configuration)
        #expect(other.wires.framesLost != first.wires.framesLost || other.wires.framesSent != first.wires.framesSent,
                "another seed loses other frames")
    }

    /// The demo's checks over many seeds: lossy wires on most (ARP requests lost too), the
    /// audit on every other one; every byte, completion and flow's order must hold.
    @Test func everyCheckHoldsOverManySeeds() throws {
        var failed: [String] = []
        for seed in UInt64(1)...30 {
            var configuration = DemoConfiguration()
            configuration.seed = seed
            configuration.flows = 4
            configuration.bytesPerConnection = 64 << 10
            configuration.datagramsPerFlow = 40
            configuration.loss = Double(seed % 5) / 50
            configuration.audit = seed % 2 == 1
            let report = try Demo.run(configuration)
            if !report.passed { failed.append("seed \(seed): " + report.checks.filter { !$0.passed }.map(\.detail).joined(separator: "; ")) }
        }
        #expect(failed.isEmpty, "\(failed.count) seeds failed: \(failed.prefix(3))")
    }

    /// More than the send queue holds (4 MiB): the sender waits for completions to make room.
    @Test func aTransferLargerThanTheSendQueueCompletes() throws {
        var configuration = DemoConfiguration()
        configuration.flows = 1
        configuration.bytesPerConnection = 6_000_000
        configuration.messageSize = 200_000
        let report = try Demo.run(configuration)
        #expect(report.passed, "\(report.text)")
        #expect(report.tcp.messagesCompleted == 31)
    }

    @Test func badSettingsAreRefusedWithAReason() {
        var configuration = DemoConfiguration()
        configuration.loss = 1
        #expect(throws: DemoError.self) { try Demo.run(configuration) }
        configuration.loss = 0
        configuration.flows = 0
        #expect(throws: DemoError.invalid("--flows is 1 to 256")) { try Demo.run(configuration) }
        configuration.flows = 16
        // Past a GiB per connection the stream's 32-bit length would wrap.
        configuration.bytesPerConnection = DemoConfiguration.maximumBytesPerConnection + 1
        #expect(throws: DemoError.invalid("--bytes is 0 to 1G per connection")) { try Demo.run(configuration) }
        configuration.bytesPerConnection = 1 << 20
        configuration.messageSize = 0
        #expect(throws: DemoError.self) { try Demo.run(configuration) }
        configuration.messageSize = 65_536
        configuration.datagramsPerFlow = 0
        #expect(throws: DemoError.self) { try Demo.run(configuration) }
    }

    /// A TCP segment of flow `flow` with sequence number `sequence`, before or after NAT.
    static func segment(flow: UInt8, sequence: UInt8, translated: Bool = false) -> [UInt8] {
        var f = ipv4(protocol: 6, flow: flow, l4Length: 20 + 16, translated: translated)
        f[36] = 0x13; f[37] = 0x89
        f[41] = sequence                               // sequence number
        f[46] = 0x50; f[47] = 0x18                     // offset 5, PSH ACK
        f[54] = flow
        if translated { f[50] = 0xcd }                 // checksum rewritten
        return f
    }

    /// An Ethernet + IPv4 frame from the client (or, `translated`, from the gateway's
    /// outside address) to the server, source port 0x80 `flow` (0x9c `flow` after NAT), with
    /// `l4Length` bytes of zeros after the IPv4 header for the caller to fill.
    static func ipv4(protocol: UInt8, flow: UInt8, l4Length: Int, translated: Bool) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: 14 + 20 + l4Length)
        f[12] = 0x08
        f[14] = 0x45
        f[16] = 0; f[17] = UInt8(20 + l4Length)        // total length
        f[22] = translated ? 63 : 64                   // TTL
        f[23] = `protocol`
        if translated { f[24] = 0xab }                 // header checksum rewritten
        f[26...29] = translated ? [10, 2, 0, 1] : [10, 1, 0, 2]
        f[30...33] = [10, 2, 0, 2]
        f[34] = translated ? 0x9c : 0x80; f[35] = flow  // source port
        return f
    }

    @Test func theWitnessFollowsTCPSegmentsByTheirSequenceNumbers() {
        let witness = GatewayOrderWitness()
        for n in 0..<3 { Self.segment(flow: 1, sequence: UInt8(n)).withUnsafeBytes { witness.arrived($0, port: 0) } }
        for n in [1, 0, 2] {
            Self.segment(flow: 1, sequence: UInt8(n), translated: true).withUnsafeBytes { witness.departed($0) }
        }
        #expect(witness.packetsChecked == 3)
        #expect(witness.violations == 1)
        // The same segment twice (a retransmission): each copy is matched to one arrival.
        for _ in 0..<2 { Self.segment(flow: 2, sequence: 7).withUnsafeBytes { witness.arrived($0, port: 0) } }
        for _ in 0..<3 { Self.segment(flow: 2, sequence: 7, translated: true).withUnsafeBytes { witness.departed($0) } }
        #expect(witness.packetsChecked == 5)
        #expect(witness.datagramsChecked == 0)
        #expect(witness.violations == 1)
        #expect(witness.flowsReordered == 1)
    }

    /// A UDP frame with the demo's flow and sequence numbers, as the client sends it or
    /// (`translated`) as the gateway forwards it after NAT.
    static func frame(flow: UInt8, sequence: UInt8, translated: Bool = false) -> [UInt8] {
        var f = ipv4(protocol: 17, flow: flow, l4Length: 8 + 24, translated: translated)
        f[18] = 0; f[19] = sequence                    // identification
        f[36] = 0x13; f[37] = 0x8c
        f[42 + 15] = flow
        f[42 + 19] = sequence
        if translated { f[40] = 0xcd }                 // checksum rewritten
        return f
    }

    @Test func theWitnessKnowsPacketsAgainAfterNATAndCountsOvertaking() {
        let witness = GatewayOrderWitness()
        for n in 0..<4 { Self.frame(flow: 1, sequence: UInt8(n)).withUnsafeBytes { witness.arrived($0, port: 0) } }
        Self.frame(flow: 2, sequence: 0).withUnsafeBytes { witness.arrived($0, port: 0) }
        // Leaving in the order 0, 2, 1, 3 (packet 1 overtaken by 2); flow 2 on its own.
        for n in [0, 2, 1, 3] {
            Self.frame(flow: 1, sequence: UInt8(n), translated: true).withUnsafeBytes { witness.departed($0) }
        }
        Self.frame(flow: 2, sequence: 0, translated: true).withUnsafeBytes { witness.departed($0) }
        #expect(witness.packetsChecked == 5)
        #expect(witness.datagramsChecked == 5)
        #expect(witness.violations == 1)
        #expect(witness.flowsReordered == 1)
        // A frame no flow brought in (the gateway's own) is not checked.
        Self.frame(flow: 9, sequence: 9, translated: true).withUnsafeBytes { witness.departed($0) }
        #expect(witness.packetsChecked == 5)
    }

    @Test func thePayloadCheckCatchesAWrongByteAndAWrongStream() {
        let payload = DemoPayload(seed: 5)
        var bytes = [UInt8](repeating: 0, count: 3000)
        // Across the block's end, where the stream wraps around (stream 3 starts 3 × 7919
        // bytes into the block).
        let offset = DemoPayload.length - 1000 - 3 * 7919
        bytes.withUnsafeMutableBytes { payload.fill($0, stream: 3, offset: offset) }
        bytes.withUnsafeBytes { #expect(payload.matches($0, stream: 3, offset: offset)) }
        bytes.withUnsafeBytes { #expect(!payload.matches($0, stream: 4, offset: offset)) }
        bytes[2500] ^= 1
        bytes.withUnsafeBytes { #expect(!payload.matches($0, stream: 3, offset: offset)) }
    }
}
