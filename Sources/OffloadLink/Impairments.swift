/// What a memory wire does to the frames that cross it, in one direction. Every effect is
/// drawn from the wire's seeded generator, so the same seed gives the same run.
public struct Impairments: Sendable, Equatable {
    /// Probability that a frame is lost.
    public var loss: Double = 0
    /// Probability that a frame arrives twice.
    public var duplication: Double = 0
    /// Probability that a frame is held back by `reorderDelay`, letting later frames pass it.
    public var reordering: Double = 0
    /// How long a reordered frame is held back.
    public var reorderDelay: Duration = .microseconds(200)
    /// Propagation delay added to every frame.
    public var delay: Duration = .zero
    /// Extra delay drawn uniformly from [0, jitter] per frame. Frames may pass each other.
    public var jitter: Duration = .zero
    /// Serialization rate in bits per second; nil is unlimited.
    public var rateBitsPerSecond: Int? = nil
    /// Probability that one bit of a frame is flipped.
    public var corruption: Double = 0

    public init(loss: Double = 0, duplication: Double = 0, reordering: Double = 0,
                reorderDelay: Duration = .microseconds(200), delay: Duration = .zero,
                jitter: Duration = .zero, rateBitsPerSecond: Int? = nil, corruption: Double = 0) {
        self.loss = loss
        self.duplication = duplication
        self.reordering = reordering
        self.reorderDelay = reorderDelay
        self.delay = delay
        self.jitter = jitter
        self.rateBitsPerSecond = rateBitsPerSecond
        self.corruption = corruption
    }

    /// A perfect wire.
    public static let none = Impairments()

    /// Whether delivery depends on the clock.
    var usesTime: Bool {
        delay != .zero || jitter != .zero || rateBitsPerSecond != nil || reordering > 0
    }

    /// Whether frames can overtake each other.
    var reorders: Bool { jitter != .zero || reordering > 0 }

    /// Whether frames cross unchanged, in order, at once.
    var isPerfect: Bool { !usesTime && loss == 0 && duplication == 0 && corruption == 0 }
}

/// What happened on one direction of a memory wire.
public struct MemoryWireCounters: Sendable, Equatable {
    /// Frames handed to the wire by `transmit`.
    public var transmitted: UInt64 = 0
    public var transmittedBytes: UInt64 = 0
    /// Frames taken off the wire by `receive`.
    public var delivered: UInt64 = 0
    public var deliveredBytes: UInt64 = 0
    public var lost: UInt64 = 0
    public var duplicated: UInt64 = 0
    public var reordered: UInt64 = 0
    public var corrupted: UInt64 = 0
    /// Frames dropped because the wire already held its limit of frames in flight.
    public var queueDrops: UInt64 = 0
    /// Payload slices copied by transmit from memory outside the header (gather transmit).
    public var payloadSlices: UInt64 = 0

    public init() {}
}
