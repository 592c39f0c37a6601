#if canImport(Glibc)
import Glibc
#endif
import OffloadCore
import OffloadWire

/// A pcap file as a source of frames: `receive` hands out its records in order, as fast as
/// they are asked for, or, when `paced`, no earlier than their time stamps relative to the
/// first record (against the given clock). Transmitted frames are counted and discarded.
public final class PcapReplayLink: Link {
    private let file: UnsafeMutableRawBufferPointer
    private var reader: PcapReader
    private var pending: PcapRecord?
    private let pacing: (clock: any Clock, start: Instant)?
    private var firstStamp: Int64?
    public private(set) var framesReplayed: UInt64 = 0
    public private(set) var framesDiscarded: UInt64 = 0
    /// Records larger than the pool's buffers, skipped.
    public private(set) var framesTooLarge: UInt64 = 0
    /// Set when the file ended in a damaged record: replay stops there.
    public private(set) var damage: WireError?

    /// Loads the whole file. `paced` replays in the file's timing against `clock`.
    public init(path: String, pacedBy clock: (any Clock)? = nil) throws(LinkError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let e = errno
            throw .system(operation: "open \(path)", errno: e, detail: String(cString: strerror(e)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = errno
            throw .system(operation: "stat \(path)", errno: e, detail: String(cString: strerror(e)))
        }
        let size = Int(st.st_size)
        file = .allocate(byteCount: max(size, 1), alignment: 16)
        var done = 0
        while done < size {
            let n = read(fd, file.baseAddress! + done, size - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                file.deallocate()
                throw .badFile("\(path): could not read the whole file")
            }
            done += n
        }
        do {
            reader = try PcapReader(UnsafeRawBufferPointer(rebasing: file[0..<size]))
        } catch {
            file.deallocate()
            throw .badFile("\(path): not a pcap file this reader takes: \(error)")
        }
        pacing = clock.map { ($0, $0.now) }
    }

    deinit { file.deallocate() }

    public var capabilities: LinkCapabilities { LinkCapabilities(maxFrameSize: Pcap.maximumRecordLength) }

    /// Whether every record has been handed out.
    public var finished: Bool { pending == nil && (reader.offset >= reader.bytes.count || damage != nil) }

    public func receive(
        into pool: BufferPool, max: Int, _ body: (consuming PacketBuffer) -> Void
    ) throws(LinkError) -> Int {
        var count = 0
        while count < max {
            if pending == nil {
                do { pending = try reader.next() } catch {
                    damage = error
                    return count
                }
            }
            guard let record = pending else { return count }
            if let (clock, start) = pacing {
                let first = firstStamp ?? record.nanosecondsSinceEpoch
                firstStamp = first
                guard clock.now.nanoseconds - start.nanoseconds >= record.nanosecondsSinceEpoch - first else {
                    return count
                }
            }
            guard var buffer = pool.take() else { return count }
            pending = nil
            do { try buffer.append(contentsOf: record.data) } catch {
                framesTooLarge &+= 1
                continue
            }
            framesReplayed &+= 1
            count += 1
            body(buffer)
        }
        return count
    }

    public func transmit(
        header: UnsafeRawBufferPointer, payloads: PayloadSlices, metadata: OffloadMetadata
    ) throws(LinkError) {
        framesDiscarded &+= 1
    }
}
