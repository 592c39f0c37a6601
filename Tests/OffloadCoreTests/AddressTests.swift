import Testing
import OffloadCore

@Suite struct AddressTests {
    @Test func macRoundTrip() throws {
        let m = try MACAddress(parsing: "02:1A:b3:00:ff:09")
        #expect(m.description == "02:1a:b3:00:ff:09")
        #expect(try MACAddress(parsing: "02-1a-b3-00-ff-09") == m)
        #expect(m.bytes == [0x02, 0x1a, 0xb3, 0x00, 0xff, 0x09])
        #expect(!m.isMulticast && MACAddress.broadcast.isMulticast)
        var raw = [UInt8](repeating: 0, count: 8)
        raw.withUnsafeMutableBytes { m.store(to: $0.baseAddress!, offset: 1) }
        #expect(raw.withUnsafeBytes { MACAddress(loadingFrom: $0.baseAddress!, offset: 1) } == m)
    }

    @Test(arguments: ["", "02:1a:b3:00:ff", "02:1a:b3:00:ff:09:10", "02:1a:b3:00:ff:zz", "2:1a:b3:00:ff:09"])
    func macRejects(text: String) {
        #expect(throws: AddressError.self) { try MACAddress(parsing: text) }
    }

    @Test func ipv4RoundTrip() throws {
        let a = try IPv4Address(parsing: "10.0.200.1")
        #expect(a.rawValue == 0x0a00_c801)
        #expect(a.description == "10.0.200.1")
        #expect(IPv4Address(10, 0, 200, 1) == a)
        var raw = [UInt8](repeating: 0, count: 4)
        raw.withUnsafeMutableBytes { a.store(to: $0.baseAddress!) }
        #expect(raw == [10, 0, 200, 1])
    }

    @Test(arguments: ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1..2.3", "a.b.c.d", "1.2.3.-4", " 1.2.3.4"])
    func ipv4Rejects(text: String) {
        #expect(throws: AddressError.self) { try IPv4Address(parsing: text) }
    }

    @Test func errorsSayWhatIsWrong() {
        do { _ = try IPv4Address(parsing: "10.0.0.300"); Issue.record("accepted") } catch {
            #expect(error.description == "'10.0.0.300' is not an IPv4 address: '300' is greater than 255")
        }
    }

    @Test func cidr() throws {
        let c = try IPv4CIDR(parsing: "10.1.2.3/24")
        #expect(c.network.description == "10.1.2.0")
        #expect(c.netmask.description == "255.255.255.0")
        #expect(c.directedBroadcast.description == "10.1.2.255")
        #expect(c.contains(try IPv4Address(parsing: "10.1.2.200")))
        #expect(!c.contains(try IPv4Address(parsing: "10.1.3.1")))
        #expect(try IPv4CIDR(parsing: "0.0.0.0/0").contains(.broadcast))
        for bad in ["10.1.2.3", "10.1.2.3/33", "10.1.2.3/", "10.1.2/8", "10.1.2.3/+8"] {
            #expect(throws: AddressError.self) { try IPv4CIDR(parsing: bad) }
        }
    }
}
