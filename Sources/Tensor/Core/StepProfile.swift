import Dispatch
import Synchronization

/// Floating-point operations the kernels have done in this process, counted
/// where they are issued: each `sgemm` adds 2·M·N·K, each depthwise
/// convolution 2·kh·kw per output (forward) or 4·kh·kw (backward: dL/dx and
/// dL/dw). The memory-bound kernels (activations, batch norm, resizing,
/// losses) add nothing: their figures are time, not arithmetic.
public enum FlopCounter {
    private static let count = Atomic<Int>(0)

    /// Operations counted since the process started.
    public static var total: Int { count.load(ordering: .relaxed) }

    @inline(__always)
    static func add(_ flops: Int) { count.wrappingAdd(flops, ordering: .relaxed) }
}

/// Wall time and counted arithmetic (``FlopCounter``) of the phases of a
/// training step — e.g. views, forward, losses, backward, optimiser — summed
/// over the steps of a run. Counts are process-wide: other work running
/// in the same process at the same time would be counted too (a worker runs
/// one stage at a time).
public struct StepProfile: Codable, Equatable, Sendable {
    public struct Phase: Codable, Equatable, Sendable {
        public var seconds = 0.0
        public var flops = 0.0
        public init(seconds: Double = 0, flops: Double = 0) { self.seconds = seconds; self.flops = flops }
        /// Achieved GFLOP/s of the counted arithmetic over the phase's wall time.
        public var gflopsPerSecond: Double { seconds > 0 ? flops / seconds / 1e9 : 0 }
    }

    /// Phases in the order they were first timed.
    public private(set) var order: [String] = []
    public private(set) var phases: [String: Phase] = [:]
    public var steps = 0

    public init() {}

    /// Runs `body` and adds its wall time and counted operations to `phase`.
    public mutating func time<T>(_ phase: String, _ body: () throws -> T) rethrows -> T {
        let flops = FlopCounter.total, start = DispatchTime.now().uptimeNanoseconds
        defer {
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            if phases[phase] == nil { order.append(phase) }
            phases[phase, default: Phase()].seconds += elapsed
            phases[phase, default: Phase()].flops += Double(FlopCounter.total - flops)
        }
        return try body()
    }

    public var seconds: Double { phases.values.reduce(0) { $0 + $1.seconds } }
}
