import OffloadCore

/// Why bytes are not a valid instance of a wire format. Every malformation is one of these;
/// no parser traps on bad input.
public enum WireError: Error, Equatable, Hashable, Sendable, CustomStringConvertible {
    /// Fewer bytes than the format needs.
    case truncated(format: WireFormat, needed: Int, available: Int)
    /// A length field disagrees with the bytes present or with another field.
    case badLength(format: WireFormat, field: String, value: Int)
    /// A header length field below the minimum or beyond the packet.
    case badHeaderLength(format: WireFormat, value: Int)
    /// A field holds a value the format does not allow (version, hardware type, ...).
    case badField(format: WireFormat, field: String, value: Int)
    /// An option's length is impossible or runs past the options area.
    case badOption(format: WireFormat, kind: UInt8, length: Int)
    /// The checksum does not verify.
    case badChecksum(format: WireFormat)
    /// Valid but not handled here (IPv4 fragments, IP options where none are allowed, ...).
    case unsupported(format: WireFormat, what: String)

    public var description: String {
        switch self {
        case .truncated(let f, let n, let a): return "\(f): truncated, \(n) bytes needed, \(a) present"
        case .badLength(let f, let field, let v): return "\(f): \(field) \(v) disagrees with the bytes present"
        case .badHeaderLength(let f, let v): return "\(f): bad header length \(v)"
        case .badField(let f, let field, let v): return "\(f): bad \(field) \(v)"
        case .badOption(let f, let k, let l): return "\(f): bad option kind \(k) length \(l)"
        case .badChecksum(let f): return "\(f): bad checksum"
        case .unsupported(let f, let what): return "\(f): unsupported \(what)"
        }
    }
}

/// The formats this module reads and writes, for errors and counters.
public enum WireFormat: String, Sendable, Hashable, CaseIterable {
    case ethernet, arp, ipv4, icmpv4, udp, tcp, tcpOption, rtp, virtioNet, pcap
}
