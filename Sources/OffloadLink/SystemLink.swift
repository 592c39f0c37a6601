#if os(Linux)
import OffloadCore

/// A link to a real device, of either kind, so that one engine can have ports of both (a
/// TAP toward one namespace, a packet socket on a veth toward another).
public enum SystemLink: ~Copyable, Link {
    case tap(TapLink)
    case packetSocket(PacketSocketLink)

    public var capabilities: LinkCapabilities {
        switch self {
        case .tap(let link): return link.capabilities
        case .packetSocket(let link): return link.capabilities
        }
    }

    /// Frames and bytes in and out, drops by reason.
    public var counters: SystemLinkCounters {
        switch self {
        case .tap(let link): return link.counters
        case .packetSocket(let link): return link.counters
        }
    }

    // Each operation moves the link out of the enum and back (a few words, no copy of the
    // device), as a noncopyable payload cannot be mutated in place.
    public mutating func receive(
        into pool: BufferPool, max: Int, _ body: (consuming PacketBuffer) -> Void
    ) throws(LinkError) -> Int {
        switch consume self {
        case .tap(var link):
            do {
                let n = try link.receive(into: pool, max: max, body)
                self = .tap(link)
                return n
            } catch {
                self = .tap(link)
                throw error
            }
        case .packetSocket(var link):
            do {
                let n = try link.receive(into: pool, max: max, body)
                self = .packetSocket(link)
                return n
            } catch {
                self = .packetSocket(link)
                throw error
            }
        }
    }

    public mutating func transmit(
        header: UnsafeRawBufferPointer, payloads: PayloadSlices, metadata: OffloadMetadata
    ) throws(LinkError) {
        switch consume self {
        case .tap(var link):
            do {
                try link.transmit(header: header, payloads: payloads, metadata: metadata)
                self = .tap(link)
            } catch {
                self = .tap(link)
                throw error
            }
        case .packetSocket(var link):
            do {
                try link.transmit(header: header, payloads: payloads, metadata: metadata)
                self = .packetSocket(link)
            } catch {
                self = .packetSocket(link)
                throw error
            }
        }
    }

    public mutating func beginBatch() { onPacketSocket { $0.beginBatch() } }

    public mutating func endBatch() { onPacketSocket { $0.endBatch() } }

    /// A packet socket's interface's MTU now; a TAP's is the one it was opened with (it may
    /// live in another namespace, where its name cannot be looked up).
    public mutating func currentMTU() -> Int? {
        var mtu: Int?
        onPacketSocket { mtu = $0.currentMTU() }
        return mtu
    }

    /// Reads the kernel's drop count where the link has one (a packet socket's).
    public mutating func updateKernelStatistics() { onPacketSocket { try? $0.updateKernelStatistics() } }

    /// Runs `body` on the link if it is a packet socket (a TAP has nothing to do there).
    private mutating func onPacketSocket(_ body: (inout PacketSocketLink) -> Void) {
        switch consume self {
        case .tap(let link):
            self = .tap(link)
        case .packetSocket(var link):
            body(&link)
            self = .packetSocket(link)
        }
    }
}
#endif
