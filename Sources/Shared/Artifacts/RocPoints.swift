/// A ROC curve as evaluate writes it in `roc.json` (one per anomaly split):
/// false- and true-positive rates at every distinct threshold, from (0, 0)
/// to (1, 1). Shared so that the report reads what the worker wrote.
public struct RocPoints: Codable, Equatable, Sendable {
    public var fpr: [Double]
    public var tpr: [Double]

    public init(fpr: [Double], tpr: [Double]) {
        self.fpr = fpr
        self.tpr = tpr
    }
}
