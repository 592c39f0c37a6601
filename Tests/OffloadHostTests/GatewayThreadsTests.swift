#if os(Linux)
import Foundation
import Glibc
import Synchronization
import Testing
import OffloadCore
import OffloadEngine
import OffloadHost
import OffloadLink
import OffloadWire

/// The gateway as `offload gateway --threads 2` runs it: `EngineLoop` with the engine's poll
/// loop on one thread and the software on another, NAT on, on socket pairs whose other ends
/// the test's thread writes as the client and reads as the server.
@Suite struct GatewayThreadsTests {
    final class StopFlag: Sendable {
        let raised = Atomic<Bool>(false)
    }

    /// New flows, each alone (a connection's SYN, say), reach the server through the NAT.
    /// Each install sends the software a notice of the new translation, and only the
    /// software reads those: the engine's thread may not stay awake for them. It used to
    /// count them as its own work and spin until the software's thread woke by its timeout
    /// (10 ms later), taking a core from the hosts around it.
    @Test func theEngineSleepsWhileOnlyTheSoftwareHasWork() throws {
        let (client, inside) = try SocketPairLink.makePair()
        let (server, outside) = try SocketPairLink.makePair()
        defer {
            close(client)
            close(server)
        }
        var configuration = Engine<SocketPairLink>.Configuration()
        configuration.bufferSize = SocketPairLink.maxFrameSize + Engine<SocketPairLink>.headroom
        configuration.announcesTranslations = true
        let clock = MonotonicClock()
        let descriptors = [inside, outside], addresses = [GatewayWorld.insideMAC, GatewayWorld.outsideMAC]
        let engine = Engine(configuration: configuration, portCount: 2, clock: clock) { i in
            SocketPairLink(adopting: descriptors[i], address: addresses[i])
        }
        let policy = GatewayPolicy(
            ports: [.init(address: try IPv4CIDR(parsing: "10.1.0.1/24"), hardwareAddress: GatewayWorld.insideMAC),
                    .init(address: try IPv4CIDR(parsing: "10.2.0.1/24"), hardwareAddress: GatewayWorld.outsideMAC)],
            routes: RouteTable([.init(prefix: try IPv4CIDR(parsing: "10.1.0.0/24"), port: 0),
                                .init(prefix: try IPv4CIDR(parsing: "10.2.0.0/24"), port: 1)]),
            outsidePort: 1, clock: clock)
        policy.addNeighbor(port: 0, address: GatewayWorld.clientIP, hardwareAddress: Self.clientMAC)
        policy.addNeighbor(port: 1, address: GatewayWorld.serverIP, hardwareAddress: Self.serverMAC)
        let slowPath = SlowPath(exceptions: engine.exceptions, reinsertion: engine.reinsertion, processing: .partial,
                                policy: policy)
        nonisolated(unsafe) let loop = try EngineLoop(engine: engine, slowPath: slowPath, softwareThread: true)
        // Both threads sleep as soon as they are idle: the software's is asleep when each
        // flow comes, and the engine's thread runs the flow's step.
        loop.spinBeforeSleeping = .zero
        let stop = StopFlag(), finished = DispatchSemaphore(value: 0)
        Thread {
            loop.run(clock: clock, shouldStop: { stop.raised.load(ordering: .relaxed) })
            finished.signal()
        }.start()

        let flows = 8
        var arrived = 0
        for flow in 0..<flows {
            let frame = Self.datagram(sourcePort: 40000 + UInt16(flow))
            #expect(frame.withUnsafeBytes { send(client, $0.baseAddress, $0.count, 0) } == frame.count)
            // Each flow alone: the software's thread is asleep again when the next one comes.
            arrived += Self.receiveDatagrams(from: server, atMost: 1, seconds: 2)
            usleep(20_000)
        }
        stop.raised.store(true, ordering: .relaxed)
        finished.wait()

        #expect(arrived == flows, "every new flow reached the server")
        #expect(engine.counters.fastPath + engine.counters.reinsertedOut == UInt64(flows))
        #expect(loop.sleeps >= flows, "the engine's thread slept between the flows")
        // A sleep is given up when the software has just sent something. The engine's
        // thread used to give one up every round for up to 10 ms after each flow (the
        // software's sleep): 1,300 to 3,300 times in this test.
        #expect(loop.sleepsForgone <= 2 * flows, "slept \(loop.sleeps) times, gave up \(loop.sleepsForgone)")
    }

    static let clientMAC = MACAddress.local(0xc1), serverMAC = MACAddress.local(0x51)

    /// A UDP datagram from the client to the server, as the client sends it to the gateway.
    static func datagram(sourcePort: UInt16) -> [UInt8] {
        var frame = [UInt8](repeating: 0, count: 14 + 20 + 8 + 16)
        frame.withUnsafeMutableBytes { raw in
            EthernetRepr(destination: GatewayWorld.insideMAC, source: clientMAC, etherType: .ipv4).emit(into: raw)
            IPv4Repr(source: GatewayWorld.clientIP, destination: GatewayWorld.serverIP, protocol: .udp,
                     payloadLength: 24).emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]),
                                             checksums: .verify)
            UDPRepr(sourcePort: sourcePort, destinationPort: 9, payloadLength: 16)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[34...]), source: GatewayWorld.clientIP,
                      destination: GatewayWorld.serverIP, checksums: .verify)
        }
        return frame
    }

    /// Reads frames from `descriptor` until `atMost` UDP datagrams from the NAT's address to
    /// the server have come, or `seconds` pass; returns how many came.
    static func receiveDatagrams(from descriptor: Int32, atMost wanted: Int, seconds: Int) -> Int {
        var received = 0
        var buffer = [UInt8](repeating: 0, count: 2048)
        var waiting = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        while received < wanted, poll(&waiting, 1, Int32(seconds * 1000)) > 0 {
            let n = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            guard n > 0 else { continue }
            buffer.withUnsafeBytes { raw in
                guard let e = try? EthernetFrame(checking: UnsafeRawBufferPointer(rebasing: raw[..<n])),
                      e.etherType == .ipv4, let ip = try? IPv4Packet(checking: e.payload),
                      ip.protocol == .udp, ip.source == GatewayWorld.outsideIP,
                      ip.destination == GatewayWorld.serverIP else { return }
                received += 1
            }
        }
        return received
    }
}
#endif
