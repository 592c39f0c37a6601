import Testing
import OffloadCore
import OffloadWire
import OffloadTCP

/// A hand-driven peer: it crafts segments for one stack and reads what the stack emits, so
/// a test can play a well-behaved client, an attacker, or a peer that says nothing.
final class ScriptedPeer {
    let stack: TCPStack
    var now = Instant(nanoseconds: 5_000_000_000)
    let address = IPv4Address(10, 0, 0, 9)
    let port: UInt16
    var sequence: UInt32 = 1_000
    var acknowledgment: UInt32 = 0
    var timestamp: UInt32 = 100
    /// What the stack sent, oldest first, not yet looked at.
    var received: [TCPRepr] = []

    init(configuration: TCPStack.Configuration = .init(), port: UInt16 = 40_000) {
        stack = TCPStack(address: TCPWorld.addressB, configuration: configuration)
        self.port = port
    }

    func send(_ flags: TCPFlags, sequence: UInt32? = nil, acknowledgment: UInt32? = nil, payload: [UInt8] = [],
              window: UInt16 = 65_535, options: (inout TCPRepr) -> Void = { _ in }, from source: IPv4Address? = nil,
              sourcePort: UInt16? = nil, to destinationPort: UInt16 = 80) {
        var header = TCPRepr(sourcePort: sourcePort ?? port, destinationPort: destinationPort,
                             sequenceNumber: sequence ?? self.sequence,
                             acknowledgmentNumber: acknowledgment ?? self.acknowledgment, flags: flags,
                             windowSize: window, payloadLength: payload.count)
        options(&header)
        payload.withUnsafeBytes {
            stack.receive(header, payload: $0, source: source ?? address, destination: TCPWorld.addressB, now: now)
        }
    }

    /// Runs the stack's timers and takes what it sends.
    @discardableResult
    func poll(after delay: Duration = .zero) -> [TCPRepr] {
        now = now + delay
        var out: [TCPRepr] = []
        stack.poll(now: now) { _, header, _ in out.append(header) }
        received += out
        return out
    }

    /// A handshake with a listener on port 80; returns the accepted socket.
    func handshake(options: (inout TCPRepr) -> Void = { _ in }) -> (TCPSocket, TCPRepr)? {
        try? stack.listen(port: 80)
        send(.syn, options: options)
        guard let synACK = poll().first(where: { $0.flags == [.syn, .ack] }) else { return nil }
        sequence &+= 1
        acknowledgment = synACK.sequenceNumber &+ 1
        send(.ack, options: { h in
            if synACK.timestamp != nil { h.timestamp = TCPTimestamp(value: self.timestamp, echoReply: synACK.timestamp!.value) }
        })
        guard let socket = stack.accept(port: 80) else { return nil }
        return (socket, synACK)
    }
}

