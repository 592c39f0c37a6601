import OffloadCore
import OffloadWire
import OffloadLink
import OffloadTCP

/// A host: one IPv4 address on one Ethernet link. It answers ARP requests for its
/// address, resolves and caches neighbours (RFC 826, with timeouts and retries), answers
/// ICMP echo requests, can send echo requests of its own, and runs a TCP stack (`tcp`) on
/// its address.
///
/// It does no I/O: frames are handed to `receive`, time to `poll`, and every frame it
/// wants sent is given to the `transmit` closure of the call (see `HostLoop` for a loop
/// that runs it on a link).
public final class IPv4Host {
    public struct Configuration: Sendable {
        public var interface: IPv4CIDR
        public var hardwareAddress: MACAddress
        /// Next hop for destinations outside `interface`; nil answers only the local subnet.
        public var gateway: IPv4Address?
        public var neighbors = NeighborCache.Configuration()
        /// IP packets held per neighbour while it is being resolved (enough for the SYNs of
        /// many connections opened at once, as Linux's queue of about 100 packets).
        public var pendingPerNeighbor = 128

        public init(interface: IPv4CIDR, hardwareAddress: MACAddress, gateway: IPv4Address? = nil) {
            self.interface = interface
            self.hardwareAddress = hardwareAddress
            self.gateway = gateway
        }
    }

