import OffloadCore
import OffloadLink
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
            guard case .system(_, let code, let detail) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(code == EINVAL)
            #expect(detail.contains("1920") && detail.contains("\(TapLink.requiredReceiveSpace(.virtioNetHeader))"),
                    "\(error)")
        }
        #expect(pool.available == 4, "no buffer kept")
    }

    @Test("plain TAP refuses TSO super-frames and frames over its maximum",
          .enabled(if: Root.shouldRun, Comment(rawValue: Root.reason)))
    func plainTapRefusals() throws {
        guard Root.check() else { return }
        let namespace = NetworkNamespace(prefix: "ltap")
        defer { namespace.tearDown() }
        var tap = try TapLink(name: namespace.interfaceName("otr"), mode: .plain)
        let frame = [UInt8](repeating: 0, count: 3000)
        frame.withUnsafeBytes { bytes in
            #expect(throws: LinkError.unsupportedOffload("TCP segmentation (TSO) without the virtio-net header")) {
                try tap.transmit(header: UnsafeRawBufferPointer(rebasing: bytes[0..<1000]), payloads: .none,
                                 metadata: .tcpSegmentation(segmentSize: 1448, headerLength: 54,
                                                            checksumStart: 34, checksumOffset: 16))
            }
            #expect(throws: LinkError.frameTooLarge(size: 3000, max: TapLink.maxFrameSize(.plain))) {
                try tap.transmit(bytes)
            }
        }
        #expect(tap.counters.framesTransmitted == 0)
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
