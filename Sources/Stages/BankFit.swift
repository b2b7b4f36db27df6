import Anomaly
import Models
import Tensor
import Vision

/// SPEC-PSAD stage 5 (bank-fit): histogram and composition vectors of every
/// train image from its part mask and frozen features, standardised with
/// the train statistics, as two memory banks with their train statistics.
public struct Banks: Sendable {
    public let histogramStandardizer: Standardizer, compositionStandardizer: Standardizer
    public let histogram: MemoryBank, composition: MemoryBank
    public let histogramTrainStatistics: [Double], compositionTrainStatistics: [Double]

    /// Distances of one image's vectors to the two banks.
    public func distances(histogram h: [Double], composition c: [Double]) -> (histogram: Double, composition: Double) {
        (histogram.nearestDistance(histogramStandardizer(h)), composition.nearestDistance(compositionStandardizer(c)))
    }
}

public enum BankFit {
    public struct Parameters: Codable, Equatable, Sendable {
        /// Standardisation epsilon: the reference's 1e-10 or a safer value.
        public var epsilon = Standardizer.referenceEpsilon
        public var trainStatistic = MemoryBank.TrainStatistic.leaveOneOut.rawValue
        /// Strides of the frozen features the composition averages.
        public var strides = [4, 8, 16]
        public init() {}
    }

    /// Histogram and composition vectors of one image.
    public static func vectors(image: Image, labels: [Int32], classes: Int, backbone: any Backbone,
                               strides: [Int], normalization: ImageNormalization = .imagenet) -> (histogram: [Double], composition: [Double]) {
        let taps = backbone.features(normalization(image.tensor()), strides: Set(strides))
        return vectors(taps: taps, labels: labels, height: image.height, width: image.width, classes: classes, strides: strides)
    }

    /// The same from taps already computed.
    public static func vectors(taps: [Int: Tensor], labels: [Int32], height: Int, width: Int, classes: Int,
                               strides: [Int]) -> (histogram: [Double], composition: [Double]) {
        PartFeatures.vectors(features: strides.map { taps[$0]! }, labels: labels, height: height, width: width, classes: classes)
    }

    public static func run(trainVectors: [(histogram: [Double], composition: [Double])], parameters p: Parameters) -> Banks {
        let hs = Standardizer(train: trainVectors.map(\.histogram), epsilon: p.epsilon)
        let cs = Standardizer(train: trainVectors.map(\.composition), epsilon: p.epsilon)
        let hb = MemoryBank(train: trainVectors.map { hs($0.histogram) })
        let cb = MemoryBank(train: trainVectors.map { cs($0.composition) })
        let kind = MemoryBank.TrainStatistic(rawValue: p.trainStatistic) ?? .leaveOneOut
        return Banks(histogramStandardizer: hs, compositionStandardizer: cs, histogram: hb, composition: cb,
                     histogramTrainStatistics: hb.trainStatistics(kind), compositionTrainStatistics: cb.trainStatistics(kind))
    }
}
