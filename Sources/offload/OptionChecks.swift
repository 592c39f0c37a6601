import ArgumentParser

/// Checks of numbers the commands take, made before anything starts (a usage error, exit 64).
enum OptionChecks {
    /// A year: more would overflow a `Duration`'s nanoseconds once added to the clock.
    static let maximumSeconds = 365.0 * 24 * 3600

    /// A number of seconds: finite, at least `minimum` (above it when `above`), at most a year.
    static func seconds(_ value: Double?, _ flag: String, minimum: Double = 0, above: Bool = false) throws {
        guard let value else { return }
        let low = above ? value > minimum : value >= minimum
        guard low, value <= maximumSeconds else {
            throw ValidationError("\(flag) is a number of seconds \(above ? "above" : "from") \(minimum.formatted()) "
                                  + "to \(Int(maximumSeconds)) (a year)")
        }
    }
}

private extension Double {
    func formatted() -> String { self == rounded() ? String(Int(self)) : String(self) }
}
