import Testing
import OffloadCore
@testable import OffloadTCP

/// `takeCompletions(max:)`: the engine reports a connection's completions as far as its
/// events ring has room, so they must come out oldest first, the rest kept for later.
struct TakeCompletionsTests {
    @Test func takesTheOldestAndKeepsTheRest() throws {
        let peer = ScriptedPeer(configuration: TCPStack.Configuration())
        let (socket, _) = try #require(peer.handshake())
        let connection = try #require(peer.stack.connection(socket))
        let ranges = [CompletionRange(lower: 0, upper: 3, status: .acknowledged),
                      CompletionRange(lower: 4, upper: 4, status: .failed(.timedOut)),
                      CompletionRange(lower: 5, upper: 9, status: .acknowledged)]
        connection.completions = ranges
        #expect(connection.takeCompletions(max: 0).isEmpty)
        #expect(connection.takeCompletions(max: 2) == Array(ranges[0..<2]))
        #expect(connection.pendingCompletionRanges == 1)
        #expect(connection.takeCompletions(max: 5) == [ranges[2]])
        #expect(connection.pendingCompletionRanges == 0)
    }
}
