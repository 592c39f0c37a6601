import Testing
import OffloadCore
import OffloadEngine
import OffloadLink
import OffloadWire

/// Ports that fail: a receive that fails after it has handed on part of a burst, and a port
/// that cannot be opened after others were.
@Suite struct FailingPortTests {
    /// Counts the ports that were let go.
    final class Ends {
        var count = 0
    }

    /// Hands on `frames` copies of a UDP frame per receive, then fails, as a TAP's `readv`
    /// may partway through a burst (the device deleted, say).
    struct FailingLink: ~Copyable, Link {
        let capabilities = LinkCapabilities(maxFrameSize: 1518)
        let frames: Int
        let ends: Ends

        deinit { ends.count += 1 }

        mutating func receive(
            into pool: BufferPool, max: Int, _ body: (consuming PacketBuffer) -> Void
        ) throws(LinkError) -> Int {
            for _ in 0..<Swift.min(max, frames) {
                guard var buffer = pool.take() else { break }
                let frame = FailingPortTests.datagram
                frame.withUnsafeBytes { try! buffer.append(contentsOf: $0) }
                body(buffer)
            }
            throw .system(operation: "readv", errno: 77, detail: "the device is gone")
        }

        mutating func transmit(
            header: UnsafeRawBufferPointer, payloads: PayloadSlices, metadata: OffloadMetadata
        ) throws(LinkError) {}
    }

    static let datagram: [UInt8] = {
        var frame = [UInt8](repeating: 0, count: 14 + 20 + 8 + 6)
        frame.withUnsafeMutableBytes { raw in
            EthernetRepr(destination: .local(2), source: .local(1), etherType: .ipv4).emit(into: raw)
            IPv4Repr(source: IPv4Address(10, 0, 0, 1), destination: IPv4Address(10, 0, 0, 2), protocol: .udp,
                     payloadLength: 14).emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]), checksums: .verify)
            UDPRepr(sourcePort: 1, destinationPort: 2, payloadLength: 6)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[34...]), source: IPv4Address(10, 0, 0, 1),
                      destination: IPv4Address(10, 0, 0, 2), checksums: .verify)
        }
        return frame
    }()

    /// The frames handed on before the error are the engine's burst: received and handled,
    /// and their buffers come back. The error used to throw them away with it, and their
    /// buffers never returned to the pool.
    @Test func framesBeforeAReceiveErrorAreHandled() throws {
        let ends = Ends()
        let engine = Engine(configuration: .init(), portCount: 1, clock: VirtualClock()) { _ in
            FailingLink(frames: 2, ends: ends)
        }
        engine.poll(now: Instant.zero)
        #expect(engine.counters.received == 2 && engine.counters.receiveErrors == 0)
        // Both went to the software (no entry): taken from the queue, their buffers come back
        // (through the pool's side list, as from the software's thread).
        while engine.exceptions.pop() != nil {}
        engine.pool.reclaim()
        #expect(engine.buffered == 0)
    }

    /// A port that cannot be made after another was: the one made closes again.
    @Test func aPortThatCannotBeMadeClosesThoseMadeBefore() {
        let ends = Ends()
        #expect(throws: LinkError.closed) {
            _ = try Engine(configuration: .init(), portCount: 3, clock: VirtualClock()) { i throws(LinkError) in
                guard i < 2 else { throw .closed }
                return FailingLink(frames: 0, ends: ends)
            }
        }
        #expect(ends.count == 2)
    }
}
