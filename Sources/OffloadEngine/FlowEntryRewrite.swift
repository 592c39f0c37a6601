/// What `FlowEntry.applyRewrite(to:ipOffset:)` did.
public enum FlowRewriteOutcome: Sendable, Equatable {
    /// The frame now carries the new headers, ready to go out of `outputPort`.
    case rewritten
    /// TTL was 0 or 1: the frame is unchanged, and the software answers with ICMP time exceeded.
    case timeToLiveExceeded
    /// An IPv4 fragment: its L4 header is absent or partial, so the software handles it. Unchanged.
    case fragment
    /// Too short for its headers, not IPv4, or not a `forward` entry. Unchanged.
    case notApplicable
}

extension FlowEntry {
    /// Applies a `forward` action to an Ethernet frame holding IPv4 at `ipOffset`: new
    /// Ethernet addresses, TTL decremented, NAT addresses and ports, and the IPv4 header and
    /// TCP/UDP checksums updated incrementally (RFC 1624 eqn. 3) with the entry's precomputed
    /// deltas: one ones' complement addition per checksum, on the network-order field as
    /// loaded, no byte swap. A UDP checksum of 0 (none) stays 0; a UDP result of 0 is sent
    /// as 0xffff. The result equals a full recomputation for any packet whose checksums were
    /// correct (the deltas are never 0, so a result is never the negative zero 0xffff that a
    /// full computation cannot give).
    ///
    /// With `partialL4` (the frame's offload metadata says a device finishes its TCP/UDP
    /// checksum, as for frames from a virtio-net or packet-socket link, and TSO super-frames)
    /// the L4 field holds only the pseudo-header sum: it takes the change of the addresses
    /// alone, since the device will sum the rewritten ports itself.
    ///
    /// Nothing is written unless the whole rewrite can be done. The frame must match this
    /// entry's key (the engine looked it up by that key); the checks here are the ones that
    /// keep memory safe and the output well-formed, not a parser.
    ///
    /// Always inlined: called on a table slot, an outlined call would copy the whole entry.
    @inlinable @inline(__always)
    public func applyRewrite(to frame: UnsafeMutableRawBufferPointer, ipOffset: Int = 14,
                             partialL4: Bool = false) -> FlowRewriteOutcome {
        guard control & FlowEntry.kindMask == FlowActionKind.forward.rawValue,
              let base = frame.baseAddress, ipOffset >= 14, frame.count >= ipOffset &+ 20
        else { return .notApplicable }
        let ip = base + ipOffset
        let versionAndLength = ip.load(as: UInt8.self)
        let headerLength = Int(versionAndLength & 0x0f) &<< 2
        guard versionAndLength >> 4 == 4, headerLength >= 20 else { return .notApplicable }
        // More-fragments flag or a fragment offset.
        guard ip.loadUnaligned(fromByteOffset: 6, as: UInt16.self) & UInt16(0x3fff).bigEndian == 0 else {
            return .fragment
        }
        return applyRewrite(toUnfragmented: base, count: frame.count, ipOffset: ipOffset, headerLength: headerLength,
                            partialL4: partialL4)
    }