@Suite struct TCPHardeningTests {
    @Test func theSYNACKOffersOnlyWhatTheSYNOffered() throws {
        let full = ScriptedPeer()
        let (_, synACK) = try #require(full.handshake { h in
            h.maxSegmentSize = 1400
            h.windowScale = 7
            h.sackPermitted = true
            h.timestamp = TCPTimestamp(value: 100, echoReply: 0)
        })
        #expect(synACK.maxSegmentSize == 1460)
        #expect(synACK.windowScale != nil && synACK.sackPermitted && synACK.timestamp?.echoReply == 100)

        let bare = ScriptedPeer()
        let (socket, plain) = try #require(bare.handshake())
        #expect(plain.windowScale == nil && !plain.sackPermitted && plain.timestamp == nil)
        let c = try #require(bare.stack.connection(socket))
        #expect(c.block.constant.remoteMSS == 536, "no MSS option means 536 (RFC 9293 3.7.1)")
        #expect(c.state == .established)
    }

    /// RFC 5961 3: a RST must hit RCV.NXT exactly; one elsewhere in the window gets a
    /// challenge ACK and changes nothing.
    @Test func aBlindResetInTheWindowIsChallengedNotObeyed() throws {
        let peer = ScriptedPeer()
        let (socket, _) = try #require(peer.handshake())
        peer.poll()
        peer.received.removeAll()
        peer.send(.rst, sequence: peer.sequence &+ 5_000)
        let answer = peer.poll()
        #expect(answer.count == 1 && answer[0].flags == .ack && answer[0].acknowledgmentNumber == peer.sequence)
        #expect(peer.stack.connection(socket)?.state == .established)
        #expect(peer.stack.connection(socket)?.counters.challengeACKs == 1)

        peer.send(.rst, sequence: peer.sequence)
        #expect(peer.stack.connection(socket)?.state == .closed)
        #expect(peer.stack.connection(socket)?.error == .connectionReset)
    }

    /// RFC 5961 4: a SYN on an established connection is answered with a challenge ACK.
    @Test func aSYNOnAnEstablishedConnectionGetsAChallengeACK() throws {
        let peer = ScriptedPeer()
        let (socket, _) = try #require(peer.handshake())
        peer.poll()
        peer.send(.syn, sequence: peer.sequence &+ 100)
        let answer = peer.poll()
        #expect(answer.map(\.flags) == [.ack])
        #expect(peer.stack.connection(socket)?.state == .established)
    }

    /// RFC 5961 5: data whose ACK is older than SND.UNA - MAX.SND.WND is injected, not ours.
    @Test func dataWithAnImpossibleACKIsDropped() throws {
        let peer = ScriptedPeer()
        let (socket, _) = try #require(peer.handshake())
        peer.poll()
        peer.send([.ack, .psh], acknowledgment: peer.acknowledgment &- 1_000_000, payload: Array(repeating: 7, count: 100))
        peer.poll()
        let c = try #require(peer.stack.connection(socket))
        #expect(c.readableBytes == 0)
        #expect(c.counters.challengeACKs == 1)
        peer.send([.ack, .psh], payload: Array(repeating: 7, count: 100))
        #expect(c.readableBytes == 100)
    }

    /// RFC 7323 5: a segment whose timestamp is older than TS.Recent is an old duplicate.
    @Test func pawsDropsASegmentWithAnOldTimestamp() throws {
        let peer = ScriptedPeer()
        let (socket, synACK) = try #require(peer.handshake { h in h.timestamp = TCPTimestamp(value: 100, echoReply: 0) })
        let echo = synACK.timestamp!.value
        peer.send([.ack, .psh], payload: [1, 2, 3], options: { h in h.timestamp = TCPTimestamp(value: 200, echoReply: echo) })
        peer.sequence &+= 3
        peer.send([.ack, .psh], payload: [4, 5, 6], options: { h in h.timestamp = TCPTimestamp(value: 150, echoReply: echo) })
        let c = try #require(peer.stack.connection(socket))
        #expect(c.readableBytes == 3)
        #expect(c.counters.pawsDrops == 1)
    }

    @Test func connectingToAClosedPortIsRefused() throws {
        let world = TCPWorld(seed: 3)
        let socket = try world.a.connect(to: TCPWorld.addressB, port: 81, now: world.now)
        world.run(for: .seconds(5)) { world.a.connection(socket)?.state == .closed }
        #expect(world.a.connection(socket)?.error == .connectionRefused)
        #expect(world.b.counters.resetsSent == 1)
    }

    /// A peer that never answers: a probe, then the RTO doubles each time, then the connection gives up
    /// and hands every buffer back as failed.
    @Test func aSilentPeerTimesOutAndEveryBufferComesBack() throws {
        var configuration = TCPStack.Configuration()
        configuration.tcp.dataRetries = 4
        let peer = ScriptedPeer(configuration: configuration)
        let (socket, _) = try #require(peer.handshake())
        guard case .queued = peer.stack.send(TxBuffer(copying: [UInt8](repeating: 1, count: 3000)), on: socket) else {
            Issue.record("send refused")
            return
        }
        _ = peer.stack.send(TxBuffer(copying: [UInt8](repeating: 2, count: 10)), on: socket)
        peer.poll()
        var gaps: [Duration] = []
        var last = peer.now
        for _ in 0..<200 where peer.stack.connection(socket)?.state != .closed {
            guard let deadline = peer.stack.nextDeadline else { break }
            let sent = peer.poll(after: deadline - peer.now)
            if sent.contains(where: { $0.payloadLength > 0 }) {
                gaps.append(peer.now - last)
                last = peer.now
            }
        }
        let c = try #require(peer.stack.connection(socket))
        // A tail loss probe first (RFC 8985), then the four timeouts, each twice the last.
        #expect(c.counters.tailLossProbes == 1)
        #expect(gaps.count == 5)
        let timeouts = Array(gaps.dropFirst(2))
        #expect(zip(timeouts, timeouts.dropFirst()).allSatisfy { $1 == $0 * 2 }, "\(gaps)")
        #expect(c.error == .timedOut)
        #expect(peer.received.last?.flags == .rst)
        var statuses: [CompletionStatus] = []
        let ranges = peer.stack.takeCompletions(of: socket) { statuses.append($0.status) }
        #expect(statuses == [.failed(.timedOut), .failed(.timedOut)])
        #expect(ranges == [CompletionRange(lower: 0, upper: 1, status: .failed(.timedOut))])
    }

    @Test func refusedSendsGiveTheBufferBack() throws {
        var configuration = TCPStack.Configuration()
        configuration.tcp.sendQueueLimit = 1000
        let peer = ScriptedPeer(configuration: configuration)
        let (socket, _) = try #require(peer.handshake())
        guard case .queued = peer.stack.send(TxBuffer(copying: [UInt8](repeating: 1, count: 800)), on: socket) else {
            Issue.record("first send refused")
            return
        }
        switch peer.stack.send(TxBuffer(copying: [UInt8](repeating: 2, count: 300)), on: socket) {
        case .queued: Issue.record("a send past the queue's bound was taken")
        case .refused(let error, let buffer):
            #expect(error == .sendQueueFull(limit: 1000))
            #expect(buffer.count == 300 && buffer.bytes.allSatisfy { $0 == 2 })
        }
        peer.stack.close(socket)
        switch peer.stack.send(TxBuffer(copying: [3]), on: socket) {
        case .queued: Issue.record("a send after close was taken")
        case .refused(let error, let buffer): #expect(error == .sendAfterClose && buffer.count == 1)
        }
    }

    /// An application that aborts and takes its completions before the stack's next poll:
    /// the RST still leaves, and the connection is forgotten (its 4-tuple free, the stack at
    /// rest). The same for a connect closed before its SYN was answered. Found by
    /// `HostileFrameTests`: the socket was released at once, and the connection stayed in
    /// the table of 4-tuples for good, its RST unsent.
    @Test func aConnectionEndedBetweenPollsIsStillForgottenAndItsResetSent() throws {
        let peer = ScriptedPeer()
        let (socket, _) = try #require(peer.handshake())
        guard case .queued = peer.stack.send(TxBuffer(copying: [1, 2, 3]), on: socket) else {
            Issue.record("send refused")
            return
        }
        peer.stack.abort(socket)
        var statuses: [CompletionStatus] = []
        peer.stack.takeCompletions(of: socket) { statuses.append($0.status) }
        #expect(statuses == [.failed(.aborted)])
        let out = peer.poll()
        #expect(out.contains { $0.flags.contains(.rst) }, "the RST left: \(out)")
        #expect(peer.stack.connectionCount == 0 && peer.stack.socketCount == 0)
        #expect(peer.stack.counters.connectionsClosed == 1 && peer.stack.counters.connectionsFailed == 1)
        #expect(peer.stack.isQuiescent)

        let connecting = try peer.stack.connect(to: peer.address, port: 7, now: peer.now)
        peer.stack.close(connecting)
        peer.stack.takeCompletions(of: connecting) { _ in }
        peer.poll()
        #expect(peer.stack.connectionCount == 0 && peer.stack.socketCount == 0)
        #expect(peer.stack.isQuiescent)
    }

    /// An ACK loop: a middlebox that changed the numbers makes each end see the other's ACKs
    /// as out of the window, and each answers with an ACK. Answers to segments without data
    /// are limited to one per `invalidSegmentACKInterval` (out of the window, an ACK of what
    /// was never sent); data out of the window is still answered every time.
    @Test func answersToInvalidSegmentsWithoutDataAreRateLimited() throws {
        let peer = ScriptedPeer()
        let (socket, _) = try #require(peer.handshake())
        func acks(_ out: [TCPRepr]) -> Int { out.filter { $0.flags == .ack && $0.payloadLength == 0 }.count }
        // Each answered at once if at all, as the two ends of a loop would.
        var answers = 0
        for _ in 0..<50 {
            peer.send(.ack, sequence: peer.sequence &+ 1_000_000)
            answers += acks(peer.poll())
        }
        #expect(answers == 1, "one answer to fifty ACKs out of the window")
        answers = 0
        for _ in 0..<50 {
            peer.send(.ack, acknowledgment: peer.acknowledgment &+ 1_000_000)
            answers += acks(peer.poll())
        }
        #expect(answers == 0, "an ACK of what was never sent is limited the same way")
        let c = try #require(peer.stack.connection(socket)).counters
        #expect(c.invalidSegmentACKsLimited == 99)
        #expect(acks(peer.poll(after: .milliseconds(500))) == 0, "nothing owed")
        peer.send(.ack, sequence: peer.sequence &+ 1_000_000)
        #expect(acks(peer.poll()) == 1, "once the interval has passed, an answer again")
        // Data out of the window (an old retransmission) is answered every time.
        for _ in 0..<3 {
            peer.send(.ack, sequence: peer.sequence &- 100, payload: [1, 2, 3])
            #expect(acks(peer.poll()) == 1)
        }
        #expect(peer.stack.connection(socket)?.state == .established)
    }

    /// One segment waits for the delayed-ACK timer; a second full one is acknowledged at once.
    @Test func delayedACKs() throws {
        let peer = ScriptedPeer()
        let (socket, _) = try #require(peer.handshake { h in h.maxSegmentSize = 1000 })
        let mss = peer.stack.connection(socket)!.block.constant.segmentSize
        peer.poll()
        peer.send(.ack, payload: Array(repeating: 1, count: mss))
        peer.sequence &+= UInt32(mss)
        #expect(peer.poll().isEmpty)
        #expect(peer.poll(after: .milliseconds(39)).isEmpty)
        #expect(peer.poll(after: .milliseconds(1)).map(\.acknowledgmentNumber) == [peer.sequence])
        peer.send(.ack, payload: Array(repeating: 1, count: mss))
        peer.sequence &+= UInt32(mss)
        #expect(peer.poll().isEmpty)
        peer.send(.ack, payload: Array(repeating: 1, count: mss))
        peer.sequence &+= UInt32(mss)
        #expect(peer.poll().map(\.acknowledgmentNumber) == [peer.sequence])
    }

    /// The every-second-segment rule counts bytes: a super-segment delivered whole (GRO, a
    /// TSO link) is answered at once, and so is the second of two segments a little under
    /// the MSS. Each used to count as one full segment, or none, and waited for the timer.
    @Test func delayedACKsCountBytes() throws {
        let peer = ScriptedPeer()
        let (socket, _) = try #require(peer.handshake { h in h.maxSegmentSize = 1000 })
        let mss = peer.stack.connection(socket)!.block.constant.segmentSize
        peer.poll()
        peer.send(.ack, payload: Array(repeating: 1, count: 3 * mss))
        peer.sequence &+= UInt32(3 * mss)
        #expect(peer.poll().map(\.acknowledgmentNumber) == [peer.sequence], "a super-segment: at once")
        for _ in 0..<2 {
            peer.send(.ack, payload: Array(repeating: 1, count: mss - 10))
            peer.sequence &+= UInt32(mss - 10)
        }
        #expect(peer.poll().map(\.acknowledgmentNumber) == [peer.sequence], "two segments just under the MSS")
    }

    /// A SYN flood from many sources: the SYN queue stays at its bound, the rest are
    /// answered with cookies and cost nothing, and a real client still gets in.
    @Test func aSYNFloodCannotFillTheStackAndARealClientStillConnects() throws {
        var configuration = TCPStack.Configuration()
        configuration.synQueueLimit = 16
        let peer = ScriptedPeer(configuration: configuration)
        try peer.stack.listen(port: 80)
        for i in 0..<5_000 {
            peer.send(.syn, sequence: UInt32(i) &* 7919, options: { $0.maxSegmentSize = 1460 },
                      from: IPv4Address(rawValue: 0x0A63_0000 | UInt32(i)), sourcePort: UInt16(1024 + i % 60_000))
            if i % 32 == 31 { peer.poll() } // the stack runs between bursts
        }
        peer.poll()
        #expect(peer.stack.connectionCount == 16)
        #expect(peer.stack.counters.synCookiesSent == 5_000 - 16)
        #expect(peer.received.filter { $0.flags == [.syn, .ack] }.count == 5_000)

        // A real client, now: its SYN gets a cookie, and its ACK completes the handshake.
        peer.send(.syn, sequence: 42, options: { $0.maxSegmentSize = 1400 })
        let synACK = try #require(peer.poll().first { $0.flags == [.syn, .ack] && $0.destinationPort == peer.port })
        #expect(synACK.windowScale == nil && !synACK.sackPermitted, "a cookie SYN-ACK offers no options")
        peer.send(.ack, sequence: 43, acknowledgment: synACK.sequenceNumber &+ 1, payload: [9, 9, 9])
        let socket = try #require(peer.stack.accept(port: 80))
        #expect(peer.stack.connection(socket)?.readableBytes == 3)
        #expect(peer.stack.counters.synCookiesAccepted == 1)

        // A forged ACK (a guessed cookie) is refused.
        peer.send(.ack, sequence: 43, acknowledgment: 12_345, sourcePort: 999)
        #expect(peer.stack.counters.synCookiesRejected == 1)
    }

    /// The window of a SYN-ACK is not scaled (RFC 7323 2.2), though the SYN-ACK agrees on
    /// a scale: a peer offering 1 KiB with scale 7 was taken to offer 128 KiB.
    @Test func theSYNACKsWindowIsNotScaled() throws {
        let peer = ScriptedPeer()
        let socket = try peer.stack.connect(to: peer.address, port: peer.port, now: peer.now)
        let syn = try #require(peer.poll().first { $0.flags == .syn })
        peer.send([.syn, .ack], sequence: 5_000, acknowledgment: syn.sequenceNumber &+ 1, window: 1024,
                  options: { $0.windowScale = 7; $0.maxSegmentSize = 1460 }, sourcePort: syn.destinationPort,
                  to: syn.sourcePort)
        let connection = try #require(peer.stack.connection(socket))
        #expect(connection.state == .established)
        #expect(connection.block.delegated.sendWindow == 1024 && connection.block.delegated.maxSendWindow == 1024)
        // The next segment's window is scaled.
        peer.send(.ack, sequence: 5_001, acknowledgment: syn.sequenceNumber &+ 1, window: 1024,
                  sourcePort: syn.destinationPort, to: syn.sourcePort)
        #expect(connection.block.delegated.sendWindow == 1024 << 7)
    }

    /// A blind segment at RCV.NXT whose ACK fails RFC 5961's check is dropped whole: its
    /// timestamp does not become TS.Recent. It used to, and a TSval 2^31 - 1 ahead had PAWS
    /// drop every real segment of the peer after it.
    @Test func aSegmentWithAnImplausibleACKLeavesTSRecent() throws {
        let peer = ScriptedPeer()
        let (socket, synACK) = try #require(peer.handshake { h in h.timestamp = TCPTimestamp(value: 100, echoReply: 0) })
        let echo = try #require(synACK.timestamp).value
        peer.send(.ack, acknowledgment: peer.acknowledgment &+ 100_000, payload: [1, 2, 3],
                  options: { $0.timestamp = TCPTimestamp(value: 100 &+ 0x7fff_ffff, echoReply: echo) })
        #expect(peer.stack.connection(socket)?.readableBytes == 0)
        peer.send(.ack, payload: [4, 5, 6], options: { $0.timestamp = TCPTimestamp(value: 101, echoReply: echo) })
        #expect(peer.stack.connection(socket)?.readableBytes == 3, "the peer's real segment is taken")
    }

    /// A simultaneous open (RFC 9293 3.5): our SYN crosses the peer's, each side answers
    /// with a SYN-ACK, and the peer's SYN-ACK completes our side. It used to be taken for
    /// the peer's SYN again, answered with our SYN-ACK again, and so on until the SYN
    /// retries ran out: two of our stacks never connected this way.
    @Test func aSimultaneousOpenCompletes() throws {
        let peer = ScriptedPeer()
        let socket = try peer.stack.connect(to: peer.address, port: peer.port, now: peer.now)
        let syn = try #require(peer.poll().first { $0.flags == .syn })
        peer.send(.syn, sequence: 9_000, acknowledgment: 0, options: { $0.maxSegmentSize = 1460 },
                  sourcePort: syn.destinationPort, to: syn.sourcePort)
        let synACK = try #require(peer.poll().first)
        #expect(synACK.flags == [.syn, .ack] && synACK.sequenceNumber == syn.sequenceNumber
                && synACK.acknowledgmentNumber == 9_001)
        peer.send([.syn, .ack], sequence: 9_000, acknowledgment: syn.sequenceNumber &+ 1,
                  options: { $0.maxSegmentSize = 1460 }, sourcePort: syn.destinationPort, to: syn.sourcePort)
        #expect(peer.stack.connection(socket)?.state == .established)
        let answer = peer.poll()
        #expect(answer.map(\.flags) == [.ack] && answer.first?.acknowledgmentNumber == 9_001)
    }

    /// An engine that takes every connection offered (the stack's side of offload only).
    final class AcceptingOffloadPort: TCPOffloadPort {
        var offered = 0
        func offload(_ connection: TCPConnection, as host: UInt32, now: Instant) -> Bool {
            offered += 1
            return true
        }
        func post(_ bytes: UnsafeRawBufferPointer, to host: UInt32) {}
        func applicationRead(_ host: UInt32) {}
        func upload(_ host: UInt32) {}
        func close(_ host: UInt32) {}
        func pathMTUDecreased(_ host: UInt32, mtu: Int, quotedSequence: UInt32?) {}
    }

    /// With offload on, a close during the handshake waits for the offload, which carries it
    /// out. In a simultaneous open whose last segment, the peer's ACK, brings its FIN too, the
    /// connection goes past ESTABLISHED at once and is never offloaded: it closes then, and
    /// our FIN leaves. It used to wait for an offload that never came, in CLOSE-WAIT for good.
    @Test func aCloseDuringTheHandshakeIsNotLostToAFINThatEndsIt() throws {
        let peer = ScriptedPeer()
        let engine = AcceptingOffloadPort()
        peer.stack.offloadPort = engine
        let socket = try peer.stack.connect(to: peer.address, port: peer.port, now: peer.now)
        let syn = try #require(peer.poll().first { $0.flags == .syn })
        peer.send(.syn, sequence: 9_000, acknowledgment: 0, options: { $0.maxSegmentSize = 1460 },
                  sourcePort: syn.destinationPort, to: syn.sourcePort)
        #expect(peer.poll().first?.flags == [.syn, .ack])
        peer.stack.close(socket)
        // The peer had our SYN-ACK and was closed already: its ACK of our SYN comes with its FIN.
        peer.send([.ack, .fin], sequence: 9_001, acknowledgment: syn.sequenceNumber &+ 1,
                  sourcePort: syn.destinationPort, to: syn.sourcePort)
        let state = peer.stack.connection(socket)?.state
        #expect(state == .lastAck, "\(String(describing: state))")
        #expect(peer.poll().contains { $0.flags.contains(.fin) }, "our FIN")
        #expect(engine.offered == 0)
    }

    /// A connection a cookie set up takes the peer's window from its ACK and sends into it,
    /// whatever the peer's initial sequence number: one in the upper half of the sequence
    /// space used to leave the window at 0 for good (its last update was taken to be at
    /// sequence 0), so every reply went out a byte at a time as zero-window probes.
    @Test(arguments: [UInt32(41), 0x9000_0000, 0xffff_fff0])
    func aCookieConnectionSendsIntoThePeersWindow(initialSequence: UInt32) throws {
        var configuration = TCPStack.Configuration()
        configuration.synQueueLimit = 1
        let peer = ScriptedPeer(configuration: configuration)
        try peer.stack.listen(port: 80)
        peer.send(.syn, sequence: 7, from: IPv4Address(10, 99, 0, 1))  // takes the SYN queue's one place
        peer.send(.syn, sequence: initialSequence, options: { $0.maxSegmentSize = 1000 })
        let synACK = try #require(peer.poll().first { $0.flags == [.syn, .ack] && $0.destinationPort == peer.port })
        #expect(peer.stack.counters.synCookiesSent == 1)
        peer.send(.ack, sequence: initialSequence &+ 1, acknowledgment: synACK.sequenceNumber &+ 1, window: 30_000)
        let socket = try #require(peer.stack.accept(port: 80))
        guard case .queued = peer.stack.send(TxBuffer(copying: [UInt8](repeating: 7, count: 5_000)), on: socket) else {
            Issue.record("send refused")
            return
        }
        let data = peer.poll().filter { $0.payloadLength > 0 }.map(\.payloadLength)
        let connection = try #require(peer.stack.connection(socket))
        #expect(connection.block.delegated.sendWindow == 30_000)
        // The MSS the cookie could carry (its table's value at or below 1000).
        let mss = connection.block.constant.segmentSize
        #expect(data.count >= 2 && data.dropLast().allSatisfy { $0 == mss },
                "\(data) bytes, MSS \(mss): whole segments, as the congestion window allows")
    }
}

