#if canImport(Glibc)
import Glibc
#endif
import OffloadCore
import OffloadWire

/// Writes frames to a classic pcap file (Ethernet, nanosecond timestamps) through a
/// preallocated buffer: no allocation per frame. Frames are written as they are on the
/// wire: a partial checksum is finished in the written copy.
public final class PcapFileWriter {
    public let path: String
    private let fd: Int32
    private let buffer: UnsafeMutableRawBufferPointer
    private var used = 0
    public private(set) var framesWritten: UInt64 = 0
    /// Frames larger than the snap length, written cut to it.
    public private(set) var framesTruncated: UInt64 = 0
    /// The first write error, if any; writing stops after it.
    public private(set) var writeError: LinkError?
    private let snapLength = 65_536 + 128

    /// Creates (or truncates) the file and writes its header.
    public init(path: String) throws(LinkError) {
        self.path = path
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            let e = errno
            throw .system(operation: "open \(path)", errno: e, detail: String(cString: strerror(e)))
        }
        self.fd = fd
        buffer = .allocate(byteCount: 1 << 20, alignment: 16)
        let header = PcapFileHeader(nanosecondResolution: true, snapLength: UInt32(snapLength))
        header.emit(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<PcapFileHeader.length]))
        used = PcapFileHeader.length
        try flush()
    }

    deinit {
        try? flush()
        close(fd)
        buffer.deallocate()
    }

    /// Appends one frame given as a gather list, at time `nanoseconds` since the epoch.
    public func write(header: UnsafeRawBufferPointer, payloads: PayloadSlices, metadata: OffloadMetadata,
                      nanoseconds: Int64) {
        guard writeError == nil else { return }
        let length = header.count + payloads.byteCount
        let captured = min(length, snapLength)
        if captured < length { framesTruncated &+= 1 }
        if used + PcapRecordHeader.length + captured > buffer.count { try? flush() }
        guard writeError == nil else { return }
        var record = PcapRecordHeader(nanosecondsSinceEpoch: nanoseconds, length: captured, nanosecondResolution: true)
        record.originalLength = UInt32(length)
        record.emit(into: UnsafeMutableRawBufferPointer(rebasing: buffer[used..<used + PcapRecordHeader.length]))
        let frameStart = used + PcapRecordHeader.length
        var at = frameStart
        func copy(_ bytes: UnsafeRawBufferPointer) {
            let n = min(bytes.count, frameStart + captured - at)
            guard n > 0, let from = bytes.baseAddress else { return }
            (buffer.baseAddress! + at).copyMemory(from: from, byteCount: n)
            at += n
        }
        copy(header)
        for slice in payloads.slices { copy(slice) }
        if let (start, offset) = metadata.partialChecksumLocation, captured == length {
            OffloadMetadata.finishChecksum(
                in: UnsafeMutableRawBufferPointer(rebasing: buffer[frameStart..<frameStart + captured]),
                start: start, offset: offset)
        }
        used = frameStart + captured
        framesWritten &+= 1
    }

    /// Writes everything buffered to the file.
    public func flush() throws(LinkError) {
        var done = 0
        while done < used {
            let n = Glibc.write(fd, buffer.baseAddress! + done, used - done)
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                let error = LinkError.system(operation: "write \(path)", errno: e, detail: String(cString: strerror(e)))
                writeError = error
                used = 0
                throw error
            }
            done += n
        }
        used = 0
    }
}
