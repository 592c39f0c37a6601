import Testing
import OffloadTCP
import OffloadCore

@Suite struct ControlBlockSizeTests {
    /// The control block is what the engine will hold per offloaded connection (T2); the
    /// target for the engine's state is 512 bytes, message contexts aside.
    @Test func theControlBlockIsSmall() {
        let size = MemoryLayout<TCPControlBlock>.size
        print("TCPControlBlock: \(size) bytes (constant \(MemoryLayout<TCPConstantState>.size), cached \(MemoryLayout<TCPCachedState>.size), delegated \(MemoryLayout<TCPDelegatedState>.size))")
        #expect(size <= 512)
    }

    /// Fields kept narrower than their `Int` accessors hold every value TCP gives them.
    @Test func narrowFieldsHoldTheirRange() throws {
        let id = TCPConnectionID(local: IPv4Address(10, 0, 0, 1), localPort: 1, remote: IPv4Address(10, 0, 0, 2),
                                 remotePort: 2)
        let connection = TCPConnection(connecting: id, initialSendSequence: SequenceNumber(0),
                                       configuration: TCPConfiguration(), now: .zero)
        var block = connection.block
        block.constant.localMSS = 65_535
        block.constant.remoteMSS = 88
        block.delegated.sendWindow = 65_535 << 14 // the largest scaled window (RFC 7323)
        block.delegated.maxSendWindow = 1 << 30
        block.delegated.duplicateACKs = 3
        block.delegated.consecutiveTimeouts = 15
        block.delegated.persistBackoff = 7
        #expect(block.constant.localMSS == 65_535 && block.constant.remoteMSS == 88)
        #expect(block.delegated.sendWindow == 65_535 << 14 && block.delegated.maxSendWindow == 1 << 30)
        #expect(block.delegated.duplicateACKs == 3 && block.delegated.consecutiveTimeouts == 15
                && block.delegated.persistBackoff == 7)
        // Past their range they stay at the top, never wrap to small values.
        block.delegated.duplicateACKs = 100_000
        #expect(block.delegated.duplicateACKs == 65_535)
    }
}