extension TCPHardeningTests {
    /// A receiver that stops reading closes its window; the sender probes it (RFC 9293
    /// 3.8.6.1) with backoff and resumes once the application reads again. Meanwhile the
    /// other direction carries data, and the server takes the sender's ACKs of it: their
    /// sequence number stays inside its closed window. The probes take no sequence space,
    /// so the data resumes where it stopped, with nothing to send again.
    @Test func aZeroWindowIsProbedUntilItOpens() throws {
        let world = TCPWorld(seed: 5) { $0.tcp.receiveBufferSize = 4096 }
        try world.b.listen(port: 80)
        let client = try world.a.connect(to: TCPWorld.addressB, port: 80, now: world.now)
        let data = pattern(20_000, seed: 5)
        world.run(for: .seconds(2)) { world.a.connection(client)?.state == .established }
        guard case .queued = world.a.send(TxBuffer(copying: data), on: client) else {
            Issue.record("send refused")
            return
        }
        var server: TCPSocket?
        world.run(for: .seconds(5)) {
            if server == nil { server = world.b.accept(port: 80) }
            return false
        }
        let sender = try #require(world.a.connection(client))
        #expect(sender.block.delegated.sendWindow == 0)
        #expect(sender.counters.zeroWindowProbes >= 2, "\(sender.counters)")
        let probesWhileClosed = sender.counters.zeroWindowProbes
        #expect(probesWhileClosed < 10, "probes back off: \(probesWhileClosed) in 5 s")

        // The other way, while the window stays closed: the server's 3000 bytes are taken
        // and acknowledged, and its side sees the acknowledgments.
        let s = try #require(server)
        guard case .queued = world.b.send(TxBuffer(copying: pattern(3_000, seed: 6)), on: s) else {
            Issue.record("the server's send refused")
            return
        }
        let answered = world.run(for: .seconds(2)) {
            let back = world.b.connection(s)!.block.delegated
            return back.sendUnacknowledged == back.sendMax && world.a.connection(client)!.readableBytes == 3_000
        }
        #expect(answered, "the server's data acknowledged with the client's window still closed")
        #expect(sender.block.delegated.sendWindow == 0)

        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1000)
        let done = world.run(for: .seconds(30)) {
            let n = chunk.withUnsafeMutableBytes { world.b.read(s, into: $0) }
            received += chunk[0..<n]
            return received.count == data.count
        }
        #expect(done && received == data)
        #expect(sender.counters.segmentsRetransmitted == 0, "\(sender.counters)")
        var completions = 0
        world.run(for: .seconds(2)) {
            world.a.takeCompletions(of: client) { _ in completions += 1 }
            return completions == 1
        }
        #expect(completions == 1)
    }
}

