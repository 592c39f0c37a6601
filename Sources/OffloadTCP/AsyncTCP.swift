import OffloadCore
import Synchronization

/// The async face of a `TCPStack`: connect, listen and accept, send (an owned buffer that
/// comes back with its completion), receive as an async sequence, close. A thin layer: every
/// call takes the stack's lock, makes the synchronous call, and where it must wait, parks a
/// continuation with the condition it waits for. The driver that runs the stack (a
/// `HostRuntime` thread, or a test's loop) takes the same lock for each turn and calls
/// `resumeReady()` after it, which resumes every waiter whose condition now holds.
///
/// Cancelling a task ends its wait: `connect` gives up the connection and throws `cancelled`,
/// as do `accept` and `receive` (nothing is taken); `send` refuses a message it has not
/// queued yet, but a queued message is the connection's, so `send` waits for its completion
/// (`abort()` ends that wait at once); `closed()` returns `cancelled`.
public final class AsyncTCP: Sendable {
    struct Waiter: @unchecked Sendable {
        let id: UInt64
        let ready: (Core) -> Bool
        let continuation: CheckedContinuation<Void, Never>
    }

    /// A completed message's buffer, parked until its sender's task takes it.
    final class CompletionBox: @unchecked Sendable {
        var completion: TCPCompletion?
        init() {}
    }

    /// Only touched under `core`'s lock.
    final class Core: @unchecked Sendable {
        let stack: TCPStack
        var waiters: [Waiter] = []
        var nextWaiter: UInt64 = 0
        /// Sends waiting for their completion, by socket and message id.
        var boxes: [TCPSocket: [MessageID: CompletionBox]] = [:]
        var now: Instant
        /// Set by `stop()`: no driver runs the stack, so nothing waits for a turn.
        var stopped = false
        init(stack: TCPStack, now: Instant) {
            self.stack = stack
            self.now = now
        }

        /// Moves every completion of `socket` into its box.
        func collectCompletions(_ socket: TCPSocket) {
            stack.takeCompletions(of: socket) { completion in
                if let box = boxes[socket]?.removeValue(forKey: completion.id) { box.completion = consume completion }
            }
        }
    }

    private let core: Mutex<Core>
    private let wake: @Sendable () -> Void

    /// `wake` asks the driver for a turn soon (it rings the driver's eventfd).
    public init(stack: sending TCPStack, now: Instant, wake: @escaping @Sendable () -> Void) {
        core = Mutex(Core(stack: stack, now: now))
        self.wake = wake
    }

    /// For the driver: runs `body` with the stack, under the lock. Not for sends on a
    /// connection the async API has: it takes that connection's completions for its own
    /// sends, and would take these too.
    public func withStack<R: Sendable>(now: Instant, _ body: (TCPStack) throws -> R) rethrows -> R {
        try core.withLock { core in
            core.now = now
            return try body(core.stack)
        }
    }

    /// For the driver, after each turn: resumes the waiters whose condition holds.
    public func resumeReady() {
        let ready: [CheckedContinuation<Void, Never>] = core.withLock { core in
            for socket in core.boxes.keys where !(core.boxes[socket]?.isEmpty ?? true) {
                core.collectCompletions(socket)
            }
            var ready: [CheckedContinuation<Void, Never>] = []
            core.waiters.removeAll { w in
                guard w.ready(core) else { return false }
                ready.append(w.continuation)
                return true
            }
            return ready
        }
        for c in ready { c.resume() }
    }

    /// Whether `stop()` has been called.
    public var isStopped: Bool { core.withLock { $0.stopped } }

    /// For the driver, once it has stopped for good: the stack ends every connection
    /// (`TCPStack.stop`), every send gets its buffer back with its completion, every waiter
    /// wakes to find its connection closed with `stackStopped`, and later calls no longer
    /// wait for a driver that will not come.
    public func stop() {
        let waiting: [CheckedContinuation<Void, Never>] = core.withLock { core in
            core.stopped = true
            core.stack.stop()
            for socket in core.boxes.keys { core.collectCompletions(socket) }
            defer { core.waiters.removeAll() }
            return core.waiters.map(\.continuation)
        }
        for c in waiting { c.resume() }
    }

