import Testing
import OffloadCore
import OffloadTCP

/// `close` shuts only the sending side: the socket stays readable until the application has
/// read what arrived. A connection that ends (LAST-ACK acknowledged, TIME-WAIT over) with
/// bytes unread keeps its socket until they are read, or they would be lost while `read`
/// said 0, as at the end of the stream.
struct UnreadDataAtReleaseTests {
    /// The peer sends and closes; ours closes without reading (CLOSE-WAIT, LAST-ACK), the
    /// peer acknowledges our FIN, and every completion is taken: the bytes are still there.
    @Test func aPassiveCloseKeepsTheUnreadBytes() throws {
        let world = TCPWorld(seed: 21)
        try world.b.listen(port: 80)
        let client = try world.a.connect(to: TCPWorld.addressB, port: 80, now: world.now)
        let data = pattern(5_000, seed: 3)
        _ = world.a.send(TxBuffer(copying: data), on: client)
        world.a.close(client)
        var server: TCPSocket?
        let arrived = world.run(for: .seconds(5)) {
            if server == nil { server = world.b.accept(port: 80) }
            guard let s = server, let status = world.b.status(s) else { return false }
            return status.readableBytes == data.count && status.state == .closeWait
        }
        let s = try #require(server)
        #expect(arrived)
        world.b.close(s)
        let ended = world.run(for: .seconds(5)) {
            world.b.takeCompletions(of: s) { _ in }
            return world.b.connectionCount == 0
        }
        #expect(ended, "the connection ended on our side")
        world.b.takeCompletions(of: s) { _ in }
        #expect(world.b.status(s) != nil, "the socket stays while bytes wait to be read")
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { world.b.read(s, into: $0) }
            guard n > 0 else { break }
            received += chunk[0..<n]
        }
        let same = received == data
        #expect(same, "\(received.count) of \(data.count) bytes")
        #expect(world.b.status(s) == nil, "released once all is read")
        #expect(world.b.socketCount == 0)
    }

    /// Ours closes first with bytes from the peer unread; TIME-WAIT runs out: the bytes are
    /// still there, and the socket goes once they are read.
    @Test func anActiveCloseKeepsTheUnreadBytesPastTimeWait() throws {
        let world = TCPWorld(seed: 22) { $0.tcp.maximumSegmentLifetime = .seconds(1) }
        try world.b.listen(port: 80)
        let client = try world.a.connect(to: TCPWorld.addressB, port: 80, now: world.now)
        var server: TCPSocket?
        world.run(for: .seconds(5)) {
            if server == nil { server = world.b.accept(port: 80) }
            return server != nil
        }
        let s = try #require(server)
        let data = pattern(3_000, seed: 4)
        _ = world.b.send(TxBuffer(copying: data), on: s)
        world.run(for: .seconds(5)) { world.a.status(client)?.readableBytes == data.count }
        world.a.close(client)
        world.run(for: .seconds(2)) {
            world.b.takeCompletions(of: s) { _ in }
            if world.b.status(s)?.isAtEndOfInput == true { world.b.close(s) }
            return false
        }
        let ended = world.run(for: .seconds(10)) {
            world.a.takeCompletions(of: client) { _ in }
            return world.a.connectionCount == 0
        }
        #expect(ended, "TIME-WAIT ran out")
        #expect(world.a.status(client) != nil, "the socket stays while bytes wait to be read")
        var chunk = [UInt8](repeating: 0, count: 4096)
        let n = chunk.withUnsafeMutableBytes { world.a.read(client, into: $0) }
        let same = Array(chunk[0..<n]) == data
        #expect(same, "\(n) of \(data.count) bytes")
        #expect(world.a.status(client) == nil && world.a.socketCount == 0)
    }
}
