#if os(Linux)
import OffloadTestSupport
import OffloadCore
@testable import OffloadLink
import OffloadWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// TAP links against the kernel: each test makes its own namespace, moves the TAP's kernel
/// side into it (10.77.1.1/24) and plays the host at 10.77.1.2 behind the TAP.
@Suite("TapLink", .serialized)
struct TapLinkTests {
    static let ourMAC = MACAddress(0x02, 0x77, 0x00, 0x00, 0x01, 0x02)

    /// Makes the namespace and the TAP's kernel side in it: address, up.
    static func attach(_ tap: String, to namespace: borrowing NetworkNamespace) {
        Shell.must("ip link set \(tap) netns \(namespace.name)")
        namespace.must("ip addr add 10.77.1.1/24 dev \(tap)")
        namespace.must("ip link set \(tap) up")
    }

    @Test("plain TAP: ARP request in, ARP reply out, ICMP to our MAC; gather with a checksum finished in software",
          .enabled(if: Root.shouldRun, Comment(rawValue: Root.reason)))
    func plainTap() throws {
        guard Root.check() else { return }
        let namespace = NetworkNamespace(prefix: "ltap")
        defer { namespace.tearDown() }
        let name = namespace.interfaceName("otp")
        var tap = try TapLink(name: name, mode: .plain)
        #expect(tap.name == name)
        #expect(tap.capabilities.readinessDescriptor == tap.descriptor)
        #expect(!tap.capabilities.partialChecksums && !tap.capabilities.tcpSegmentation)
        Self.attach(name, to: namespace)
        let probe = try LinkProbe(descriptor: tap.capabilities.readinessDescriptor, bufferSize: 2048)

        let kernelMAC = try Exchanges.arp(&tap, probe: probe, namespace: namespace, device: name,
                                          kernelIP: "10.77.1.1", ourIP: "10.77.1.2", ourMAC: Self.ourMAC)
        #expect(kernelMAC == tap.capabilities.address?.bytes, "the TAP's address is its kernel side's MAC")
        guard let kernelMAC else { return }

        // A partial checksum cannot cross a plain TAP: the link finishes it. The kernel checks
        // UDP checksums of frames from a plain TAP, so delivery proves the sum is right.
        let before = tap.counters.checksumsCompletedInSoftware
        try Exchanges.udpDelivery(&tap, namespace: namespace, kernelMAC: kernelMAC, kernelIP: "10.77.1.1",
                                  ourIP: "10.77.1.2", ourMAC: Self.ourMAC, partial: true, pieces: 3, port: 5555)
        #expect(tap.counters.checksumsCompletedInSoftware > before)
        try Exchanges.udpDelivery(&tap, namespace: namespace, kernelMAC: kernelMAC, kernelIP: "10.77.1.1",
                                  ourIP: "10.77.1.2", ourMAC: Self.ourMAC, partial: false, pieces: 1, port: 5556)
        #expect(tap.counters.framesReceived >= 2)
        #expect(tap.counters.framesTransmitted >= 3)
        #expect(tap.counters.drops.total == 0)
    }

    @Test("virtio-net TAP: ARP, TCP SYN arrives with a partial checksum, partial-checksum UDP is accepted",
          .enabled(if: Root.shouldRun, Comment(rawValue: Root.reason)))
    func virtioNetHeaderTap() throws {
        guard Root.check() else { return }
        let namespace = NetworkNamespace(prefix: "ltap")
        defer { namespace.tearDown() }
        let name = namespace.interfaceName("otv")
        var tap = try TapLink(name: name, mode: .virtioNetHeader)
        #expect(tap.capabilities.partialChecksums && tap.capabilities.tcpSegmentation)
        #expect(tap.capabilities.maxFrameSize >= 65536)
        Self.attach(name, to: namespace)
        let probe = try LinkProbe(descriptor: tap.descriptor,
                                  bufferSize: 128 + TapLink.requiredReceiveSpace(.virtioNetHeader))

        let kernelMAC = try Exchanges.arp(&tap, probe: probe, namespace: namespace, device: name,
                                          kernelIP: "10.77.1.1", ourIP: "10.77.1.2", ourMAC: Self.ourMAC)
        guard let kernelMAC else { return }
        let metadata = try Exchanges.partialChecksumSYN(
            &tap, probe: probe, namespace: namespace, device: name,
            kernelIP: "10.77.1.1", ourIP: "10.77.1.2", ourMAC: Self.ourMAC, port: 9)
        print("virtio-net TAP: TCP SYN from the kernel arrived with offload metadata \(String(describing: metadata))")
        // Sent with only the pseudo-header sum and NEEDS_CSUM: the kernel takes it as is.
        try Exchanges.udpDelivery(&tap, namespace: namespace, kernelMAC: kernelMAC, kernelIP: "10.77.1.1",
                                  ourIP: "10.77.1.2", ourMAC: Self.ourMAC, partial: true, pieces: 3, port: 5557)
        #expect(tap.counters.checksumsCompletedInSoftware == 0)

        // The kernel's first data on a connection we accept by hand leaves as a TSO super-frame.
        let data = try Exchanges.superFrame(
            &tap, probe: probe, namespace: namespace, device: name, kernelMAC: kernelMAC,
            kernelIP: "10.77.1.1", ourIP: "10.77.1.2", ourMAC: Self.ourMAC, port: 7)
        print("virtio-net TAP: first TCP data frame: \(String(describing: data))")
        if let (metadata, payload) = data {
            #expect(payload > 1460, "a super-frame carries more than one MSS")
            guard case .tcpSegmentation(1460, _, 34, 16) = metadata else {
                Issue.record("expected TSO metadata with MSS 1460 and a partial checksum at 34+16, got \(metadata)")
                return
            }
        }
        #expect(tap.counters.drops.total == 0)
    }

