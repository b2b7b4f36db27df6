import Foundation

/// Retry delay after a failed attempt: base * 2^(attempt - 1), capped, times
/// a jitter factor drawn uniformly from [1 - jitter, 1 + jitter].
public struct Backoff: Sendable {
    public var base: Double = 1
    public var cap: Double = 60
    public var jitter: Double = 0.5
    public init(base: Double = 1, cap: Double = 60, jitter: Double = 0.5) {
        self.base = base; self.cap = cap; self.jitter = jitter
    }

    /// The longest delay it can draw.
    public var longest: Double { cap * (1 + jitter) }

    public func delay(afterAttempt attempt: Int, unit: Double = Double.random(in: 0..<1)) -> Double {
        let raw = min(cap, base * pow(2, Double(max(0, attempt - 1))))
        return raw * (1 - jitter + 2 * jitter * unit)
    }
}
