import OffloadCore
import OffloadLink

/// Runs an `IPv4Host` on a link: receive a burst, handle it, run the timers, and when there
/// is nothing to do, block on the link's descriptor (or sleep briefly, for a link that has
/// none) until the next timer is due.
public struct HostLoop {
    public let host: IPv4Host
    public let pool: BufferPool
    public let clock: any Clock
    /// Frames the link refused to send (full device), each also counted as a host drop.
    public private(set) var transmitErrors: [LinkError] = []

    public init(host: IPv4Host, pool: BufferPool, clock: any Clock) {
        self.host = host
        self.pool = pool
        self.clock = clock
    }

    /// Runs until `shouldStop` returns true (checked at least every 100 ms).
    public mutating func run<L: Link & ~Copyable>(on link: inout L, poller: Poller?,
                                                  shouldStop: () -> Bool) throws(LinkError) {
        let descriptor = link.capabilities.readinessDescriptor
        if let descriptor { try poller?.add(descriptor) }
        defer { if let descriptor { try? poller?.remove(descriptor) } }
        while !shouldStop() {
            let received = try runOnce(on: &link)
            if received == 0 {
                var timeout: Int64 = 100
                if let next = host.nextDeadline {
                    timeout = min(timeout, max(0, (next.nanoseconds - clock.now.nanoseconds + 999_999) / 1_000_000))
                }
                if let poller, descriptor != nil {
                    _ = try poller.wait(timeoutMilliseconds: Int32(timeout))
                }
            }
        }
    }

    /// One round: a burst of up to 32 frames, then the timers. Returns frames received.
    @discardableResult
    public mutating func runOnce<L: Link & ~Copyable>(on link: inout L) throws(LinkError) -> Int {
        let now = clock.now
        var failures: [LinkError] = []
        let received = try withUnsafeMutablePointer(to: &link) { (linkPointer) throws(LinkError) -> Int in
            let transmit: IPv4Host.Transmit = { header, payload in
                do throws(LinkError) {
                    try linkPointer.pointee.transmit(header: header, payloads: payload, metadata: .none)
                } catch {
                    failures.append(error)
                }
            }
            let host = self.host
            let n = try linkPointer.pointee.receive(into: pool, max: 32) { buffer in
                host.receive(buffer, now: now, transmit: transmit)
            }
            host.poll(now: now, transmit: transmit)
            return n
        }
        for failure in failures {
            host.countTransmitFailure()
            if transmitErrors.count < 16 { transmitErrors.append(failure) }
        }
        return received
    }
}
