import Foundation
import OffloadCore
import OffloadWire
import Testing

// Addresses of the fixture captures (see Fixtures/README.md).
let hostA = IPv4Address(10, 99, 0, 1)
let hostB = IPv4Address(10, 99, 0, 2)
let macA = MACAddress(0xba, 0x19, 0xaa, 0x7d, 0xfb, 0x71)
let macB = MACAddress(0x86, 0x10, 0x06, 0x95, 0x19, 0x3d)

struct FixtureMissing: Error { let name: String }

/// The bytes of a fixture file.
func fixtureBytes(_ name: String) throws -> [UInt8] {
    let base = (name as NSString).deletingPathExtension
    let ext = (name as NSString).pathExtension
    guard let url = Bundle.module.url(forResource: base, withExtension: ext, subdirectory: "Fixtures") else {
        throw FixtureMissing(name: name)
    }
    return [UInt8](try Data(contentsOf: url))
}

/// The frames of a pcap fixture, read with `PcapReader`.
func fixtureFrames(_ name: String) throws -> [[UInt8]] {
    let file = try fixtureBytes(name)
    return try file.withUnsafeBytes { raw in
        var reader = try PcapReader(raw)
        var frames: [[UInt8]] = []
        while let record = try reader.next() { frames.append([UInt8](record.data)) }
        return frames
    }
}

/// A frame parsed through the whole stack of Reprs.
struct ParsedFrame: Equatable {
    var ethernet: EthernetRepr
    var arp: ARPRepr?
    var ipv4: IPv4Repr?
    var icmp: ICMPv4Repr?
    var udp: UDPRepr?
    var tcp: TCPRepr?
    var rtp: RTPRepr?
    /// Where the innermost payload (application data, echo data, quoted bytes, RTP
    /// extension data) starts: the bytes before it are what the Reprs emit.
    var payloadOffset: Int
}

/// UDP port whose payload the fixtures carry as RTP.
let rtpPort: UInt16 = 5004

func parseFrame(_ frame: UnsafeRawBufferPointer, checksums: ChecksumPolicy = .verify) throws(WireError) -> ParsedFrame {
    let eth = try EthernetFrame(checking: frame)
    var parsed = ParsedFrame(ethernet: EthernetRepr.parse(eth), payloadOffset: EthernetFrame.headerLength)
    switch eth.etherType {
    case .arp:
        parsed.arp = try ARPRepr.parse(ARPPacket(checking: eth.payload))
        parsed.payloadOffset += ARPPacket.length
    case .ipv4:
        let ip = try IPv4Packet(checking: eth.payload)
        let ipRepr = try IPv4Repr.parse(ip, checksums: checksums)
        parsed.ipv4 = ipRepr
        parsed.payloadOffset += ip.headerLength
        switch ip.protocol {
        case .icmp:
            let icmp = try ICMPv4Repr.parse(ICMPv4Packet(checking: ip.payload), checksums: checksums)
            parsed.icmp = icmp
            parsed.payloadOffset += icmp.headerLength
        case .udp:
            let udp = try UDPPacket(checking: ip.payload)
            parsed.udp = try UDPRepr.parse(udp, source: ipRepr.source, destination: ipRepr.destination, checksums: checksums)
            parsed.payloadOffset += UDPPacket.headerLength
            if udp.destinationPort == rtpPort, udp.payload.count >= RTPPacket.fixedHeaderLength, udp.payload[0] >> 6 == 2 {
                let rtp = try RTPPacket(checking: udp.payload)
                parsed.rtp = RTPRepr.parse(rtp)
                // The extension's data is payload-like: emit leaves it in place.
                parsed.payloadOffset += rtp.headerLength - rtp.extensionData.count
            }
        case .tcp:
            let tcp = try TCPPacket(checking: ip.payload)
            parsed.tcp = try TCPRepr.parse(tcp, source: ipRepr.source, destination: ipRepr.destination, checksums: checksums)
            parsed.payloadOffset += tcp.headerLength
        default:
            break
        }
    default:
        break
    }
    return parsed
}

func parseFrame(_ frame: [UInt8], checksums: ChecksumPolicy = .verify) throws -> ParsedFrame {
    try frame.withUnsafeBytes { raw throws(WireError) in try parseFrame(raw, checksums: checksums) }
}

/// Emits `parsed` over a copy of `original` whose header bytes are zeroed (only the
/// innermost payload and any trailing padding kept), innermost layer first.
func reemit(_ parsed: ParsedFrame, over original: [UInt8], checksums: ChecksumPolicy = .verify) -> [UInt8] {
    var out = original
    for i in 0..<parsed.payloadOffset { out[i] = 0 }
    out.withUnsafeMutableBytes { buf in
        let l3 = UnsafeMutableRawBufferPointer(rebasing: buf[EthernetFrame.headerLength...])
        if let arp = parsed.arp { arp.emit(into: l3) }
        if let ip = parsed.ipv4 {
            let l4 = UnsafeMutableRawBufferPointer(rebasing: l3[ip.headerLength..<ip.bufferLength])
            if let rtp = parsed.rtp { rtp.emit(into: UnsafeMutableRawBufferPointer(rebasing: l4[UDPPacket.headerLength...])) }
            if let udp = parsed.udp { udp.emit(into: l4, source: ip.source, destination: ip.destination, checksums: checksums) }
            if let tcp = parsed.tcp { tcp.emit(into: l4, source: ip.source, destination: ip.destination, checksums: checksums) }
            if let icmp = parsed.icmp { icmp.emit(into: l4, checksums: checksums) }
            ip.emit(into: l3, checksums: checksums)
        }
        parsed.ethernet.emit(into: buf)
    }
    return out
}

/// Bytes from a hex string (whitespace ignored).
func hex(_ s: String) -> [UInt8] {
    let digits = s.filter { !$0.isWhitespace }
    var out: [UInt8] = []
    var i = digits.startIndex
    while i < digits.endIndex {
        let j = digits.index(i, offsetBy: 2)
        out.append(UInt8(digits[i..<j], radix: 16)!)
        i = j
    }
    return out
}

/// Runs a throwing parse over a copy of `bytes` in a buffer of exactly their size.
func with<T>(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws(WireError) -> T) throws(WireError) -> T {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 8)
    defer { buffer.deallocate() }
    buffer.copyBytes(from: bytes)
    return try body(UnsafeRawBufferPointer(buffer))
}

/// Emits into a fresh buffer of `count` bytes (whose tail may be prefilled with `payload`).
func emitting(_ count: Int, payloadAt offset: Int = 0, payload: [UInt8] = [], _ body: (UnsafeMutableRawBufferPointer) -> Void) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    for (i, b) in payload.enumerated() { out[offset + i] = b }
    out.withUnsafeMutableBytes { body($0) }
    return out
}

func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