    /// Waits until `ready` holds (checked now, then after every driver turn); returns at
    /// once when the driver has stopped, and, if `cancellable`, when the task is cancelled.
    func wait(until ready: @escaping (Core) -> Bool, cancellable: Bool = true) async {
        guard cancellable else { return await park(until: ready, cancellable: false, id: 0) }
        let id = core.withLock { core in
            core.nextWaiter &+= 1
            return core.nextWaiter
        }
        // The lock orders the two: a handler that runs before the waiter is parked finds
        // nothing, and the parking then sees the task cancelled.
        await withTaskCancellationHandler {
            await park(until: ready, cancellable: true, id: id)
        } onCancel: {
            let parked = core.withLock { core in
                core.waiters.firstIndex { $0.id == id }.map { core.waiters.remove(at: $0).continuation }
            }
            parked?.resume()
        }
    }

    private func park(until ready: @escaping (Core) -> Bool, cancellable: Bool, id: UInt64) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = core.withLock { core -> Bool in
                if core.stopped || ready(core) || cancellable && Task.isCancelled { return true }
                core.waiters.append(Waiter(id: id, ready: ready, continuation: c))
                return false
            }
            if now { c.resume() } else { wake() }
        }
    }

    /// Runs `body` under the lock the driver holds for its turns (for state the driver
    /// touches beside the stack, such as the host's UDP sockets), then asks for a turn.
    public func withLock<R: Sendable, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let result = core.withLock { _ in Result { () throws(E) in try body() } }
        wake()
        return try result.get()
    }

    /// Waits until `ready` holds; it is checked under the same lock, now and after every
    /// driver turn. Returns early when the driver has stopped or the task is cancelled.
    public func wait(until ready: @escaping @Sendable () -> Bool) async {
        await wait { (_: Core) in ready() }
    }

    func locked<R: Sendable>(_ body: (Core) throws(TCPError) -> R) throws(TCPError) -> R {
        let result = core.withLock { core in Result { () throws(TCPError) in try body(core) } }
        wake()
        return try result.get()
    }

    // MARK: The API

    /// Opens a connection and waits for the handshake. A cancelled task's connection is
    /// given up (`cancelled`).
    public func connect(to address: IPv4Address, port: UInt16) async throws(TCPError) -> AsyncTCPConnection {
        let socket = try locked { core throws(TCPError) in try core.stack.connect(to: address, port: port, now: core.now) }
        await wait { $0.stack.status(socket).map { $0.state != .synSent && $0.state != .synReceived } ?? true }
        let failure = try? locked { core throws(TCPError) -> TCPError? in
            guard let c = core.stack.status(socket) else { return .notConnected }
            let handshaking = c.state == .synSent || c.state == .synReceived
            guard c.state == .closed || handshaking else { return nil }
            // The socket is the stack's to release: the application never gets it.
            core.stack.abort(socket)
            return handshaking ? .cancelled : c.error ?? .notConnected
        }
        if let failure { throw failure }
        return AsyncTCPConnection(tcp: self, socket: socket)
    }

    /// Listens on `port`; `accept` on the listener takes the connections.
    public func listen(port: UInt16, backlog: Int = 128) throws(TCPError) -> AsyncTCPListener {
        try locked { core throws(TCPError) in try core.stack.listen(port: port, backlog: backlog) }
        return AsyncTCPListener(tcp: self, port: port)
    }
}

/// A listening port: `accept()` waits for the next established connection.
public struct AsyncTCPListener: Sendable {
    let tcp: AsyncTCP
    public let port: UInt16

    /// Throws `stackStopped` once the runtime has stopped, and `cancelled` when the task is
    /// cancelled while no connection is waiting.
    public func accept() async throws(TCPError) -> AsyncTCPConnection {
        while true {
            let accepted = try tcp.locked { [port] core throws(TCPError) -> TCPSocket? in
                if core.stopped { throw .stackStopped }
                return core.stack.accept(port: port)
            }
            if let accepted { return AsyncTCPConnection(tcp: tcp, socket: accepted) }
            if Task.isCancelled { throw .cancelled }
            await tcp.wait { [port] core in core.stack.hasAcceptable(port: port) }
        }
    }
}

/// One connection. `send` hands an owned buffer to the stack and returns it with its
/// completion; `inbound` yields what arrives; `close` sends our FIN.
public struct AsyncTCPConnection: Sendable {
    let tcp: AsyncTCP
    public let socket: TCPSocket

