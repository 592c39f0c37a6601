import Foundation

/// An integer from the environment, or nil: what a longer run of a seeded test asks for
/// (`ORDERING_SEEDS=100000`, `HOSTILE_ROUNDS=50000`).
func environmentSetting(_ name: String) -> Int? { ProcessInfo.processInfo.environment[name].flatMap { Int($0) } }
