#if os(Linux)
import OffloadTestSupport
import OffloadCore
import OffloadLink
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Frames built and read by hand (the wire-format module is tested on its own), and the
/// exchanges the Linux link tests run against a kernel in a test namespace.
enum Frames {
    /// A received frame, copied out of its buffer.
    struct Captured {
        let bytes: [UInt8]
        let offload: OffloadMetadata

        func u16(_ at: Int) -> UInt16 { UInt16(bytes[at]) << 8 | UInt16(bytes[at + 1]) }
        var etherType: UInt16 { u16(12) }
        var destinationMAC: [UInt8] { Array(bytes[0..<6]) }
        var isARPRequest: Bool { bytes.count >= 42 && etherType == 0x0806 && u16(20) == 1 }
        var isIPv4: Bool { bytes.count >= 34 && etherType == 0x0800 }
        var ipProtocol: UInt8 { bytes[23] }
        var ipSource: [UInt8] { Array(bytes[26..<30]) }
        var ipDestination: [UInt8] { Array(bytes[30..<34]) }
        /// First byte after an option-less IPv4 header.
        var l4: Int { 14 + Int(bytes[14] & 0x0f) * 4 }
    }

    static func ip(_ text: String) -> [UInt8] { text.split(separator: ".").map { UInt8($0)! } }
    static func mac(_ address: MACAddress) -> [UInt8] { address.bytes }

    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }

    static func arpReply(from ourMAC: [UInt8], _ ourIP: [UInt8], to theirMAC: [UInt8], _ theirIP: [UInt8]) -> [UInt8] {
        theirMAC + ourMAC + [0x08, 0x06]
            + [0, 1, 0x08, 0x00, 6, 4, 0, 2] + ourMAC + ourIP + theirMAC + theirIP
    }

    /// The ones' complement pseudo-header sum (not complemented) for an IPv4 L4 segment.
    static func pseudoHeaderSum(source: [UInt8], destination: [UInt8], protocol proto: UInt8, length: Int) -> UInt16 {
        var sum = InternetChecksum()
        (source + destination + [0, proto] + be16(UInt16(length))).withUnsafeBytes { sum.add($0) }
        return sum.partial
    }

    /// An Ethernet + IPv4 + UDP frame as a header (Ethernet, IP, UDP) and its payload. The UDP
    /// checksum field holds the pseudo-header sum only (with `.partialChecksum` metadata) or
    /// the full checksum (metadata `.none`).
    static func udp(from ourMAC: [UInt8], _ ourIP: [UInt8], port sourcePort: UInt16,
                    to theirMAC: [UInt8], _ theirIP: [UInt8], port destinationPort: UInt16,
                    payload: [UInt8], partial: Bool) -> (header: [UInt8], metadata: OffloadMetadata) {
        let udpLength = 8 + payload.count
        var ipHeader: [UInt8] = [0x45, 0] + be16(UInt16(20 + udpLength)) + [0x12, 0x34, 0x40, 0, 64, 17, 0, 0]
            + ourIP + theirIP
        let ipChecksum = ipHeader.withUnsafeBytes { InternetChecksum.checksum($0) }
        ipHeader[10] = UInt8(ipChecksum >> 8)
        ipHeader[11] = UInt8(ipChecksum & 0xff)
        let pseudo = pseudoHeaderSum(source: ourIP, destination: theirIP, protocol: 17, length: udpLength)
        var udpHeader = be16(sourcePort) + be16(destinationPort) + be16(UInt16(udpLength)) + be16(pseudo)
        if !partial {
            var sum = InternetChecksum()
            (udpHeader + payload).withUnsafeBytes { sum.add($0) }
            let value = sum.value == 0 ? 0xffff : sum.value
            udpHeader[6] = UInt8(value >> 8)
            udpHeader[7] = UInt8(value & 0xff)
        }
        let header = theirMAC + ourMAC + [0x08, 0x00] + ipHeader + udpHeader
        return (header, partial ? .partialChecksum(checksumStart: 34, checksumOffset: 6) : .none)
    }
}

extension Frames {
    static func be32(_ v: UInt32) -> [UInt8] { be16(UInt16(v >> 16)) + be16(UInt16(v & 0xffff)) }

