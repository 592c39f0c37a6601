import Synchronization

/// Audit mode's on/off switch (B7), shared by the engine and the host's audit stage and
/// flipped at run time from either side.
public final class AuditSwitch: Sendable {
    private let flag: Atomic<Bool>

    public init(_ on: Bool = false) { flag = Atomic(on) }

    public var isOn: Bool { flag.load(ordering: .relaxed) }

    public func set(_ on: Bool) { flag.store(on, ordering: .relaxed) }
}
