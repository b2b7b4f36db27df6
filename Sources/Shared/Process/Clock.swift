import Foundation

/// Seconds on the system's monotonic clock (CLOCK_MONOTONIC): what every
/// interval and deadline is measured on, so that a wall-clock step (NTP, an
/// operator's `date`, a VM resumed) neither fires a timer early nor holds
/// it back.
public func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// The coordinator's clock for leases, backoff and attempt times: the wall
/// time when it started plus the monotonic time elapsed since. Within a
/// run a wall-clock jump changes nothing it times; the times it writes
/// stay near the wall clock for people reading them. Across a restart the
/// stored deadlines are set afresh from the new start (`JobStore.resetDeadlines`),
/// so a jump while it was down is harmless too.
public struct CoordinatorClock: Sendable {
    let base: Double
    let start: Double
    let monotonic: @Sendable () -> Double

    public init(wall: Double = Date().timeIntervalSince1970, monotonic: @escaping @Sendable () -> Double = monotonicSeconds) {
        base = wall
        self.monotonic = monotonic
        start = monotonic()
    }

    public func now() -> Double { base + (monotonic() - start) }
}
