import OffloadCore
import OffloadTCP

/// What the host tells the engine about the TCP connections it offloads (T1, T3), through
/// the re-insertion queue, in order with everything else the host sends.
public enum TCPOffloadCommand {
    /// Take over an established connection (T1): from now on the engine runs its data
    /// transfer. Answered by `TCPOffloadEvent.offloaded` or, when the engine has no room,
    /// by `uploaded(.noResources)`.
    case offload(TCPOffloadRequest)
    /// A message the application posted (T3): its bytes stay in the application's memory;
    /// the engine keeps a context (id, address, length, first sequence number) and gathers
    /// segments from it. Ids follow on from the connection's last one.
    case post(host: UInt32, bytes: UnsafeRawBufferPointer)
    /// The application read from the receive buffer: the window may have opened.
    case windowOpened(host: UInt32)
    /// Hand the connection back now (the host asks, or the application aborts).
    case upload(host: UInt32)
    /// The connection's next hop answers at a new MAC address now (ARP said so, as after a
    /// failover): its segments go there. Cached state (T2): the host's to change.
    case nextHop(host: UInt32, MACAddress)
    /// The application closed: once the peer has acknowledged every queued byte, the
    /// connection comes back for its FIN and TIME_WAIT, which are the host's (T9).
    case close(host: UInt32)
    /// The path to the peer takes packets of at most `mtu` bytes: an ICMP "fragmentation
    /// needed" the host took in said so, quoting `quotedSequence` (RFC 1191), or the host's
    /// own link shrank (nil).
    case pathMTU(host: UInt32, mtu: Int, quotedSequence: UInt32?)
}

/// A connection on its way to the engine: the state machine with its whole control block
/// and queues (ownership moves with it: the host no longer touches it), the flow its
/// segments arrive on, and how the engine's segments are to be addressed.
public final class TCPOffloadRequest: @unchecked Sendable {
    // Unchecked: the connection is handed over through the re-insertion ring (whose release
    // and acquire publish it), not shared; afterwards the host reads only its receive
    // buffer, a single-producer single-consumer ring that may cross threads (see `TCPStack`).
    /// The host's name for the connection: events name it.
    public let host: UInt32
    public let key: FlowKey
    public let connection: TCPConnection
    public let headers: TCPFrameHeaders
    /// The port its segments leave by.
    public let port: UInt16

    public init(host: UInt32, key: FlowKey, connection: TCPConnection, headers: TCPFrameHeaders, port: UInt16) {
        self.host = host
        self.key = key
        self.connection = connection
        self.headers = headers
        self.port = port
    }
}

/// Why the engine handed a connection back.
public enum TCPUploadReason: String, Sendable, CaseIterable, CustomStringConvertible {
    /// The host asked (`TCPOffloadCommand.upload`).
    case requested
    /// The application closed and every byte was acknowledged (`TCPOffloadCommand.close`).
    case closing
    /// The engine had no free slot, or no room in its connection table, when offered the connection.
    case noResources = "no-resources"
    /// A segment the engine leaves to the host: a RST.
    case reset
    /// The connection left ESTABLISHED and CLOSE-WAIT in the engine (it timed out, say).
    case stateChanged = "state-changed"

    public var description: String { rawValue }
}

/// What the engine tells the host about offloaded connections (engine to host).
public enum TCPOffloadEvent {
    /// The engine runs the connection now.
    case offloaded(host: UInt32)
    /// Messages whose last byte the peer's cumulative ACK covered (T7), coalesced.
    case completed(host: UInt32, CompletionRange)
    /// The connection is the host's again, with everything it holds. Segments that reach
    /// the host after this event are the connection's to process in software.
    case uploaded(host: UInt32, TCPConnection, TCPUploadReason)
}
