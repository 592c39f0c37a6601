import Testing
import OffloadTCP

@Suite struct ControlBlockSizeTests {
    /// The control block is what the engine will hold per offloaded connection (T2); the
    /// target for the engine's state is 512 bytes, message contexts aside.
    @Test func theControlBlockIsSmall() {
        let size = MemoryLayout<TCPControlBlock>.size
        print("TCPControlBlock: \(size) bytes (constant \(MemoryLayout<TCPConstantState>.size), cached \(MemoryLayout<TCPCachedState>.size), delegated \(MemoryLayout<TCPDelegatedState>.size))")
        #expect(size <= 512)
    }
}
