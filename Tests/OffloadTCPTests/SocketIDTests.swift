import Testing
import OffloadCore
@testable import OffloadTCP

/// Socket ids name offloaded connections to the engine in 32 bits: after 2^32 sockets they
/// wrap, skipping the ids still open. They went on to 2^32 and beyond, where the engine's
/// truncated name of a new connection could be that of a connection still open (a server
/// that accepts 20,000 connections a second gets there in under three days).
struct SocketIDTests {
    @Test func idsWrapWithin32BitsAndSkipThoseInUse() throws {
        let stack = TCPStack(address: IPv4Address(10, 0, 0, 1))
        let peer = IPv4Address(10, 0, 0, 2)
        let first = try stack.connect(to: peer, port: 7, now: .zero)
        stack.nextSocket = Int(UInt32.max)
        let last = try stack.connect(to: peer, port: 7, now: .zero)
        let wrapped = try stack.connect(to: peer, port: 7, now: .zero)
        #expect([first, last, wrapped].map(\.rawValue) == [1, Int(UInt32.max), 2], "1 is still open")
    }
}
