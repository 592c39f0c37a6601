/// What a demo run did, for a person (`text`) and for programs (Codable, `--json`).
public struct DemoReport: Codable, Sendable {
    public struct Check: Codable, Sendable {
        public var name: String
        public var passed: Bool
        public var detail: String
    }

    public struct TCP: Codable, Sendable {
        public var connections = 0
        /// Connections the engines ran, client side and server side.
        public var offloadedByClient: UInt64 = 0
        public var offloadedByServer: UInt64 = 0
        public var bytesSent = 0
        public var bytesVerified = 0
        public var messages = 0
        /// Zero-copy completions: each brings an application buffer back.
        public var messagesCompleted = 0
        public var completionRanges = 0
        public var segmentsRetransmitted: UInt64 = 0
        public var retransmissionTimeouts: UInt64 = 0
        public var fastRetransmits: UInt64 = 0
        public var outOfOrderSegmentsAtServer: UInt64 = 0
        /// Payload bytes the client's engine sent, gathered from the application's buffers.
        public var engineBytesSent: UInt64 = 0
        public var engineSegmentsSent: UInt64 = 0
        /// Payload bytes the client's host software copied into frames (0: zero copy).
        public var hostBytesCopied: UInt64 = 0
    }

    public struct UDP: Codable, Sendable {
        public var flows = 0
        public var rtpFlows = 0
        public var datagramsSent = 0
        /// Datagrams the client's stack would not take (none in a sound run).
        public var datagramsRefused = 0
        /// Received, each one's bytes checked.
        public var datagramsVerified = 0
        public var datagramsLost = 0
        public var duplicates = 0
        public var corrupt = 0
        /// Datagrams that reached the server after a later one of their flow.
        public var outOfOrderAtServer = 0
        /// The gateway's RTP statistics (RFC 3550), summed over the RTP flows.
        public var rtpPackets: UInt64 = 0
        public var rtpSequenceGaps: UInt64 = 0
        public var rtpReordered: UInt64 = 0
        public var rtpMaxJitterMicroseconds = 0.0
    }

    public struct Gateway: Codable, Sendable {
        public var received: UInt64 = 0
        public var fastPath: UInt64 = 0
        /// Packets that went to the software (misses, flows being set up, local traffic).
        public var slowPath: UInt64 = 0
        public var reinserted: UInt64 = 0
        public var completedByEngine: UInt64 = 0
        public var consumedBySoftware: UInt64 = 0
        public var originatedBySoftware: UInt64 = 0
        /// Re-inserted packets the audit stage tested, and the engine's marks it checked.
        public var audited: UInt64 = 0
        public var validMarks: UInt64 = 0
        public var invalidMarks: UInt64 = 0
        public var auditFailures: [String: UInt64] = [:]
        public var dropped: [String: UInt64] = [:]
        /// Why the software dropped what the engine counts as `software-drop`.
        public var softwareDrops: [String: UInt64] = [:]
        public var toSoftware: [String: UInt64] = [:]
        public var entries = 0
        public var flagsCleared: UInt64 = 0
    }

    public struct Order: Codable, Sendable {
        public var guardOn = true
        /// Forwarded packets whose place in their flow the gateway's witness checked.
        public var packetsChecked = 0
        /// Packets that left the gateway after a later packet of their flow.
        public var violations = 0
        public var flowsReordered = 0
    }

    /// Frames the hosts (their software and their engines) dropped, by reason.
    public struct Hosts: Codable, Sendable {
        public var clientDrops: [String: UInt64] = [:]
        public var serverDrops: [String: UInt64] = [:]
    }

    public struct Wires: Codable, Sendable {
        public var framesSent: UInt64 = 0
        public var framesLost: UInt64 = 0
        public var queueDrops: UInt64 = 0
    }

    public struct Time: Codable, Sendable {
        /// The whole run, TIME_WAIT included.
        public var simulatedSeconds = 0.0
        /// From the start until the server read the last byte. Only the gateway's steps cost
        /// simulated time (the hosts' cost none), so it is no throughput figure. Absent when
        /// the last byte never arrived.
        public var transferSimulatedSeconds: Double?
        public var wallSeconds = 0.0
        /// Verified TCP bytes over wall-clock time: the whole world (three engines, two
        /// hosts, the gateway's software, the wires) runs on one core.
        public var wallGigabitsPerSecond = 0.0
    }

    public var configuration: DemoConfiguration
    public var passed = false
    public var checks: [Check] = []
    public var tcp = TCP()
    public var udp = UDP()
    public var gateway = Gateway()
    public var order = Order()
    public var hosts = Hosts()
    public var wires = Wires()
    public var time = Time()

    mutating func check(_ name: String, _ passed: Bool, _ detail: String) {
        checks.append(Check(name: name, passed: passed, detail: detail))
    }
}