    @Test("a TAP name held by another open TapLink fails with EBUSY and says so",
          .enabled(if: Root.shouldRun, Comment(rawValue: Root.reason)))
    func nameInUse() throws {
        guard Root.check() else { return }
        let namespace = NetworkNamespace(prefix: "ltap")
        defer { namespace.tearDown() }
        let name = namespace.interfaceName("otb")
        let first = try TapLink(name: name)
        do {
            let second = try TapLink(name: name)
            Issue.record("a second TAP \(second.name) opened while \(first.name) is held")
        } catch {
            guard case .system(let operation, let code, let detail) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(code == EBUSY)
            #expect(operation.contains("TAP"))
            #expect(detail.contains(name) && detail.lowercased().contains("busy"), "\(error)")
            print("second TAP of the same name: \(error)")
        }
    }

    @Test("virtio-net TAP with a pool of 2 KiB buffers: receive fails with a clear error",
          .enabled(if: Root.shouldRun, Comment(rawValue: Root.reason)))
    func poolTooSmall() throws {
        guard Root.check() else { return }
        let namespace = NetworkNamespace(prefix: "ltap")
        defer { namespace.tearDown() }
        var tap = try TapLink(name: namespace.interfaceName("ots"), mode: .virtioNetHeader)
        let pool = BufferPool(count: 4, bufferSize: 2048, headroom: 128)
        do {
            _ = try tap.receive(into: pool, max: 8) { _ in }
            Issue.record("receive into 2 KiB buffers in virtio-net mode did not fail")
        } catch {
            guard case .configuration(let detail) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(detail.contains("1920") && detail.contains("\(TapLink.requiredReceiveSpace(.virtioNetHeader))"),
                    "\(error)")
        }
        #expect(pool.available == 4, "no buffer kept")
    }

    @Test("plain TAP refuses super-frames (TSO, UDP GSO) and frames over its maximum",
          .enabled(if: Root.shouldRun, Comment(rawValue: Root.reason)))
    func plainTapRefusals() throws {
        guard Root.check() else { return }
        let namespace = NetworkNamespace(prefix: "ltap")
        defer { namespace.tearDown() }
        var tap = try TapLink(name: namespace.interfaceName("otr"), mode: .plain)
        let frame = [UInt8](repeating: 0, count: 3000)
        frame.withUnsafeBytes { bytes in
            let refusal = LinkError.unsupportedOffload("a super-frame (TSO, UDP GSO) without the virtio-net header")
            #expect(throws: refusal) {
                try tap.transmit(header: UnsafeRawBufferPointer(rebasing: bytes[0..<1000]), payloads: .none,
                                 metadata: .tcpSegmentation(segmentSize: 1448, headerLength: 54,
                                                            checksumStart: 34, checksumOffset: 16))
            }
            #expect(throws: refusal) {
                try tap.transmit(header: UnsafeRawBufferPointer(rebasing: bytes[0..<1000]), payloads: .none,
                                 metadata: .udpSegmentation(segmentSize: 1000, headerLength: 42,
                                                            checksumStart: 34, checksumOffset: 6))
            }
            #expect(throws: LinkError.frameTooLarge(size: 3000, max: TapLink.maxFrameSize(.plain))) {
                try tap.transmit(bytes)
            }
        }
        #expect(tap.counters.framesTransmitted == 0)
    }

    @Test("a TAP name over 15 bytes fails with EINVAL and says why (no root needed)")
    func nameTooLong() {
        do {
            let tap = try TapLink(name: "offload-tap-name-too-long")
            Issue.record("opened \(tap.name)")
        } catch {
            #expect(error == .system(operation: "open TAP", errno: EINVAL,
                                     detail: "TAP offload-tap-name-too-long (a name is 1 to 15 bytes): Invalid argument"))
        }
    }

    @Test("Poller: wake() makes wait return at once; a quiet wait times out")
    func pollerWake() throws {
        let poller = try Poller()
        #expect(try poller.wait(timeoutMilliseconds: 0) == false)
        poller.wake()
        poller.wake()
        #expect(try poller.wait(timeoutMilliseconds: 1000) == true)
        #expect(try poller.wait(timeoutMilliseconds: 10) == false, "the wake-up was consumed")
    }
}