extension TCPHardeningTests {
    /// Closing a listener resets the connections nobody accepted yet, and frees the port.
    @Test func stopListeningResetsWhatWasNotAccepted() throws {
        let peer = ScriptedPeer()
        try peer.stack.listen(port: 80)
        peer.send(.syn)
        let synACK = try #require(peer.poll().first { $0.flags == [.syn, .ack] })
        peer.sequence &+= 1
        peer.acknowledgment = synACK.sequenceNumber &+ 1
        peer.send(.ack)
        #expect(peer.stack.hasAcceptable(port: 80))
        peer.stack.stopListening(port: 80)
        #expect(peer.poll().map(\.flags) == [.rst])
        #expect(peer.stack.connectionCount == 0 && peer.stack.listenerCount == 0)
        try peer.stack.listen(port: 80)
    }

    /// A sender idle for longer than its RTO starts again from the initial window.
    @Test func theWindowRestartsAfterIdle() throws {
        let world = TCPWorld(seed: 9)
        try world.b.listen(port: 80)
        let client = try world.a.connect(to: TCPWorld.addressB, port: 80, now: world.now)
        var server: TCPSocket?
        var sink = [UInt8](repeating: 0, count: 1 << 16)
        func drain() {
            if server == nil { server = world.b.accept(port: 80) }
            if let s = server { while sink.withUnsafeMutableBytes({ world.b.read(s, into: $0) }) > 0 {} }
        }
        _ = world.a.send(TxBuffer(copying: pattern(400_000, seed: 1)), on: client)
        world.run(for: .seconds(10)) { drain(); return world.a.connection(client)?.unacknowledgedBytes == 0 }
        let connection = try #require(world.a.connection(client))
        let grown = connection.block.delegated.congestion.congestionWindow
        world.run(for: .seconds(1)) { drain(); return false }
        world.now = world.now + .seconds(5) // nothing happens meanwhile: the sender is idle
        _ = world.a.send(TxBuffer(copying: pattern(1000, seed: 2)), on: client)
        world.step()
        let restarted = connection.block.delegated.congestion.congestionWindow
        #expect(grown > restarted, "cwnd \(grown) after the transfer, \(restarted) after idle")
        #expect(restarted <= 10 * connection.block.constant.segmentSize)
    }
}