    /// `applyRewrite(to:ipOffset:partialL4:)` for a frame already known to hold an
    /// unfragmented IPv4 packet at `ipOffset`, with a header of `headerLength` bytes (at
    /// least 20) whose first 20 lie inside its `count` bytes, as `FlowKey(frame:port:)` checks
    /// at offset 14; the entry must be a `forward` one. The fast path's rewrite: the frame's
    /// key was just read. Not public: with those promises broken it would write out of
    /// bounds. `.notApplicable` here means only that the header or the L4 checksum lies
    /// beyond the frame.
    @inlinable @inline(__always)
    func applyRewrite(toUnfragmented base: UnsafeMutableRawPointer, count: Int, ipOffset: Int = 14,
                      headerLength: Int, partialL4: Bool) -> FlowRewriteOutcome {
        assert(headerLength >= 20 && count >= ipOffset + 20 && kind == .forward,
               "applyRewrite(toUnfragmented:): the frame's header or the entry is not as promised")
        let ip = base + ipOffset
        let ttl = ip.load(fromByteOffset: 8, as: UInt8.self)
        guard ttl > 1 else { return .timeToLiveExceeded }
        let proto = ip.load(fromByteOffset: 9, as: UInt8.self)
        let l4Offset = ipOffset &+ headerLength
        let l4ChecksumOffset: Int
        switch proto {
        case 6: l4ChecksumOffset = 16
        case 17: l4ChecksumOffset = 6
        default: l4ChecksumOffset = -1
        }
        guard count >= (l4ChecksumOffset < 0 ? ipOffset &+ headerLength : l4Offset &+ l4ChecksumOffset &+ 2)
        else { return .notApplicable }

        base.storeBytes(of: ethernetFirst, as: UInt64.self)
        base.storeBytes(of: ethernetLast, toByteOffset: 8, as: UInt32.self)
        ip.storeBytes(of: ttl &- 1, toByteOffset: 8, as: UInt8.self)
        let ipChecksum = ip.loadUnaligned(fromByteOffset: 10, as: UInt16.self)
        ip.storeBytes(of: FlowEntry.addDelta(ipChecksum, ipChecksumDelta), toByteOffset: 10, as: UInt16.self)
        let oldSource = ip.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
        let oldDestination = ip.loadUnaligned(fromByteOffset: 16, as: UInt32.self)
        ip.storeBytes(of: newSource, toByteOffset: 12, as: UInt32.self)
        ip.storeBytes(of: newDestination, toByteOffset: 16, as: UInt32.self)
        if l4ChecksumOffset >= 0 {
            let l4 = base + l4Offset
            l4.storeBytes(of: newPorts, as: UInt32.self)
            let checksum = l4.loadUnaligned(fromByteOffset: l4ChecksumOffset, as: UInt16.self)
            if partialL4 {
                let pseudo = FlowEntry.addressChange(from: oldSource, oldDestination, to: newSource, newDestination)
                l4.storeBytes(of: FlowEntry.onesComplementAdd(checksum, pseudo), toByteOffset: l4ChecksumOffset,
                              as: UInt16.self)
            } else if proto == 6 {
                l4.storeBytes(of: FlowEntry.addDelta(checksum, l4ChecksumDelta), toByteOffset: 16, as: UInt16.self)
            } else if checksum != 0 {
                let updated = FlowEntry.addDelta(checksum, l4ChecksumDelta)
                l4.storeBytes(of: updated == 0 ? 0xffff : updated, toByteOffset: 6, as: UInt16.self)
            }
        }
        return .rewritten
    }

    /// The ones' complement change of a pseudo-header whose addresses go from the first
    /// pair to the second (words as loaded, in network order, like every sum here).
    @inlinable
    static func addressChange(from source: UInt32, _ destination: UInt32, to newSource: UInt32,
                              _ newDestination: UInt32) -> UInt16 {
        var s = UInt32(~UInt16(truncatingIfNeeded: source)) &+ UInt32(~UInt16(truncatingIfNeeded: source >> 16))
        s &+= UInt32(~UInt16(truncatingIfNeeded: destination)) &+ UInt32(~UInt16(truncatingIfNeeded: destination >> 16))
        s &+= (newSource & 0xffff) &+ (newSource >> 16) &+ (newDestination & 0xffff) &+ (newDestination >> 16)
        s = (s & 0xffff) &+ (s >> 16)
        return UInt16(truncatingIfNeeded: (s & 0xffff) &+ (s >> 16))
    }

    /// A ones' complement sum of two 16-bit values (a partial checksum plus a change).
    @inlinable
    static func onesComplementAdd(_ a: UInt16, _ b: UInt16) -> UInt16 {
        let s = UInt32(a) &+ UInt32(b)
        return UInt16(truncatingIfNeeded: (s & 0xffff) &+ (s >> 16))
    }

    /// RFC 1624 eqn. 3, HC' = ~(~HC + delta), with delta in 1...0xffff: one fold suffices.
    @inlinable
    static func addDelta(_ checksum: UInt16, _ delta: UInt16) -> UInt16 {
        let s = UInt32(~checksum) &+ UInt32(delta)
        return ~UInt16(truncatingIfNeeded: (s & 0xffff) &+ (s >> 16))
    }
}