    public let configuration: Configuration
    public private(set) var neighbors: NeighborCache
    public private(set) var counters = HostCounters()
    /// Echo replies received, as (identifier, sequence number), in arrival order.
    public private(set) var echoReplies: [(identifier: UInt16, sequence: UInt16)] = []
    /// IP packets (without Ethernet header) waiting for their next hop to resolve.
    private var pending: [IPv4Address: [[UInt8]]] = [:]
    /// A resolved neighbour answered from a new MAC address since `takeNeighborMove`: what
    /// was built with the old one (an offloaded connection's headers) is stale.
    private var neighborMoved = false
    /// Where outgoing frames are built: one frame at a time, allocated once.
    private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 16)
    private var identification: UInt16 = 0
    /// The host's TCP, when it has one: segments to its address go there, and `poll` sends
    /// what it emits.
    public let tcp: TCPStack?
    /// The host's UDP sockets.
    public var udp = UDPSockets()

    public var address: IPv4Address { configuration.interface.address }
    public var hardwareAddress: MACAddress { configuration.hardwareAddress }

    public init(_ configuration: Configuration, tcp: TCPStack.Configuration? = nil) {
        self.configuration = configuration
        neighbors = NeighborCache(configuration: configuration.neighbors)
        self.tcp = tcp.map { TCPStack(address: configuration.interface.address, configuration: $0) }
    }

    deinit { scratch.deallocate() }

    /// Sends one frame: its headers, then payload slices from wherever the payload lives
    /// (a TCP segment's from the application's buffers; none for the rest).
    public typealias Transmit = (_ header: UnsafeRawBufferPointer, _ payload: PayloadSlices) -> Void

    /// A `Transmit` for callers that want each frame in one piece: the payload slices are
    /// copied after the header into a scratch buffer, valid during `body`.
    public static func contiguous(_ body: @escaping (UnsafeRawBufferPointer) -> Void) -> Transmit {
        { header, payload in
            guard !payload.isEmpty else { return body(header) }
            var frame = [UInt8](header)
            for slice in payload.slices { frame += slice }
            frame.withUnsafeBytes(body)
        }
    }

    // MARK: Receive

    /// Handles one received frame.
    public func receive(_ frame: borrowing PacketBuffer, now: Instant, transmit: Transmit) {
        receive(frame: frame.bytes, offload: frame.offload, now: now, transmit: transmit)
    }

    /// Handles one received frame given as bytes (valid during the call), with what its
    /// link left unfinished.
    public func receive(frame: UnsafeRawBufferPointer, offload: OffloadMetadata, now: Instant, transmit: Transmit) {
        counters.framesReceived &+= 1
        let ethernet: EthernetFrame
        do { ethernet = try EthernetFrame(checking: frame) } catch { return drop(.malformedEthernet) }
        let destination = ethernet.destination
        guard destination == hardwareAddress || destination.isBroadcast else { return drop(.notForUs) }
        switch ethernet.etherType {
        case .arp: receiveARP(ethernet.payload, now: now, transmit: transmit)
        case .ipv4: receiveIPv4(ethernet, metadata: offload, now: now, transmit: transmit)
        default: drop(.unsupportedEtherType)
        }
    }

    private func receiveARP(_ bytes: UnsafeRawBufferPointer, now: Instant, transmit: Transmit) {
        let arp: ARPRepr
        do { arp = try ARPRepr.parse(ARPPacket(checking: bytes)) } catch { return drop(.malformedARP) }
        let forUs = arp.targetProtocolAddress == address
        switch neighbors.learn(arp.senderProtocolAddress, is: arp.senderHardwareAddress, now: now, add: forUs) {
        case .tableFull: drop(.neighborTableFull)
        case .moved: neighborMoved = true
        case .recorded: break
        }
        if arp.operation == .reply { counters.arpRepliesReceived &+= 1 }
        if neighbors.lookup(arp.senderProtocolAddress, now: now) != nil {
            flushPending(arp.senderProtocolAddress, now: now, transmit: transmit)
        }
        guard forUs, arp.operation == .request else { return }
        let reply = ARPRepr(
            operation: .reply, senderHardwareAddress: hardwareAddress, senderProtocolAddress: address,
            targetHardwareAddress: arp.senderHardwareAddress, targetProtocolAddress: arp.senderProtocolAddress)
        sendFrame(to: arp.senderHardwareAddress, type: .arp, transmit: transmit) { reply.emit(into: $0); return reply.bufferLength }
        counters.arpRequestsAnswered &+= 1
    }

    private func receiveIPv4(_ ethernet: EthernetFrame, metadata: OffloadMetadata, now: Instant, transmit: Transmit) {
        let policy = ChecksumPolicy(metadata)
        let packet: IPv4Packet
        let ip: IPv4Repr
        do {
            packet = try IPv4Packet(checking: ethernet.payload)
            ip = try IPv4Repr.parse(packet, checksums: policy)
        } catch {
            switch error {
            case .badChecksum: return drop(.badChecksum)
            case .unsupported: return drop(.ipFragment)
            default: return drop(.malformedIPv4)
            }
        }
        guard ip.destination == address else { return drop(.notForUs) }
        if ip.protocol == .tcp, let tcp {
            let segment: TCPPacket
            let header: TCPRepr
            do {
                segment = try TCPPacket(checking: packet.payload)
                header = try TCPRepr.parse(segment, source: ip.source, destination: ip.destination, checksums: policy)
            } catch {
                if case .badChecksum = error { return drop(.badChecksum) }
                return drop(.malformedTCP)
            }
            counters.tcpSegmentsReceived &+= 1
            tcp.receive(header, payload: segment.payload, source: ip.source, destination: ip.destination, now: now)
            return
        }
        if ip.protocol == .udp {
            do {
                let datagram = try UDPPacket(checking: packet.payload)
                let header = try UDPRepr.parse(datagram, source: ip.source, destination: ip.destination, checksums: policy)
                // A UDP GSO super-datagram stands for datagrams of `segmentSize` bytes (the last
                // may be shorter): each is delivered on its own, as Linux cuts them on receive.
                var payload = datagram.payload[...]
                if case .udpSegmentation(let size, _, _, _) = metadata, size > 0 {
                    while payload.count > Int(size) {
                        udp.deliver(to: header.destinationPort, UDPDatagram(peer: ip.source, peerPort: header.sourcePort,
                                                                           payload: Array(payload.prefix(Int(size)))))
                        payload = payload.dropFirst(Int(size))
                    }
                }
                udp.deliver(to: header.destinationPort, UDPDatagram(peer: ip.source, peerPort: header.sourcePort,
                                                                   payload: Array(payload)))
            } catch {
                if case .badChecksum = error { return drop(.badChecksum) }
                return drop(.malformedUDP)
            }
            return
        }
        guard ip.protocol == .icmp else { return drop(.unsupportedProtocol) }
        let icmp: ICMPv4Repr
        let message: ICMPv4Packet
        do {
            message = try ICMPv4Packet(checking: packet.payload)
            icmp = try ICMPv4Repr.parse(message, checksums: policy)
        } catch {
            if case .badChecksum = error { return drop(.badChecksum) }
            return drop(.malformedICMP)
        }
        switch icmp {
        case .echoRequest(let id, let seq, _):
            let data = message.data
            let reply = ICMPv4Repr.echoReply(identifier: id, sequenceNumber: seq, dataLength: data.count)
            sendIPv4(to: ip.source, protocol: .icmp, payloadLength: reply.bufferLength, now: now, transmit: transmit) { out in
                UnsafeMutableRawBufferPointer(rebasing: out[ICMPv4Packet.headerLength...]).copyMemory(from: data)
                reply.emit(into: out, checksums: .verify)
            }
            counters.echoRequestsAnswered &+= 1
        case .echoReply(let id, let seq, _):
            counters.echoRepliesReceived &+= 1
            echoReplies.append((id, seq))
        case .destinationUnreachable(let code, let mtu, let quoted, _):
            counters.icmpErrorsReceived &+= 1
            // About a TCP segment of ours: the quote holds its IP header and at least the
            // first 8 bytes of its TCP header (ports, sequence number).
            let data = message.data
            let quotedHeader = Int(data[0] & 0x0f) * 4
            guard quoted.protocol == .tcp, quoted.source == address, let tcp, data.count >= quotedHeader + 8 else {
                return
            }
            let tcpHeader = UnsafeRawBufferPointer(rebasing: data[quotedHeader...])
            let localPort = UInt16(bigEndian: tcpHeader.loadUnaligned(fromByteOffset: 0, as: UInt16.self))
            let remotePort = UInt16(bigEndian: tcpHeader.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
            let sequence = UInt32(bigEndian: tcpHeader.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
            if code == 4 {
                tcp.pathMTUDecreased(to: Int(mtu), remote: quoted.destination, remotePort: remotePort,
                                     localPort: localPort, quotedSequence: sequence)
            } else {
                tcp.destinationUnreachable(code: code, remote: quoted.destination, remotePort: remotePort,
                                           localPort: localPort, quotedSequence: sequence)
            }
        case .timeExceeded:
            counters.icmpErrorsReceived &+= 1
        }
    }

    // MARK: Send

    /// Sends an ICMP echo request with `dataLength` bytes of pattern data.
    public func ping(_ destination: IPv4Address, identifier: UInt16, sequence: UInt16, dataLength: Int = 56,
                     now: Instant, transmit: Transmit) {
        let request = ICMPv4Repr.echoRequest(identifier: identifier, sequenceNumber: sequence, dataLength: dataLength)
        sendIPv4(to: destination, protocol: .icmp, payloadLength: request.bufferLength, now: now, transmit: transmit) { out in
            for i in 0..<dataLength { out[ICMPv4Packet.headerLength + i] = UInt8(truncatingIfNeeded: i) }
            request.emit(into: out, checksums: .verify)
        }
        counters.echoRequestsSent &+= 1
    }

    /// Advances timers: resends ARP requests, gives up on silent neighbours (dropping what
    /// waited for them), expires old entries.
    /// Runs timers and sends what is queued: ARP retries, UDP datagrams, TCP segments (at
    /// most `budget` of the last, the room the transmit path has).
    public func poll(now: Instant, budget: Int = .max, transmit: Transmit) {
        let (retry, failed) = neighbors.expire(now: now)
        for ip in retry { sendARPRequest(for: ip, transmit: transmit) }
        for ip in failed {
            for _ in pending.removeValue(forKey: ip) ?? [] { drop(.resolutionFailed) }
        }
        udp.flush { port, datagram in
            let header = UDPRepr(sourcePort: port, destinationPort: datagram.peerPort,
                                 payloadLength: datagram.payload.count)
            sendIPv4(to: datagram.peer, protocol: .udp, payloadLength: header.bufferLength, now: now,
                     transmit: transmit) { out in
                datagram.payload.withUnsafeBytes {
                    UnsafeMutableRawBufferPointer(rebasing: out[header.headerLength...]).copyMemory(from: $0)
                }
                header.emit(into: out, source: address, destination: datagram.peer, checksums: .verify)
            }
        }
        tcp?.poll(now: now, budget: budget) { id, header, payload in
            sendTCP(header, payload: payload, to: id.remote, now: now, transmit: transmit)
            counters.tcpSegmentsSent &+= 1
        }
    }

    /// Whether `poll` has something to send now.
    public var hasOutput: Bool { udp.hasOutput || (tcp?.hasOutput ?? false) }

    /// When `poll` next has work to do.
    public var nextDeadline: Instant? {
        guard let t = tcp?.nextDeadline else { return neighbors.nextDeadline }
        return neighbors.nextDeadline.map { min($0, t) } ?? t
    }

    /// Whether a neighbour moved since the last call (see `NeighborCache.Learned.moved`).
    public func takeNeighborMove() -> Bool {
        defer { neighborMoved = false }
        return neighborMoved
    }

    /// The headers of the segments of a connection to `destination`, once its next hop is
    /// resolved (what the engine needs to send them itself).
    public func frameHeaders(to destination: IPv4Address, now: Instant) -> TCPFrameHeaders? {
        guard let hop = nextHop(destination), let mac = neighbors.lookup(hop, now: now) else { return nil }
        return TCPFrameHeaders(sourceMAC: hardwareAddress, destinationMAC: mac, source: address, destination: destination)
    }

    /// The next hop for `destination`: itself on the local subnet, else the gateway.
    private func nextHop(_ destination: IPv4Address) -> IPv4Address? {
        if configuration.interface.contains(destination) { return destination }
        return configuration.gateway
    }

    /// Sends a TCP segment as a gather list: Ethernet, IPv4 and TCP headers built here, then
    /// the payload slices as they are (the application's memory, not copied here); the TCP
    /// checksum is summed over the headers and the slices. Held for ARP, it is copied whole.
    private func sendTCP(_ header: TCPRepr, payload: UnsafeBufferPointer<UnsafeRawBufferPointer>,
                         to destination: IPv4Address, now: Instant, transmit: Transmit) {
        guard let hop = nextHop(destination) else { return drop(.noRoute) }
        guard let mac = neighbors.lookup(hop, now: now) else {
            // Not resolved yet: the whole packet waits in `pending`.
            return sendIPv4(to: destination, protocol: .tcp, payloadLength: header.bufferLength, now: now,
                            transmit: transmit) { out in
                var at = header.headerLength
                for slice in payload {
                    UnsafeMutableRawBufferPointer(rebasing: out[at..<(at + slice.count)]).copyMemory(from: slice)
                    at += slice.count
                }
                header.emit(into: out, source: address, destination: destination, checksums: .verify)
            }
        }
        identification &+= 1
        let headers = TCPFrameHeaders(sourceMAC: hardwareAddress, destinationMAC: mac, source: address,
                                      destination: destination)
        let (headersEnd, _) = headers.write(header, payload: payload, identification: identification,
                                            partialChecksum: false, into: scratch)
        transmit(UnsafeRawBufferPointer(rebasing: scratch[0..<headersEnd]), PayloadSlices(payload))
        counters.framesTransmitted &+= 1
    }

    /// Builds an IPv4 packet (header by us, payload by `fill` into the buffer it is given)
    /// and sends it, or holds it until the next hop resolves.
    private func sendIPv4(to destination: IPv4Address, protocol proto: IPProtocol, payloadLength: Int, now: Instant,
                          transmit: Transmit, fill: (UnsafeMutableRawBufferPointer) -> Void) {
        guard let hop = nextHop(destination) else { return drop(.noRoute) }
        guard EthernetFrame.headerLength + IPv4Packet.minimumHeaderLength + payloadLength <= scratch.count else {
            return drop(.tooLargeToAnswer)
        }
        identification &+= 1
        let ip = IPv4Repr(source: address, destination: destination, protocol: proto, payloadLength: payloadLength,
                          identification: identification)
        let start = EthernetFrame.headerLength
        let packet = UnsafeMutableRawBufferPointer(rebasing: scratch[start..<start + ip.bufferLength])
        fill(UnsafeMutableRawBufferPointer(rebasing: packet[IPv4Packet.minimumHeaderLength...]))
        ip.emit(into: packet, checksums: .verify)
        if let mac = neighbors.lookup(hop, now: now) {
            sendFrame(to: mac, type: .ipv4, transmit: transmit) { _ in ip.bufferLength }
            return
        }
        var queue = pending[hop] ?? []
        guard queue.count < configuration.pendingPerNeighbor else { return drop(.resolutionQueueFull) }
        queue.append(Array(UnsafeRawBufferPointer(packet)))
        pending[hop] = queue
        if neighbors.startResolving(hop, now: now) { sendARPRequest(for: hop, transmit: transmit) }
    }

    private func flushPending(_ hop: IPv4Address, now: Instant, transmit: Transmit) {
        guard let queue = pending.removeValue(forKey: hop), let mac = neighbors.lookup(hop, now: now) else { return }
        for packet in queue {
            sendFrame(to: mac, type: .ipv4, transmit: transmit) { out in
                packet.withUnsafeBytes { out.copyMemory(from: $0) }
                return packet.count
            }
        }
    }

    private func sendARPRequest(for ip: IPv4Address, transmit: Transmit) {
        let request = ARPRepr(operation: .request, senderHardwareAddress: hardwareAddress, senderProtocolAddress: address,
                              targetHardwareAddress: .zero, targetProtocolAddress: ip)
        sendFrame(to: .broadcast, type: .arp, transmit: transmit) { request.emit(into: $0); return request.bufferLength }
        counters.arpRequestsSent &+= 1
    }

    /// Writes an Ethernet header in front of what `fill` writes after it (fill returns its
    /// length), pads to the 60-byte minimum, and transmits.
    private func sendFrame(to destination: MACAddress, type: EtherType, transmit: Transmit,
                           fill: (UnsafeMutableRawBufferPointer) -> Int) {
        let start = EthernetFrame.headerLength
        var length = start + fill(UnsafeMutableRawBufferPointer(rebasing: scratch[start...]))
        if length < 60 {
            UnsafeMutableRawBufferPointer(rebasing: scratch[length..<60]).initializeMemory(as: UInt8.self, repeating: 0)
            length = 60
        }
        EthernetRepr(destination: destination, source: hardwareAddress, etherType: type).emit(into: scratch)
        transmit(UnsafeRawBufferPointer(rebasing: scratch[0..<length]), .none)
        counters.framesTransmitted &+= 1
    }

    private func drop(_ reason: HostDropReason) { counters[drop: reason] &+= 1 }

    /// Counts a frame the link refused to send.
    public func countTransmitFailure() {
        counters.framesTransmitted &-= 1
        drop(.transmitFailed)
    }
}