/// The frame I/O under both Linux links, run over a SOCK_SEQPACKET socket pair (one message
/// per frame, like a TAP): header handling, drops by reason, gather and the software checksum.
/// Needs no privileges.
@Suite("Link frame I/O (socket pair, no root)")
struct FrameIOTests {
    /// Two connected non-blocking descriptors; the first plays the device.
    final class Pair {
        let device: Int32
        let peer: Int32
        init() throws {
            var fds: [Int32] = [-1, -1]
            let rc = socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds)
            try #require(rc == 0, "socketpair: errno \(errno)")
            device = fds[0]
            peer = fds[1]
        }
        deinit {
            close(device)
            close(peer)
        }
        func send(_ bytes: [UInt8]) {
            let n = bytes.withUnsafeBytes { write(peer, $0.baseAddress, $0.count) }
            #expect(n == bytes.count)
        }
        func readBack() -> [UInt8]? {
            var space = [UInt8](repeating: 0, count: 70000)
            let n = space.withUnsafeMutableBytes { read(peer, $0.baseAddress, $0.count) }
            return n < 0 ? nil : Array(space[0..<n])
        }
    }

    static func header(_ h: VirtioNetHeader) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: VirtioNetHeader.size)
        bytes.withUnsafeMutableBytes { h.emit(into: $0) }
        return bytes
    }

    @Test("virtio-net receive: metadata from the header; bad headers, runts and short reads are counted drops")
    func virtioReceive() throws {
        let pair = try Pair()
        var io = FrameIO(descriptor: pair.device, source: .device, virtioNetHeader: true)
        var counters = SystemLinkCounters()
        let frame = [UInt8](repeating: 0xab, count: 60)
        let partial = VirtioNetHeader(.partialChecksum(checksumStart: 34, checksumOffset: 16))
        pair.send(Self.header(VirtioNetHeader(gsoType: VirtioNetHeader.gsoUDP)) + frame)   // unsupported GSO
        pair.send(Self.header(VirtioNetHeader(flags: 1, checksumStart: 50, checksumOffset: 16)) + frame)  // outside
        pair.send(Self.header(partial) + frame)                                           // good
        pair.send(Self.header(VirtioNetHeader()) + [1, 2, 3])                             // runt
        pair.send([1, 2, 3, 4, 5])                                                       // no whole header
        pair.send(Self.header(VirtioNetHeader()) + frame)                                 // good
        let pool = BufferPool(count: 4, bufferSize: 128 + 70000, headroom: 128)
        var got: [(Int, OffloadMetadata)] = []
        let n = try io.receive(into: pool, max: 32, minimumSpace: 65550, counters: &counters) { buffer in
            got.append((buffer.count, buffer.offload))
        }
        #expect(n == 2)
        #expect(got.map(\.0) == [60, 60])
        #expect(got.map(\.1) == [.partialChecksum(checksumStart: 34, checksumOffset: 16), .none])
        #expect(counters.drops.badVirtioNetHeader == 3)
        #expect(counters.drops.runt == 1)
        #expect(counters.framesReceived == 2 && counters.bytesReceived == 120)
        #expect(pool.available == 4, "every buffer is back")
        // Nothing left: a receive returns 0 without blocking.
        #expect(try io.receive(into: pool, max: 32, minimumSpace: 0, counters: &counters) { _ in } == 0)
    }

    @Test("receive stops at max and when the pool is empty; frames wait in the device")
    func burstLimits() throws {
        let pair = try Pair()
        var io = FrameIO(descriptor: pair.device, source: .device, virtioNetHeader: false)
        var counters = SystemLinkCounters()
        for i in 0..<5 { pair.send([UInt8](repeating: UInt8(i), count: 64)) }
        let pool = BufferPool(count: 2, bufferSize: 2048, headroom: 128)
        var first: [UInt8] = []
        #expect(try io.receive(into: pool, max: 1, minimumSpace: 1518, counters: &counters) { first.append($0.bytes[0]) } == 1)
        // The body here keeps nothing, so a pool of 2 serves any burst.
        #expect(try io.receive(into: pool, max: 32, minimumSpace: 1518, counters: &counters) { first.append($0.bytes[0]) } == 4)
        #expect(first == [0, 1, 2, 3, 4], "arrival order")
    }

    @Test("plain transmit finishes a partial checksum whose field lies inside a payload slice")
    func softwareChecksumInSlice() throws {
        let pair = try Pair()
        var io = FrameIO(descriptor: pair.device, source: .device, virtioNetHeader: false)
        var counters = SystemLinkCounters()
        let payload = Array("gathered across three slices, odd length!".utf8)
        let (frameHeader, metadata) = Frames.udp(
            from: [2, 0, 0, 0, 0, 1], Frames.ip("10.77.9.2"), port: 1234, to: [2, 0, 0, 0, 0, 2],
            Frames.ip("10.77.9.1"), port: 5678, payload: payload, partial: true)
        let ipPart = Array(frameHeader[0..<34])     // Ethernet + IPv4
        let udpPart = Array(frameHeader[34...])     // UDP header: holds the checksum field
        let tail1 = Array(payload[0..<7]), tail2 = Array(payload[7...])
        try ipPart.withUnsafeBytes { h in
            try udpPart.withUnsafeBytes { u in
                try tail1.withUnsafeBytes { a in
                    try tail2.withUnsafeBytes { b in
                        let list = [u, a, b]
                        try list.withUnsafeBufferPointer { l in
                            try io.transmit(header: h, payloads: PayloadSlices(l), metadata: metadata,
                                            maxFrameSize: 1518, counters: &counters)
                        }
                    }
                }
            }
        }
        let sent = try #require(pair.readBack())
        #expect(sent.count == frameHeader.count + payload.count)
        #expect(Array(sent[0..<40]) == Array(frameHeader[0..<40]) && Array(sent[42...]) == Array((frameHeader + payload)[42...]),
                "only the checksum field changed")
        var verify = InternetChecksum()
        (Frames.ip("10.77.9.2") + Frames.ip("10.77.9.1") + [0, 17] + Frames.be16(UInt16(8 + payload.count)))
            .withUnsafeBytes { verify.add($0) }
        sent[34...].withUnsafeBytes { verify.add($0) }
        #expect(verify.value == 0, "the finished UDP checksum verifies")
        #expect(counters.checksumsCompletedInSoftware == 1)

        // A field split across two slices cannot be replaced in the gather list.
        let splitA = Array((frameHeader + payload)[0..<41]), splitB = Array((frameHeader + payload)[41...])
        #expect(throws: LinkError.unsupportedOffload("a partial checksum field split across two gather slices")) {
            try splitA.withUnsafeBytes { a in
                try splitB.withUnsafeBytes { b in
                    try [b].withUnsafeBufferPointer { l in
                        try io.transmit(header: a, payloads: PayloadSlices(l), metadata: metadata,
                                        maxFrameSize: 1518, counters: &counters)
                    }
                }
            }
        }
    }

    @Test("virtio-net transmit puts the header describing the metadata in front, once per frame")
    func virtioTransmit() throws {
        let pair = try Pair()
        var io = FrameIO(descriptor: pair.device, source: .device, virtioNetHeader: true)
        var counters = SystemLinkCounters()
        let frame = [UInt8](repeating: 7, count: 100)
        let tso = OffloadMetadata.tcpSegmentation(segmentSize: 1448, headerLength: 66, checksumStart: 34, checksumOffset: 16)
        try frame.withUnsafeBytes { f in
            try io.transmit(header: f, payloads: .none, metadata: tso, maxFrameSize: 65550, counters: &counters)
            try io.transmit(header: f, payloads: .none, metadata: .none, maxFrameSize: 65550, counters: &counters)
        }
        let first = try #require(pair.readBack())
        #expect(Array(first[0..<10]) == Self.header(VirtioNetHeader(tso)) && Array(first[10...]) == frame)
        let second = try #require(pair.readBack())
        #expect(Array(second[0..<10]) == [UInt8](repeating: 0, count: 10) && second.count == 110)
        #expect(counters.framesTransmitted == 2 && counters.bytesTransmitted == 200)
    }
}
#endif
