import OffloadCore
import OffloadEngine
import OffloadLink
import OffloadWire

/// What the engine benchmarks share: an engine with a source wire on port 0 and a sink wire
/// on port 1, and 64-byte UDP frames addressed to the engine's inside MAC.
struct EngineBench {
    static let gatewayMAC = MACAddress.local(0xaa)
    static let destination = IPv4Address(10, 200, 0, 1)
    static let frameSize = 64

    let clock = MonotonicClock()
    let engine: Engine<MemoryLink>
    var source: MemoryLink
    var sink: MemoryLink

    /// `configure` may change the configuration after the benchmarks' defaults are set.
    init(tableCapacity: Int, configure: (inout Engine<MemoryLink>.Configuration) -> Void = { _ in }) {
        var config = Engine<MemoryLink>.Configuration()
        config.tableCapacity = tableCapacity
        config.bufferCount = 1024
        config.queueCapacity = 4096
        configure(&config)
        let (engine, wires) = Engine.onMemoryWires(configuration: config, portCount: 2, clock: clock,
                                                   maxFrameSize: { _ in 128 }, framesInFlight: 256)
        self.engine = engine
        source = wires[0]
        sink = wires[1]
    }

    /// Writes a `frameSize`-byte UDP frame from `source:sourcePort` to port 4000 into `frame`.
    static func emitUDP(into frame: UnsafeMutableRawBufferPointer, source: IPv4Address, sourcePort: UInt16) {
        EthernetRepr(destination: gatewayMAC, source: .local(1), etherType: .ipv4).emit(into: frame)
        IPv4Repr(source: source, destination: destination, protocol: .udp, payloadLength: frameSize - 34)
            .emit(into: UnsafeMutableRawBufferPointer(rebasing: frame[14...]), checksums: .verify)
        UDPRepr(sourcePort: sourcePort, destinationPort: 4000, payloadLength: frameSize - 42)
            .emit(into: UnsafeMutableRawBufferPointer(rebasing: frame[34...]), source: source, destination: destination,
                  checksums: .verify)
    }

    /// A forward action out of port 1 with source NAT.
    static func natForward(sourcePort: UInt16) -> FlowAction {
        .forward(.init(outputPort: 1, destinationMAC: .local(2), sourceMAC: gatewayMAC,
                       translatedSource: IPv4Address(192, 0, 2, 1), translatedSourcePort: sourcePort))
    }
}