    /// An Ethernet + IPv4 + TCP frame with no payload, its checksum partial (pseudo-header
    /// sum only) and the metadata saying so.
    static func tcp(from ourMAC: [UInt8], _ ourIP: [UInt8], port sourcePort: UInt16,
                    to theirMAC: [UInt8], _ theirIP: [UInt8], port destinationPort: UInt16,
                    sequence: UInt32, acknowledgement: UInt32, flags: UInt8, options: [UInt8] = [],
                    window: UInt16 = 65535) -> (frame: [UInt8], metadata: OffloadMetadata) {
        let tcpLength = 20 + options.count
        var ipHeader: [UInt8] = [0x45, 0] + be16(UInt16(20 + tcpLength)) + [0, 0, 0x40, 0, 64, 6, 0, 0]
            + ourIP + theirIP
        let ipChecksum = ipHeader.withUnsafeBytes { InternetChecksum.checksum($0) }
        ipHeader[10] = UInt8(ipChecksum >> 8)
        ipHeader[11] = UInt8(ipChecksum & 0xff)
        let pseudo = pseudoHeaderSum(source: ourIP, destination: theirIP, protocol: 6, length: tcpLength)
        let tcpHeader = be16(sourcePort) + be16(destinationPort) + be32(sequence) + be32(acknowledgement)
            + [UInt8(tcpLength / 4) << 4, flags] + be16(window) + be16(pseudo) + [0, 0] + options
        return (theirMAC + ourMAC + [0x08, 0x00] + ipHeader + tcpHeader,
                .partialChecksum(checksumStart: 34, checksumOffset: 16))
    }
}

/// One test's view of a link: a pool, a poller on the link's descriptor, and helpers that
/// wait for frames.
struct LinkProbe {
    let pool: BufferPool
    let poller: Poller
    /// Ethernet source addresses of every frame received so far.
    var sources: Set<[UInt8]> { seen.sources }
    private let seen = Seen()

    private final class Seen {
        var sources: Set<[UInt8]> = []
    }

    init(descriptor: Int32?, bufferSize: Int) throws {
        pool = BufferPool(count: 64, bufferSize: bufferSize, headroom: 128)
        poller = try Poller()
        if let descriptor { try poller.add(descriptor) }
    }

    /// Receives until a frame matches (or `seconds` pass), blocking in the poller between bursts.
    func await<L: Link & ~Copyable>(
        _ link: inout L, seconds: Double = 4, _ matches: (Frames.Captured) -> Bool
    ) throws -> Frames.Captured? {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            var found: Frames.Captured?
            _ = try link.receive(into: pool, max: 32) { buffer in
                guard found == nil else { return }
                let frame = Frames.Captured(bytes: Array(buffer.bytes), offload: buffer.offload)
                seen.sources.insert(Array(frame.bytes[6..<12]))
                if matches(frame) { found = frame }
            }
            if let found { return found }
            _ = try poller.wait(timeoutMilliseconds: 100)
        }
        return nil
    }
}

/// The exchanges run against the kernel on the far side of a link.
enum Exchanges {
    /// The kernel (at `kernelIP` on `device` in `namespace`) pings `ourIP`: its ARP request
    /// must arrive; our reply (from `ourMAC`) must be learned (`ip neigh`) and the echo
    /// request must then come to `ourMAC`. Returns the kernel interface's MAC address.
    static func arp<L: Link & ~Copyable>(
        _ link: inout L, probe: LinkProbe, namespace: borrowing NetworkNamespace, device: String,
        kernelIP: String, ourIP: String, ourMAC: MACAddress
    ) throws -> [UInt8]? {
        let ping = namespace.start("ping -c 1 -W 2 \(ourIP)", timeout: 5)
        defer { _ = ping.finish() }
        let request = try probe.await(&link) { frame in
            frame.isARPRequest && Array(frame.bytes[38..<42]) == Frames.ip(ourIP)
        }
        guard let request else {
            Issue.record("no ARP request for \(ourIP) arrived")
            return nil
        }
        let kernelMAC = Array(request.bytes[22..<28])
        #expect(Array(request.bytes[6..<12]) == kernelMAC, "Ethernet source is the ARP sender")
        #expect(request.destinationMAC == [UInt8](repeating: 0xff, count: 6), "ARP request is broadcast")
        #expect(Array(request.bytes[28..<32]) == Frames.ip(kernelIP), "ARP sender IP")
        #expect(request.offload == .none)

        let reply = Frames.arpReply(from: Frames.mac(ourMAC), Frames.ip(ourIP), to: kernelMAC, Frames.ip(kernelIP))
        try reply.withUnsafeBytes { bytes in try link.transmit(bytes) }

        let echo = try probe.await(&link) { frame in
            frame.isIPv4 && frame.ipProtocol == 1 && frame.destinationMAC == Frames.mac(ourMAC)
                && frame.ipDestination == Frames.ip(ourIP)
        }
        #expect(echo != nil, "after our ARP reply the kernel sends the ICMP echo to our MAC")
        let neighbours = namespace.run("ip neigh show \(ourIP) dev \(device)")
        #expect(neighbours.output.contains(ourMAC.description), "kernel learned our MAC: \(neighbours.output)")
        return kernelMAC
    }

