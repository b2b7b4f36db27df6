/// Per-dimension standardisation with the train mean and the unbiased train
/// standard deviation plus `epsilon` (SPEC-PSAD, stage 5):
/// z = (x - mean) / (std + epsilon).
///
/// The reference uses epsilon = 1e-10, so a dimension that is constant in
/// training multiplies its test deviation by 1e10; ``safeEpsilon`` is the
/// project's alternative.
public struct Standardizer: Sendable {
    public static let referenceEpsilon = 1e-10
    public static let safeEpsilon = 1e-6

    public let mean: [Double], std: [Double]
    public let epsilon: Double

    public init(train: [[Double]], epsilon: Double = referenceEpsilon) {
        precondition(train.count >= 2, "standardising needs at least two train vectors")
        let d = train[0].count, n = Double(train.count)
        var mean = [Double](repeating: 0, count: d), variance = mean
        for v in train { for j in 0..<d { mean[j] += v[j] / n } }
        for v in train { for j in 0..<d { variance[j] += (v[j] - mean[j]) * (v[j] - mean[j]) / (n - 1) } }
        self.mean = mean
        std = variance.map { $0.squareRoot() }
        self.epsilon = epsilon
    }

    public func callAsFunction(_ x: [Double]) -> [Double] {
        precondition(x.count == mean.count)
        return (0..<x.count).map { (x[$0] - mean[$0]) / (std[$0] + epsilon) }
    }
}

/// A memory bank of (standardised) train vectors: the distance of a test
/// vector is its Euclidean distance to the nearest train vector.
public struct MemoryBank: Sendable {
    public let train: [[Double]]

    public init(train: [[Double]]) {
        precondition(!train.isEmpty)
        self.train = train
    }

    public func nearestDistance(_ v: [Double], excluding excluded: Int? = nil) -> Double {
        var best = Double.infinity
        for (i, t) in train.enumerated() where i != excluded { best = min(best, Self.distance(v, t)) }
        return best
    }

    static func distance(_ a: [Double], _ b: [Double]) -> Double {
        var s = 0.0
        for j in 0..<a.count { s += (a[j] - b[j]) * (a[j] - b[j]) }
        return s.squareRoot()
    }

    /// How the train statistic used for scaling is computed.
    public enum TrainStatistic: String, Sendable {
        /// Each train vector's distance to its nearest other train vector
        /// (leave-one-out): what the reference intends.
        case leaveOneOut = "loo"
        /// The reference code's behaviour: for train vector i, sort its
        /// distances to all train vectors, find the rank r of train vector #1
        /// in that order, and take the distance to train vector r.
        case reference
    }

    public func trainStatistics(_ kind: TrainStatistic = .leaveOneOut) -> [Double] {
        precondition(train.count >= 2, "train statistics need two train vectors")
        return train.indices.map { i in
            switch kind {
            case .leaveOneOut:
                return nearestDistance(train[i], excluding: i)
            case .reference:
                let d = train.map { Self.distance(train[i], $0) }
                let order = d.indices.sorted { (d[$0], $0) < (d[$1], $1) }
                let rank = order.firstIndex(of: 1)!
                return d[rank]
            }
        }
    }
}

/// How a bank's test distance is scaled by its train statistics
/// (SPEC-PSAD, stage 6: adaptive scaling).
public enum ScaleType: String, CaseIterable, Sendable {
    /// d / max(train statistics) — the paper's setting.
    case max
    /// (d - mean) / std of the train statistics.
    case std
    /// d unchanged.
    case none
}

public struct BankScaler: Sendable {
    public let type: ScaleType
    let a: Double, b: Double

    /// - Parameter floor: the least divisor: a bank whose distances come in
    ///   whole units (the instance bank: one part more or less is 1) passes
    ///   that unit, so train images that all match another train image
    ///   exactly (every statistic 0) do not turn a difference of one into
    ///   an unbounded score.
    public init(trainStatistics t: [Double], type: ScaleType, floor: Double = 1e-12) {
        self.type = type
        switch type {
        case .max:
            a = 0; b = max(t.max() ?? 1, floor)
        case .std:
            let n = Double(t.count), mean = t.reduce(0, +) / n
            let sd = (t.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / max(n - 1, 1)).squareRoot()
            a = mean; b = max(sd, floor)
        case .none:
            a = 0; b = 1
        }
    }

    public func callAsFunction(_ d: Double) -> Double { (d - a) / b }
}

/// Which banks a score sums: any combination of histogram (h), composition
/// (c), patch (p), part instances (n, the project's: ``PartInstances``) and
/// part geometry (g, the project's: ``PartGeometry``); "hcp" is the paper's three.
public struct MemoryType: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    public static let histogram = MemoryType(rawValue: 1)
    public static let composition = MemoryType(rawValue: 2)
    public static let patch = MemoryType(rawValue: 4)
    public static let instances = MemoryType(rawValue: 8)
    public static let geometry = MemoryType(rawValue: 16)

    /// Parses letters from "hcpng"; nil for anything else or an empty string.
    public init?(_ letters: String) {
        var t: MemoryType = []
        for ch in letters {
            switch ch {
            case "h": t.insert(.histogram)
            case "c": t.insert(.composition)
            case "p": t.insert(.patch)
            case "n": t.insert(.instances)
            case "g": t.insert(.geometry)
            default: return nil
            }
        }
        if t.isEmpty { return nil }
        self = t
    }

    public var description: String {
        (contains(.histogram) ? "h" : "") + (contains(.composition) ? "c" : "") + (contains(.patch) ? "p" : "")
            + (contains(.instances) ? "n" : "") + (contains(.geometry) ? "g" : "")
    }
}
