/// An IPv4 address, held in host order (`10.0.0.1` is `0x0a00_0001`).
public struct IPv4Address: Hashable, Sendable, Comparable, CustomStringConvertible, LosslessStringConvertible {
    public let rawValue: UInt32

    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    @inlinable
    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        rawValue = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    public static let any = IPv4Address(rawValue: 0)
    public static let broadcast = IPv4Address(rawValue: 0xffff_ffff)

    /// Reads four big-endian bytes at `offset`.
    @inlinable
    public init(loadingFrom p: UnsafeRawPointer, offset: Int = 0) {
        rawValue = UInt32(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    /// Writes the four bytes big-endian at `offset`.
    @inlinable
    public func store(to p: UnsafeMutableRawPointer, offset: Int = 0) {
        p.storeBytes(of: rawValue.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    public var isMulticast: Bool { rawValue >> 28 == 0xe }
    public var isLoopback: Bool { rawValue >> 24 == 127 }

    /// Parses dotted-quad text: four decimal numbers 0 to 255, no leading zeros (which some
    /// parsers read as octal), nothing else.
    public init(parsing text: String) throws(AddressError) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { throw .invalidIPv4(text, reason: "expected four numbers separated by '.'") }
        var v: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }) else {
                throw .invalidIPv4(text, reason: "'\(part)' is not a number from 0 to 255")
            }
            guard part.count == 1 || part.first != "0" else {
                throw .invalidIPv4(text, reason: "'\(part)' has a leading zero")
            }
            guard let n = UInt32(part), n <= 255 else {
                throw .invalidIPv4(text, reason: "'\(part)' is greater than 255")
            }
            v = v << 8 | n
        }
        rawValue = v
    }

    public init?(_ description: String) { try? self.init(parsing: description) }

    public var description: String {
        "\(rawValue >> 24).\(rawValue >> 16 & 0xff).\(rawValue >> 8 & 0xff).\(rawValue & 0xff)"
    }

    public static func < (a: IPv4Address, b: IPv4Address) -> Bool { a.rawValue < b.rawValue }
}

/// An address with its prefix length, as in `10.0.0.1/24`.
public struct IPv4CIDR: Hashable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    public let address: IPv4Address
    public let prefixLength: Int

    public init(address: IPv4Address, prefixLength: Int) throws(AddressError) {
        guard (0...32).contains(prefixLength) else {
            throw .invalidCIDR("\(address)/\(prefixLength)", reason: "prefix length must be 0 to 32")
        }
        self.address = address
        self.prefixLength = prefixLength
    }

    public init(parsing text: String) throws(AddressError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2 else { throw .invalidCIDR(text, reason: "expected ADDRESS/PREFIX, like 10.0.0.1/24") }
        let address: IPv4Address
        do { address = try IPv4Address(parsing: String(parts[0])) } catch {
            throw .invalidCIDR(text, reason: "\(error)")
        }
        guard let length = Int(parts[1]), (0...32).contains(length), parts[1].first != "+" else {
            throw .invalidCIDR(text, reason: "prefix '\(parts[1])' is not a number from 0 to 32")
        }
        try self.init(address: address, prefixLength: length)
    }

    public init?(_ description: String) { try? self.init(parsing: description) }

    public var netmask: IPv4Address {
        IPv4Address(rawValue: prefixLength == 0 ? 0 : ~UInt32(0) << (32 - prefixLength))
    }
    public var network: IPv4Address { IPv4Address(rawValue: address.rawValue & netmask.rawValue) }
    public var directedBroadcast: IPv4Address { IPv4Address(rawValue: address.rawValue | ~netmask.rawValue) }

    /// Whether `other` is inside this prefix.
    public func contains(_ other: IPv4Address) -> Bool {
        other.rawValue & netmask.rawValue == network.rawValue
    }

    public var description: String { "\(address)/\(prefixLength)" }
}

/// Text that is not an address.
public enum AddressError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidMAC(String, reason: String)
    case invalidIPv4(String, reason: String)
    case invalidCIDR(String, reason: String)

    public var description: String {
        switch self {
        case .invalidMAC(let t, let r): return "'\(t)' is not a MAC address: \(r)"
        case .invalidIPv4(let t, let r): return "'\(t)' is not an IPv4 address: \(r)"
        case .invalidCIDR(let t, let r): return "'\(t)' is not an IPv4 address with prefix: \(r)"
        }
    }
}
