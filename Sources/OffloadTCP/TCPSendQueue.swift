/// The messages of one connection not yet acknowledged: descriptors of application memory
/// (id, address, length, the sequence number of the first byte), never the bytes (T3). A
/// segment's payload is gathered from them as slices, straight from the application's
/// buffers, for the first transmission and every retransmission alike (T5).
public struct TCPSendQueue: @unchecked Sendable {
    public struct Message: @unchecked Sendable {
        public let id: MessageID
        public let bytes: UnsafeRawBufferPointer
        /// Sequence number of the first byte.
        public let start: SequenceNumber
        public var end: SequenceNumber { start + bytes.count }
    }

    /// Oldest first; `messages[head...]` are live.
    private var messages: [Message] = []
    private var head = 0
    /// The sequence number after the last byte queued.
    public private(set) var end: SequenceNumber
    /// Id the next message gets.
    public private(set) var nextID: MessageID = 0

    public init(start: SequenceNumber) { end = start }

    public var isEmpty: Bool { head == messages.count }
    public var count: Int { messages.count - head }
    /// The first byte not yet acknowledged (where the oldest message starts), or `end`.
    public var start: SequenceNumber { isEmpty ? end : messages[head].start }
    public var byteCount: Int { end - start }

    /// Queues a message (not empty) after the others; returns its id.
    @discardableResult
    public mutating func append(_ bytes: UnsafeRawBufferPointer) -> MessageID {
        precondition(!bytes.isEmpty, "TCPSendQueue: empty message")
        let id = nextID
        nextID += 1
        messages.append(Message(id: id, bytes: bytes, start: end))
        end += bytes.count
        return id
    }

    /// Moves `end` past bytes that are not data (our SYN), before any message is queued.
    mutating func skip(_ n: Int) {
        precondition(isEmpty, "TCPSendQueue: skip with messages queued")
        end += n
    }

    /// Writes into `slices` the memory holding `length` bytes from `sequence` (inside the
    /// queue), at most `slices.count` slices: a segment may span several messages. Returns
    /// how many slices and bytes were written (fewer bytes when the slices run out).
    public func gather(from sequence: SequenceNumber, length: Int,
                       into slices: UnsafeMutableBufferPointer<UnsafeRawBufferPointer>) -> (slices: Int, bytes: Int) {
        precondition(sequence >= start && sequence + length <= end, "TCPSendQueue: gather outside the queue")
        var i = index(of: sequence), n = 0, bytes = 0, at = sequence
        while bytes < length && n < slices.count && i < messages.count {
            let m = messages[i]
            let offset = at - m.start
            let take = min(m.bytes.count - offset, length - bytes)
            slices[n] = UnsafeRawBufferPointer(rebasing: m.bytes[offset..<(offset + take)])
            n += 1
            bytes += take
            at += take
            i += 1
        }
        return (n, bytes)
    }

    /// Drops the messages whose last byte `acknowledgment` covers; returns their ids.
    public mutating func acknowledge(upTo acknowledgment: SequenceNumber) -> ClosedRange<MessageID>? {
        var last: MessageID?
        let first = isEmpty ? nil : messages[head].id
        while head < messages.count && messages[head].end <= acknowledgment {
            last = messages[head].id
            head += 1
        }
        compact()
        guard let first, let last else { return nil }
        return first...last
    }

    /// Drops every message (the connection ended); returns their ids.
    public mutating func removeAll() -> ClosedRange<MessageID>? {
        guard !isEmpty else { return nil }
        let range = messages[head].id...messages[messages.count - 1].id
        head = messages.count
        compact()
        return range
    }

    /// The index of the message holding `sequence` (binary search: they are in order).
    private func index(of sequence: SequenceNumber) -> Int {
        var lo = head, hi = messages.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if messages[mid].start <= sequence { lo = mid } else { hi = mid - 1 }
        }
        return lo
    }

    private mutating func compact() {
        if head == messages.count {
            messages.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64 && head * 2 >= messages.count {
            messages.removeFirst(head)
            head = 0
        }
    }
}
