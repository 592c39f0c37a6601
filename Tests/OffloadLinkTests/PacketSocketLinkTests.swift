#if os(Linux)
import OffloadTestSupport
import OffloadCore
import OffloadLink
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Packet-socket links on a veth pair: our end in the root namespace (up, no address, IPv6
/// off), the peer in the test's namespace at 10.77.2.1/24; we play 10.77.2.2.
@Suite("PacketSocketLink", .serialized)
struct PacketSocketLinkTests {
    static let ourMAC = MACAddress(0x02, 0x77, 0x00, 0x00, 0x02, 0x02)

    /// A UDP receiver on 10.77.2.1:`port` in the namespace, ready when this returns. The
    /// function it returns waits for it to end (after `count` datagrams, or 2 s without
    /// one) and gives the number in the first two bytes of each datagram, in arrival order.
    static func numberedDatagrams(in namespace: borrowing NetworkNamespace, port: UInt16, count: Int) -> () -> [Int] {
        let receiver = namespace.start("python3 -c 'import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                                       + "s.bind((\"10.77.2.1\", \(port))); s.settimeout(2); got = []\n"
                                       + "try:\n    while len(got) < \(count): got.append(int.from_bytes(s.recv(2048)[:2], \"big\"))\n"
                                       + "except OSError: pass\nprint(\" \".join(map(str, got)))'", timeout: 10)
        namespace.waitForSocket(port: Int(port), seconds: 5)
        return {
            receiver.finish().output.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
    }

    /// Creates the pair; returns (our end, the peer's name in the namespace).
    static func vethPair(_ namespace: inout NetworkNamespace) -> (String, String) {
        let ours = namespace.interfaceName("lva")
        let peer = namespace.interfaceName("lvb")
        namespace.own(interface: ours)
        Shell.must("ip link add \(ours) type veth peer name \(peer) netns \(namespace.name)")
        Shell.must("sysctl -qw net.ipv6.conf.\(ours).disable_ipv6=1")
        Shell.must("ip link set \(ours) up")
        namespace.must("ip addr add 10.77.2.1/24 dev \(peer)")
        namespace.must("ip link set \(peer) up")
        return (ours, peer)
    }

    @Test("veth + virtio-net header: ARP both ways, TCP SYN arrives partial, 3-slice gather UDP delivered",
          .enabled(if: Root.shouldRun, Comment(rawValue: Root.reason)))
    func vethWithVirtioNetHeader() throws {
        guard Root.check() else { return }
        var namespace = NetworkNamespace(prefix: "lpkt")
        defer { namespace.tearDown() }
        let (ours, peer) = Self.vethPair(&namespace)
        var link = try PacketSocketLink(interface: ours)
        #expect(link.virtioNetHeader == true)
        #expect(link.capabilities.partialChecksums && link.capabilities.tcpSegmentation)
        #expect(link.capabilities.readinessDescriptor == link.descriptor)
        #expect(link.capabilities.address != nil)
        #expect(link.receiveBufferBytes >= PacketSocketLink.defaultReceiveBufferBytes)
        let probe = try LinkProbe(descriptor: link.descriptor, bufferSize: 128 + link.capabilities.maxFrameSize)

        let kernelMAC = try Exchanges.arp(&link, probe: probe, namespace: namespace, device: peer,
                                          kernelIP: "10.77.2.1", ourIP: "10.77.2.2", ourMAC: Self.ourMAC)
        guard let kernelMAC else { return }
        let metadata = try Exchanges.partialChecksumSYN(
            &link, probe: probe, namespace: namespace, device: peer,
            kernelIP: "10.77.2.1", ourIP: "10.77.2.2", ourMAC: Self.ourMAC, port: 9)
        print("AF_PACKET on veth: TCP SYN arrived with offload metadata \(String(describing: metadata))")
        try Exchanges.udpDelivery(&link, namespace: namespace, kernelMAC: kernelMAC, kernelIP: "10.77.2.1",
                                  ourIP: "10.77.2.2", ourMAC: Self.ourMAC, partial: false, pieces: 3, port: 5560)
        try Exchanges.udpDelivery(&link, namespace: namespace, kernelMAC: kernelMAC, kernelIP: "10.77.2.1",
                                  ourIP: "10.77.2.2", ourMAC: Self.ourMAC, partial: true, pieces: 3, port: 5561)
        let data = try Exchanges.superFrame(
            &link, probe: probe, namespace: namespace, device: peer, kernelMAC: kernelMAC,
            kernelIP: "10.77.2.1", ourIP: "10.77.2.2", ourMAC: Self.ourMAC, port: 7)
        print("AF_PACKET on veth: first TCP data frame: \(String(describing: data))")
        if let (metadata, payload) = data {
            #expect(payload > 1460, "a GSO super-frame carries more than one MSS")
            guard case .tcpSegmentation(1460, _, 34, 16) = metadata else {
                Issue.record("expected TSO metadata with MSS 1460 and a partial checksum at 34+16, got \(metadata)")
                return
            }
        }
        #expect(!probe.sources.contains(Self.ourMAC.bytes), "PACKET_IGNORE_OUTGOING: our own frames are not read back")
        try link.updateKernelStatistics()
        #expect(link.kernelPackets >= link.counters.framesReceived)
        #expect(link.kernelDrops == 0)
        #expect(link.counters.drops.total == 0)
        print("AF_PACKET statistics: \(link.kernelPackets) seen by the kernel, \(link.kernelDrops) dropped; \(link.counters)")
    }

    @Test("veth without the virtio-net header: ARP, and partial-checksum UDP finished in software",
          .enabled(if: Root.shouldRun, Comment(rawValue: Root.reason)))
    func vethPlain() throws {
        guard Root.check() else { return }
        var namespace = NetworkNamespace(prefix: "lpkt")
        defer { namespace.tearDown() }
        let (ours, peer) = Self.vethPair(&namespace)
        var link = try PacketSocketLink(interface: ours, virtioNetHeader: false, receiveBufferBytes: 1 << 20)
        #expect(!link.capabilities.partialChecksums && !link.capabilities.tcpSegmentation)
        #expect(link.capabilities.maxFrameSize == 1518)
        let probe = try LinkProbe(descriptor: link.descriptor, bufferSize: 2048)
        let kernelMAC = try Exchanges.arp(&link, probe: probe, namespace: namespace, device: peer,
                                          kernelIP: "10.77.2.1", ourIP: "10.77.2.2", ourMAC: Self.ourMAC)
        guard let kernelMAC else { return }
        try Exchanges.udpDelivery(&link, namespace: namespace, kernelMAC: kernelMAC, kernelIP: "10.77.2.1",
                                  ourIP: "10.77.2.2", ourMAC: Self.ourMAC, partial: true, pieces: 3, port: 5562)
        #expect(link.counters.checksumsCompletedInSoftware > 0)

        // A burst waiting in the socket comes in batches (one recvmmsg each), in order, as
        // far as the pool has buffers; the buffers a batch did not fill go back to the pool.
        let count = 100
        namespace.must("python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                       + "[s.sendto(i.to_bytes(2, \"big\") * 50, (\"10.77.2.2\", 5570)) for i in range(\(count))]'")
        usleep(100_000)
        let pool = BufferPool(count: 8, bufferSize: 2048, headroom: 64)
        var sequence: [Int] = [], largestBatch = 0
        for _ in 0..<200 where sequence.count < count {
            var batch = 0
            _ = try link.receive(into: pool, max: 32) { frame in
                batch += 1
                let bytes = frame.bytes
                // IPv4 UDP to port 5570 (0x15c2): the datagram's first two bytes are its number.
                if bytes.count >= 44, bytes[23] == 17, bytes[36] == 0x15, bytes[37] == 0xc2 {
                    sequence.append(Int(bytes[42]) << 8 | Int(bytes[43]))
                }
            }
            largestBatch = max(largestBatch, batch)
            #expect(pool.inUse == 0)
        }
        #expect(sequence == Array(0..<count), "\(sequence.count) datagrams: \(sequence.prefix(10))")
        #expect(largestBatch == 8, "a call takes as many frames as the pool has buffers")
    }

    /// Frames waiting in the receive ring come out in order, and a frame too large for a
    /// ring slot (a UDP super-datagram of 3 × 1000 bytes, where a slot holds 1500) comes
    /// whole from the socket's queue, in its place between the others. Without the ring
    /// (`recvmmsg`) the same frames come the same way.
    @Test("the receive ring: frames in order, one larger than a slot whole and in its place",
          .enabled(if: Root.shouldRun, Comment(rawValue: Root.reason)), arguments: [true, false])
    func receiveRing(ring: Bool) throws {
        guard Root.check() else { return }
        var namespace = NetworkNamespace(prefix: "lpkt")
        defer { namespace.tearDown() }
        let (ours, peer) = Self.vethPair(&namespace)
        var link = try PacketSocketLink(interface: ours, receiveBufferBytes: 1 << 20, receiveRing: ring)
        #expect((link.receiveRingFrames > 0) == ring, "\(link.receiveRingFrames) slots")
        namespace.must("ip neigh replace 10.77.2.2 lladdr \(Self.ourMAC) dev \(peer)")
        // Datagram i starts with i; number 10 goes as one super-datagram cut at 1000 bytes
        // (UDP_SEGMENT is option 103), the rest as 100 bytes each.
        namespace.must("""
            python3 -c 'import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            g = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); g.setsockopt(socket.SOL_UDP, 103, 1000)
            for i in range(21): (g if i == 10 else s).sendto(bytes([i]) * (3000 if i == 10 else 100), ("10.77.2.2", 5590))'
            """)
        let pool = BufferPool(count: 64, bufferSize: 128 + link.capabilities.maxFrameSize, headroom: 128)
        var numbers: [Int] = [], superFrame: (length: Int, metadata: OffloadMetadata)?
        for _ in 0..<100 where numbers.count < 21 {
            _ = try link.receive(into: pool, max: 8) { frame in
                let bytes = frame.bytes
                // IPv4 UDP to port 5590 (0x15d6).
                guard bytes.count > 42, bytes[23] == 17, bytes[36] == 0x15, bytes[37] == 0xd6 else { return }
                numbers.append(Int(bytes[42]))
                if bytes[42] == 10 { superFrame = (bytes.count, frame.offload) }
            }
            usleep(1000)
        }
        #expect(numbers == Array(0..<21), "\(numbers)")
        #expect(superFrame?.length == 14 + 20 + 8 + 3000, "\(String(describing: superFrame))")
        if case .udpSegmentation(1000, _, _, _)? = superFrame?.metadata {} else {
            Issue.record("the super-datagram's GSO metadata: \(String(describing: superFrame?.metadata))")
        }
        #expect(link.counters.drops.total == 0, "\(link.counters)")
        #expect(pool.inUse == 0)
    }

    /// The interface goes down and comes back: the socket's receive reports it once
    /// (ENETDOWN), counted, not thrown, and the link works again after. Thrown, it ended
    /// `offload host` and any loop on the link.
    @Test("the interface down and up again: counted, and the link works after",
          .enabled(if: Root.shouldRun, Comment(rawValue: Root.reason)))
    func interfaceDownAndUp() throws {
        guard Root.check() else { return }
        var namespace = NetworkNamespace(prefix: "lpkt")
        defer { namespace.tearDown() }
        let (ours, peer) = Self.vethPair(&namespace)
        var link = try PacketSocketLink(interface: ours, virtioNetHeader: false, receiveBufferBytes: 1 << 20)
        let pool = BufferPool(count: 8, bufferSize: 2048, headroom: 64)
        Shell.must("ip link set \(ours) down")
        var received = 0
        // A link with a receive ring looks for the socket's error after 256 empty polls.
        for _ in 0..<600 { received += try link.receive(into: pool, max: 8) { _ in } }
        #expect(received == 0 && link.counters.interfaceDown == 1, "\(link.counters)")
        Shell.must("ip link set \(ours) up")
        let probe = try LinkProbe(descriptor: link.descriptor, bufferSize: 2048)
        let kernelMAC = try Exchanges.arp(&link, probe: probe, namespace: namespace, device: peer,
                                          kernelIP: "10.77.2.1", ourIP: "10.77.2.2", ourMAC: Self.ourMAC)
        #expect(kernelMAC != nil, "ARP both ways once the interface is up again")
    }

    @Test("a send batch leaves at its end, in order, past a full batch and a gathered frame; outside a batch frames leave at once",
          .enabled(if: Root.shouldRun, Comment(rawValue: Root.reason)), arguments: [true, false])
    func sendBatch(virtioNetHeader: Bool) throws {
        guard Root.check() else { return }
        var namespace = NetworkNamespace(prefix: "lpkt")
        defer { namespace.tearDown() }
        let (ours, peer) = Self.vethPair(&namespace)
        var link = try PacketSocketLink(interface: ours, virtioNetHeader: virtioNetHeader, receiveBufferBytes: 1 << 20)
        let probe = try LinkProbe(descriptor: link.descriptor, bufferSize: 128 + link.capabilities.maxFrameSize)
        let kernelMAC = try Exchanges.arp(&link, probe: probe, namespace: namespace, device: peer,
                                          kernelIP: "10.77.2.1", ourIP: "10.77.2.2", ourMAC: Self.ourMAC)
        guard let kernelMAC else { return }
        let count = 102, port: UInt16 = 5580
        let received = Self.numberedDatagrams(in: namespace, port: port, count: count)
        // Datagram i carries i in its first two bytes; odd ones leave with a partial checksum,
        // which a link without the virtio-net header finishes in its copy.
        func send(_ i: Int, gathered: Bool = false) throws {
            let payload = [UInt8(i >> 8), UInt8(i & 0xff)] + Array(repeating: 0x5a, count: 62)
            let (header, metadata) = Frames.udp(
                from: Frames.mac(Self.ourMAC), Frames.ip("10.77.2.2"), port: 40000, to: kernelMAC,
                Frames.ip("10.77.2.1"), port: port, payload: payload, partial: i % 2 == 1)
            if gathered {
                try header.withUnsafeBytes { h in
                    try payload.withUnsafeBytes { p in
                        try [p].withUnsafeBufferPointer { try link.transmit(header: h, payloads: PayloadSlices($0), metadata: metadata) }
                    }
                }
            } else {
                try (header + payload).withUnsafeBytes { try link.transmit(header: $0, payloads: .none, metadata: metadata) }
            }
        }
        let before = link.counters.framesTransmitted
        link.beginBatch()
        for i in 0..<64 { try send(i) }
        #expect(link.counters.framesTransmitted == before, "the batch holds its frames")
        try send(64)
        #expect(link.counters.framesTransmitted == before + 64, "a full batch leaves when a 65th frame comes")
        try send(65, gathered: true)
        #expect(link.counters.framesTransmitted == before + 66, "a gathered frame goes alone, after the batch")
        for i in 66..<101 { try send(i) }
        link.endBatch()
        #expect(link.counters.framesTransmitted == before + 101)
        try send(101)
        #expect(link.counters.framesTransmitted == before + 102, "outside a batch a frame leaves at once")
        #expect(link.counters.drops.sendRefused == 0)
        let got = received()
        #expect(got == Array(0..<count), "\(got.count) datagrams: \(got.prefix(12))")
    }

    /// A frame that came with an 802.1Q tag (the kernel took it off before the socket saw
    /// it, and says so in the frame's auxiliary data) is dropped and counted. It used to
    /// arrive untagged, as if from the native LAN: a gateway on a trunk would route another
    /// VLAN's traffic as its own.
    @Test("a VLAN-tagged frame is counted and dropped, not taken for the untagged LAN's",
          .enabled(if: Root.shouldRun, Comment(rawValue: Root.reason)))
    func vlanTaggedFramesAreDropped() throws {
        guard Root.check() else { return }
        var namespace = NetworkNamespace(prefix: "lpkt")
        defer { namespace.tearDown() }
        let (ours, peer) = Self.vethPair(&namespace)
        var link = try PacketSocketLink(interface: ours, virtioNetHeader: false, receiveBufferBytes: 1 << 20)
        // The same ARP request from the peer's side, tagged with VLAN 5, then untagged.
        let arp = "b\"\\x00\\x01\\x08\\x00\\x06\\x04\\x00\\x01\" + b\"\\x02\" * 6 + bytes([10, 77, 2, 1]) + b\"\\x00\" * 6 + bytes([10, 77, 2, 9])"
        namespace.must("python3 -c 'import socket\ns = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
                       + "s.bind((\"\(peer)\", 0)); arp = \(arp)\nhead = b\"\\xff\" * 6 + b\"\\x02\" * 6\n"
                       + "s.send(head + b\"\\x81\\x00\\x00\\x05\\x08\\x06\" + arp + b\"\\x00\" * 14)\n"
                       + "s.send(head + b\"\\x08\\x06\" + arp + b\"\\x00\" * 18)'")
        let pool = BufferPool(count: 8, bufferSize: 2048, headroom: 64)
        var arps = 0
        for _ in 0..<50 where arps == 0 {
            _ = try link.receive(into: pool, max: 8) { frame in
                if frame.bytes.count >= 14, frame.bytes[12] == 0x08, frame.bytes[13] == 0x06 { arps += 1 }
            }
            usleep(10_000)
        }
        #expect(arps == 1, "the untagged ARP request only")
        #expect(link.counters.drops.vlanTagged == 1, "\(link.counters)")
    }

    /// A frame the kernel refuses in the middle of a batch (1516 bytes, past the MTU's
    /// 1514) is counted as refused, and the frames after it still leave, in order. The whole
    /// rest of the batch used to be dropped with it.
    @Test("a frame the kernel refuses in a send batch costs only itself",
          .enabled(if: Root.shouldRun, Comment(rawValue: Root.reason)))
    func sendBatchPastARefusedFrame() throws {
        guard Root.check() else { return }
        var namespace = NetworkNamespace(prefix: "lpkt")
        defer { namespace.tearDown() }
        let (ours, peer) = Self.vethPair(&namespace)
        var link = try PacketSocketLink(interface: ours, virtioNetHeader: false, receiveBufferBytes: 1 << 20)
        let probe = try LinkProbe(descriptor: link.descriptor, bufferSize: 128 + link.capabilities.maxFrameSize)
        let kernelMAC = try Exchanges.arp(&link, probe: probe, namespace: namespace, device: peer,
                                          kernelIP: "10.77.2.1", ourIP: "10.77.2.2", ourMAC: Self.ourMAC)
        guard let kernelMAC else { return }
        let port: UInt16 = 5581
        let received = Self.numberedDatagrams(in: namespace, port: port, count: 9)
        let before = link.counters.framesTransmitted
        link.beginBatch()
        for i in 0..<10 {
            // Datagram 5 makes a 1516-byte frame: within the link's 1518 (room for a VLAN tag),
            // past what the kernel takes untagged.
            let payload = [UInt8(0), UInt8(i)] + Array(repeating: 0x5a, count: i == 5 ? 1472 : 62)
            let (header, metadata) = Frames.udp(
                from: Frames.mac(Self.ourMAC), Frames.ip("10.77.2.2"), port: 40000, to: kernelMAC,
                Frames.ip("10.77.2.1"), port: port, payload: payload, partial: false)
            try (header + payload).withUnsafeBytes { try link.transmit(header: $0, payloads: .none, metadata: metadata) }
        }
        link.endBatch()
        #expect(link.counters.framesTransmitted == before + 9 && link.counters.drops.sendRefused == 1,
                "\(link.counters)")
        let got = received()
        #expect(got == [0, 1, 2, 3, 4, 6, 7, 8, 9], "\(got)")
    }

    @Test("a packet socket on a missing interface fails with ENODEV and says so",
          .enabled(if: Root.shouldRun, Comment(rawValue: Root.reason)))
    func missingInterface() throws {
        guard Root.check() else { return }
        let name = "nosuch\(getpid() % 1_000_000)"
        do {
            let link = try PacketSocketLink(interface: name)
            Issue.record("opened a packet socket on \(link.interface), which should not exist")
        } catch {
            guard case .system(_, let code, let detail) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(code == ENODEV)
            #expect(detail.contains(name) && detail.contains("no such interface"), "\(error)")
            print("packet socket on a missing interface: \(error)")
        }
    }
}
#endif
