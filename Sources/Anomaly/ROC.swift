/// Receiver operating characteristic of scores against binary labels
/// (1 = anomalous).
public struct ROC: Sendable {
    /// False- and true-positive rates at every distinct threshold, from
    /// (0, 0) to (1, 1).
    public let falsePositiveRates: [Double]
    public let truePositiveRates: [Double]

    public init(scores: [Float], labels: [Bool]) {
        precondition(scores.count == labels.count)
        let positives = Double(labels.filter { $0 }.count), negatives = Double(labels.count) - positives
        precondition(positives > 0 && negatives > 0, "ROC needs both classes")
        let order = scores.indices.sorted { scores[$0] > scores[$1] }
        var fpr: [Double] = [0], tpr: [Double] = [0]
        var tp = 0.0, fp = 0.0, i = 0
        while i < order.count {
            let threshold = scores[order[i]]
            while i < order.count && scores[order[i]] == threshold {
                if labels[order[i]] { tp += 1 } else { fp += 1 }
                i += 1
            }
            fpr.append(fp / negatives)
            tpr.append(tp / positives)
        }
        falsePositiveRates = fpr
        truePositiveRates = tpr
    }

    /// Area under the curve by the trapezoid rule; with ties counted half,
    /// this equals the Mann-Whitney U statistic / (positives * negatives).
    public var area: Double {
        var a = 0.0
        for k in 1..<falsePositiveRates.count {
            a += (falsePositiveRates[k] - falsePositiveRates[k - 1]) * (truePositiveRates[k] + truePositiveRates[k - 1]) / 2
        }
        return a
    }

    /// Image AUROC: normal scores against anomalous ones.
    public static func auroc(normal: [Float], anomalous: [Float]) -> Double {
        ROC(scores: normal + anomalous, labels: normal.map { _ in false } + anomalous.map { _ in true }).area
    }
}
