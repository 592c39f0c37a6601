import Testing
import OffloadCore
import OffloadTCP

@Suite struct SYNCookiesTests {
    let cookies = SYNCookies(seed: 7)
    let server = IPv4Address(192, 0, 2, 1), client = IPv4Address(198, 51, 100, 9)
    let clientISN = SequenceNumber(0xFFFF_FFFF) // the ACK's sequence number wraps to 0
    /// The start of a 64-second step.
    let t0 = Instant(nanoseconds: 64_000_000_000 * 1_000)

    func mint(mss: UInt16 = 1460, at t: Instant? = nil) -> (isn: SequenceNumber, mss: UInt16) {
        cookies.cookie(local: server, localPort: 443, remote: client, remotePort: 50_000, clientISN: clientISN,
                       mss: mss, now: t ?? t0)
    }

    /// Checks the ACK that answers a SYN-ACK carrying `isn`.
    func check(_ isn: SequenceNumber, at t: Instant? = nil, using c: SYNCookies? = nil,
               local: IPv4Address? = nil, localPort: UInt16 = 443, remote: IPv4Address? = nil,
               remotePort: UInt16 = 50_000, sequence: SequenceNumber? = nil) -> UInt16? {
        (c ?? cookies).check(local: local ?? server, localPort: localPort, remote: remote ?? client,
                             remotePort: remotePort, sequence: sequence ?? clientISN + 1, acknowledgment: isn + 1,
                             now: t ?? t0)
    }

    @Test(arguments: SYNCookies.mssTable)
    func theMSSComesBack(mss: UInt16) {
        let minted = mint(mss: mss)
        #expect(minted.mss == mss)
        #expect(check(minted.isn) == mss)
    }

    @Test func theMSSIsRoundedDownToTheTable() {
        #expect(mint(mss: 1459).mss == 1440)
        #expect(mint(mss: 1441).mss == 1440)
        #expect(mint(mss: 1299).mss == 536)
        #expect(mint(mss: 9000).mss == 1460)
        #expect(mint(mss: 100).mss == 536, "below the table: its least, as Linux")
        let rounded = mint(mss: 1400)
        #expect(rounded.mss == 1300 && check(rounded.isn) == 1300)
    }

    @Test func aCookieLivesThroughTheNextStepOnly() {
        let early = mint()
        #expect(check(early.isn, at: t0 + .seconds(63)) == 1460)
        #expect(check(early.isn, at: t0 + .seconds(127)) == 1460, "the previous step is still accepted")
        #expect(check(early.isn, at: t0 + .seconds(128)) == nil, "two steps old")
        #expect(check(early.isn, at: t0 + .seconds(64 * 4)) == nil, "four steps: the same counter bits, another MAC")
        #expect(check(early.isn, at: t0 + .seconds(64 * 1000)) == nil)
        let late = mint(at: t0 + .seconds(63))
        #expect(check(late.isn, at: t0 + .seconds(65)) == 1460, "across a step boundary")
        #expect(check(late.isn, at: t0 - .seconds(1)) == nil, "minted after now: the clock went back")
    }

    @Test func anyFlippedBitInTheAcknowledgmentIsRejected() {
        let isn = mint().isn
        for bit in 0..<32 {
            #expect(check(SequenceNumber(rawValue: isn.rawValue ^ 1 << UInt32(bit))) == nil, "bit \(bit)")
        }
        #expect(check(isn + 1) == nil && check(isn - 1) == nil)
    }

    @Test func theConnectionMustBeTheOneTheCookieWasFor() {
        let isn = mint().isn
        #expect(check(isn) == 1460)
        #expect(check(isn, local: IPv4Address(192, 0, 2, 2)) == nil)
        #expect(check(isn, localPort: 444) == nil)
        #expect(check(isn, remote: IPv4Address(198, 51, 100, 10)) == nil)
        #expect(check(isn, remotePort: 50_001) == nil)
        #expect(check(isn, sequence: clientISN + 2) == nil, "another client ISN")
        #expect(check(isn, using: SYNCookies(seed: 8)) == nil, "another secret")
        #expect(check(isn, using: SYNCookies(secret: (1, 2))) == nil)
    }

    @Test func cookiesDoNotShowTheirFields() {
        // The same MSS and step for many client ISNs: the top bits vary like the rest.
        var topBits = Set<UInt32>()
        for n in UInt32(0)..<64 {
            let isn = cookies.cookie(local: server, localPort: 443, remote: client, remotePort: 50_000,
                                     clientISN: SequenceNumber(n), mss: 1460, now: t0).isn
            topBits.insert(isn.rawValue >> 28)
        }
        #expect(topBits.count > 8)
    }
}
