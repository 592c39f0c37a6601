import OffloadCore
import OffloadEngine
import OffloadLink
import OffloadTCP

/// The software of a host behind the engine: every frame for the host reaches it through
/// the exception queue (a TCP or UDP flow to the host's address gets a `deliver` entry, so
/// its packets come as local deliveries; ARP comes as frames that are no flow), the host
/// (ARP, ICMP, UDP, TCP) takes it, and what the host sends leaves through the engine's
/// transmit path as frames the software originates. A connection's entry is where the
/// offload of its data transfer will go.
public final class HostPolicy: SlowPathPolicy {
    public let host: IPv4Host
    private let clock: any Clock
    /// The port the host's link is on the engine.
    private let port: UInt16
    /// Connection ids of `deliver` entries, given out in order.
    private var nextConnection: UInt32 = 1

    public init(host: IPv4Host, clock: any Clock, port: UInt16 = 0) {
        self.host = host
        self.clock = clock
        self.port = port
    }

    public func decide(_ key: FlowKey, send: Originate) -> FlowDecision {
        guard key.destination == host.address else { return .install(.drop) }
        defer { nextConnection &+= 1 }
        return .install(.deliver(connection: nextConnection))
    }

    public func answer(_ frame: UnsafeMutableRawBufferPointer, ingressPort: UInt16, send: Originate) -> LocalAnswer {
        host.receive(frame: UnsafeRawBufferPointer(frame), offload: .none, now: clock.now) { header, payload in
            Self.originate(header, payload, port: port, send: send)
        }
        return .consumed
    }

    /// Frames the host may send per poll: about as many as the engine reads per burst, so
    /// that a sender does not write far faster than it reads its ACKs (a TAP's queue towards
    /// us is short, and the ACKs it drops cost timeouts).
    public var framesPerPoll = 64

    public func poll(send: Originate, room: Int) {
        host.poll(now: clock.now, budget: min(room, framesPerPoll)) { header, payload in
            Self.originate(header, payload, port: port, send: send)
        }
    }

    /// A frame of the host's, headers and payload slices copied into a buffer of the
    /// software's own (a frame that finds none is counted by the slow path and lost, as on a
    /// full device). The TCP offload will send segments from the engine without this copy.
    private static func originate(_ header: UnsafeRawBufferPointer, _ payload: PayloadSlices, port: UInt16,
                                  send: Originate) {
        send(port) { buffer in
            let length = header.count + payload.byteCount
            guard length <= buffer.count, let base = buffer.baseAddress else { return 0 }
            buffer.copyMemory(from: header)
            var at = header.count
            for slice in payload.slices where slice.count > 0 {
                (base + at).copyMemory(from: slice.baseAddress!, byteCount: slice.count)
                at += slice.count
            }
            return length
        }
    }
}
