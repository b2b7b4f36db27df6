import Anomaly
import Shared

/// SPEC-PSAD stages 6-7 (evaluate): each bank's test distance scaled by its
/// train statistics, the enabled banks summed (or their maximum), and image AUROC of
/// test/good against the logical and the structural anomalies.
public enum Evaluate {
    /// Per-image distances to the banks, and the train statistics (the
    /// part-instance and geometry banks' empty where no memory type uses them).
    public struct BankDistances: Sendable {
        public var histogram: [Double], composition: [Double], patch: [Double], instances: [Double], geometry: [Double]
        public init(histogram: [Double], composition: [Double], patch: [Double], instances: [Double] = [], geometry: [Double] = []) {
            self.histogram = histogram; self.composition = composition; self.patch = patch; self.instances = instances
            self.geometry = geometry
        }
        /// One bank's values.
        public subscript(bank: MemoryType) -> [Double] {
            switch bank {
            case .histogram: histogram
            case .composition: composition
            case .instances: instances
            case .geometry: geometry
            default: patch
            }
        }
    }

    /// Image AUROCs; nil for an anomaly split the category does not have.
    public struct Metrics: Codable, Equatable, Sendable {
        public let logicalAUROC: Double?, structuralAUROC: Double?
        public init(logicalAUROC: Double?, structuralAUROC: Double?) {
            self.logicalAUROC = logicalAUROC; self.structuralAUROC = structuralAUROC
        }
        /// The mean of those present.
        public var meanAUROC: Double? {
            let present = [logicalAUROC, structuralAUROC].compactMap { $0 }
            return present.isEmpty ? nil : present.reduce(0, +) / Double(present.count)
        }
        /// logical_auroc, structural_auroc and mean_auroc, where defined.
        public var named: [String: Double] {
            var out: [String: Double] = [:]
            out["logical_auroc"] = logicalAUROC
            out["structural_auroc"] = structuralAUROC
            out["mean_auroc"] = meanAUROC
            return out
        }
    }

    /// Final scores: the enabled banks' scaled distances, summed (the
    /// paper's) or their maximum. The part-instance bank's divisor is at
    /// least 1 (one piece): where every train image's counts match another
    /// train image's, its statistics are all 0.
    public static func scores(_ d: BankDistances, train: BankDistances, memory: MemoryType, scale: ScaleType,
                              combine: BankCombine = .sum) -> [Double] {
        var total: [Double]?
        for bank in banks where memory.contains(bank) {
            let scaler = Self.scaler(bank, statistics: train[bank], scale: scale)
            let scaled = d[bank].map { scaler($0) }
            total = total.map { t in zip(t, scaled).map { combine == .sum ? $0 + $1 : Swift.max($0, $1) } } ?? scaled
        }
        return total ?? [Double](repeating: 0, count: d.patch.count)
    }

    /// The banks in the order a score adds them.
    public static let banks: [MemoryType] = [.histogram, .composition, .patch, .instances, .geometry]

    /// One bank's scaling by its train statistics. Counts differ by whole
    /// pieces, so the part-instance bank is never divided by less than one.
    public static func scaler(_ bank: MemoryType, statistics: [Double], scale: ScaleType) -> BankScaler {
        BankScaler(trainStatistics: statistics, type: scale, floor: bank == .instances ? 1 : 1e-12)
    }

    /// AUROC of good (label 0) against each anomaly split.
    public static func metrics(good: [Double], logical: [Double], structural: [Double]) -> Metrics {
        let c = curves(good: good, logical: logical, structural: structural)
        return Metrics(logicalAUROC: c.logical?.area, structuralAUROC: c.structural?.area)
    }

    /// AUROC per defect type and split (`logical_anomalies`,
    /// `structural_anomalies`), sorted by split then type; an image with two
    /// types counts for both. `types[i]` are test image i's defect types, in
    /// the test order good, logical, structural.
    public static func byDefectType(scores: [Double], types: [[String]], good: Int, logical: Int) -> [DefectTypeAUROC] {
        precondition(scores.count == types.count && good + logical <= scores.count)
        let negatives = scores[0..<good].map { Float($0) }
        var groups: [String: [String: [Float]]] = [:]
        for i in good..<scores.count {
            let split = i < good + logical ? "logical_anomalies" : "structural_anomalies"
            for type in Set(types[i]) { groups[split, default: [:]][type, default: []].append(Float(scores[i])) }
        }
        guard !negatives.isEmpty else { return [] }
        return groups.keys.sorted().flatMap { split in
            groups[split]!.keys.sorted().map { type in
                let positives = groups[split]![type]!
                return DefectTypeAUROC(split: split, defectType: type, images: positives.count,
                                       auroc: ROC.auroc(normal: negatives, anomalous: positives))
            }
        }
    }

    /// The ROC curves of good (label 0) against each anomaly split (nil for
    /// a split without images; the category needs good test images).
    public static func curves(good: [Double], logical: [Double], structural: [Double]) -> (logical: ROC?, structural: ROC?) {
        func roc(_ anomalous: [Double]) -> ROC? {
            guard !good.isEmpty, !anomalous.isEmpty else { return nil }
            return ROC(scores: (good + anomalous).map { Float($0) }, labels: good.map { _ in false } + anomalous.map { _ in true })
        }
        return (roc(logical), roc(structural))
    }
}