    /// Sends `buffer` (no copy) and waits until the peer has acknowledged all of it (or the
    /// connection ended): the completion gives the buffer back, with how it ended. Waits for
    /// room first when the send queue is full. A cancelled task's message is refused
    /// (`cancelled`) unless it was queued already: then it is the connection's, and this
    /// waits for its completion.
    public func send(_ buffer: consuming TxBuffer) async -> TCPCompletion {
        let size = buffer.count
        await tcp.wait { [socket] core in
            guard let c = core.stack.status(socket) else { return true }
            return !c.canSend || c.hasRoom(for: size)
        }
        if Task.isCancelled { return TCPCompletion(id: .max, status: .failed(.cancelled), buffer: buffer) }
        let box = AsyncTCP.CompletionBox()
        let handed = HandOver(buffer)
        let queued: MessageID? = try! tcp.locked { [socket] core throws(TCPError) -> MessageID? in
            switch core.stack.send(handed.take(), on: socket) {
            case .queued(let id):
                core.boxes[socket, default: [:]][id] = box
                return id
            case .refused(let error, let buffer):
                box.completion = TCPCompletion(id: .max, status: .failed(error), buffer: buffer)
                return nil
            }
        }
        if queued != nil {
            await tcp.wait(until: { _ in box.completion != nil }, cancellable: false)
        }
        return box.completion.take()!
    }

    /// Up to `max` bytes as they arrive; nil once the peer has closed and all is read.
    /// Throws when the connection ended by a reset or a timeout, and `cancelled` when the
    /// task is cancelled while nothing is there to read (what comes stays for the next call).
    public func receive(max: Int = 65_536) async throws(TCPError) -> [UInt8]? {
        while true {
            let result: Result<[UInt8]?, TCPError>? = try? tcp.locked { [socket] core throws(TCPError) in
                guard let c = core.stack.status(socket) else { return .success(nil) }
                if c.readableBytes > 0 {
                    var bytes: [UInt8] = []
                    core.stack.read(socket, max: max) { bytes.append(contentsOf: $0) }
                    return .success(bytes)
                }
                if c.isAtEndOfInput { return c.error.map { .failure($0) } ?? .success(nil) }
                return nil
            }
            if let result { return try result.get() }
            if Task.isCancelled { throw .cancelled }
            await tcp.wait { [socket] core in
                guard let c = core.stack.status(socket) else { return true }
                return c.readableBytes > 0 || c.isAtEndOfInput
            }
        }
    }

    /// What arrives, chunk by chunk, until the peer closes.
    public var inbound: Inbound { Inbound(connection: self) }

    public struct Inbound: AsyncSequence, Sendable {
        let connection: AsyncTCPConnection
        public struct AsyncIterator: AsyncIteratorProtocol {
            let connection: AsyncTCPConnection
            public mutating func next() async throws(TCPError) -> [UInt8]? { try await connection.receive() }
        }
        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(connection: connection) }
    }

    /// Sends our FIN after the data queued. Reading goes on until the peer closes.
    public func close() {
        try? tcp.locked { [socket] core throws(TCPError) in core.stack.close(socket) }
    }

    /// Ends the connection at once with a RST: every message not yet acknowledged completes
    /// as failed (`aborted`), its buffer back to the `send` that waits for it, and a waiting
    /// `receive` returns nil: nothing more comes.
    public func abort() {
        try? tcp.locked { [socket] core throws(TCPError) in core.stack.abort(socket) }
    }

    /// Waits until the connection has ended (both FINs, or a reset); returns the error if
    /// it did not end cleanly, and `cancelled` when the task was cancelled before it ended.
    public func closed() async -> TCPError? {
        let ended = { [socket] (core: AsyncTCP.Core) -> Bool in
            guard let c = core.stack.status(socket) else { return true }
            return c.state == .closed || c.state == .timeWait
        }
        await tcp.wait(until: ended)
        return try? tcp.locked { [socket] core throws(TCPError) in
            ended(core) ? core.stack.status(socket)?.error : .cancelled
        }
    }
}

/// Carries an owned value into a closure that takes it exactly once.
final class HandOver<Value: ~Copyable>: @unchecked Sendable {
    private var value: Value?
    init(_ value: consuming Value) { self.value = .some(value) }
    func take() -> Value { value.take()! }
}