    /// A UDP datagram sent as header + the payload cut into `pieces` gather slices must
    /// reach a socket in the namespace with its content intact.
    static func udpDelivery<L: Link & ~Copyable>(
        _ link: inout L, namespace: borrowing NetworkNamespace, kernelMAC: [UInt8], kernelIP: String,
        ourIP: String, ourMAC: MACAddress, partial: Bool, pieces: Int, port: UInt16
    ) throws {
        let text = "offload gather \(partial ? "partial" : "full") \(pieces) pieces, \(namespace.name) abcdefghijklmnopqrstuvwxyz"
        let payload = Array(text.utf8)
        let (header, metadata) = Frames.udp(
            from: Frames.mac(ourMAC), Frames.ip(ourIP), port: 40000, to: kernelMAC, Frames.ip(kernelIP),
            port: port, payload: payload, partial: partial)
        let listener = namespace.start("socat -u UDP4-RECVFROM:\(port),bind=\(kernelIP) STDOUT", timeout: 5)
        // Cut the payload into `pieces` slices that live in separate allocations.
        let cut = stride(from: 0, to: payload.count, by: (payload.count + pieces - 1) / pieces).map {
            Array(payload[$0..<min($0 + (payload.count + pieces - 1) / pieces, payload.count)])
        }
        let slices = cut.map { piece -> UnsafeMutableRawBufferPointer in
            let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: piece.count, alignment: 1)
            piece.withUnsafeBytes { memory.copyMemory(from: $0) }
            return memory
        }
        defer { for slice in slices { slice.deallocate() } }
        let list = slices.map { UnsafeRawBufferPointer($0) }
        // The listener may not be bound yet: send until it has a datagram and exits.
        var attempts = 0
        while listener.isRunning && attempts < 20 {
            try header.withUnsafeBytes { headerBytes in
                try list.withUnsafeBufferPointer { listBytes in
                    try link.transmit(header: headerBytes, payloads: PayloadSlices(listBytes), metadata: metadata)
                }
            }
            attempts += 1
            usleep(200_000)
        }
        let result = listener.finish()
        #expect(result.output == text, "socket got \(result.output.debugDescription) after \(attempts) sends")
    }

    /// A TCP connection attempt from the namespace (to `ourIP`, made resolvable with a
    /// static neighbour entry) must arrive as a SYN whose checksum is partial: the metadata
    /// says so, and the field holds the pseudo-header sum. Returns the SYN's metadata.
    static func partialChecksumSYN<L: Link & ~Copyable>(
        _ link: inout L, probe: LinkProbe, namespace: borrowing NetworkNamespace, device: String,
        kernelIP: String, ourIP: String, ourMAC: MACAddress, port: UInt16
    ) throws -> OffloadMetadata? {
        namespace.must("ip neigh replace \(ourIP) lladdr \(ourMAC) dev \(device)")
        let client = namespace.start("socat -u /dev/null TCP4:\(ourIP):\(port),connect-timeout=2", timeout: 4)
        defer { _ = client.finish() }
        let syn = try probe.await(&link) { frame in
            frame.isIPv4 && frame.ipProtocol == 6 && frame.bytes.count >= frame.l4 + 20
                && frame.u16(frame.l4 + 2) == port && frame.bytes[frame.l4 + 13] & 0x02 != 0
        }
        guard let syn else {
            Issue.record("no TCP SYN to port \(port) arrived")
            return nil
        }
        let l4 = syn.l4
        #expect(syn.offload == .partialChecksum(checksumStart: UInt16(l4), checksumOffset: 16))
        let segmentLength = syn.bytes.count - l4
        let pseudo = Frames.pseudoHeaderSum(source: syn.ipSource, destination: syn.ipDestination,
                                            protocol: 6, length: segmentLength)
        #expect(syn.u16(l4 + 16) == pseudo, "the checksum field holds the pseudo-header sum")
        // Finishing it the way a device would gives a segment that verifies.
        var finished = syn.bytes
        var sum = InternetChecksum()
        finished[l4...].withUnsafeBytes { sum.add($0) }
        finished[l4 + 16] = UInt8(sum.value >> 8)
        finished[l4 + 17] = UInt8(sum.value & 0xff)
        var verify = InternetChecksum()
        (syn.ipSource + syn.ipDestination + [0, 6] + Frames.be16(UInt16(segmentLength))).withUnsafeBytes { verify.add($0) }
        finished[l4...].withUnsafeBytes { verify.add($0) }
        #expect(verify.value == 0, "the finished checksum verifies")
        return syn.offload
    }

    /// A TCP connection from the namespace to `ourIP:port`, accepted by hand (SYN-ACK with
    /// MSS 1460, 64 KiB window): the kernel's first data should leave as one TSO super-frame.
    /// Returns the metadata of the first data frame and its TCP payload length; the
    /// connection is then reset.
    static func superFrame<L: Link & ~Copyable>(
        _ link: inout L, probe: LinkProbe, namespace: borrowing NetworkNamespace, device: String,
        kernelMAC: [UInt8], kernelIP: String, ourIP: String, ourMAC: MACAddress, port: UInt16
    ) throws -> (OffloadMetadata, Int)? {
        namespace.must("ip neigh replace \(ourIP) lladdr \(ourMAC) dev \(device)")
        let client = namespace.start(
            "socat -u OPEN:/dev/zero,readbytes=200000 TCP4:\(ourIP):\(port),connect-timeout=2", timeout: 4)
        defer { _ = client.finish() }
        let syn = try probe.await(&link) { frame in
            frame.isIPv4 && frame.ipProtocol == 6 && frame.u16(frame.l4 + 2) == port
                && frame.bytes[frame.l4 + 13] & 0x02 != 0
        }
        guard let syn else {
            Issue.record("no SYN to port \(port)")
            return nil
        }
        let clientPort = syn.u16(syn.l4)
        let clientSequence = UInt32(syn.u16(syn.l4 + 4)) << 16 | UInt32(syn.u16(syn.l4 + 6))
        let ours: UInt32 = 1000
        let synAck = Frames.tcp(from: Frames.mac(ourMAC), Frames.ip(ourIP), port: port, to: kernelMAC,
                                Frames.ip(kernelIP), port: clientPort, sequence: ours,
                                acknowledgement: clientSequence &+ 1, flags: 0x12, options: [2, 4, 0x05, 0xb4])
        try synAck.frame.withUnsafeBytes { bytes in
            try link.transmit(header: bytes, payloads: .none, metadata: synAck.metadata)
        }
        let data = try probe.await(&link) { frame in
            frame.isIPv4 && frame.ipProtocol == 6 && frame.u16(frame.l4) == clientPort
                && frame.bytes.count > frame.l4 + Int(frame.bytes[frame.l4 + 12] >> 4) * 4
        }
        let reset = Frames.tcp(from: Frames.mac(ourMAC), Frames.ip(ourIP), port: port, to: kernelMAC,
                               Frames.ip(kernelIP), port: clientPort, sequence: ours &+ 1, acknowledgement: 0,
                               flags: 0x04, window: 0)
        try reset.frame.withUnsafeBytes { bytes in
            try link.transmit(header: bytes, payloads: .none, metadata: reset.metadata)
        }
        guard let data else {
            Issue.record("no data after our SYN-ACK")
            return nil
        }
        let payload = data.bytes.count - data.l4 - Int(data.bytes[data.l4 + 12] >> 4) * 4
        return (data.offload, payload)
    }
}
#endif
