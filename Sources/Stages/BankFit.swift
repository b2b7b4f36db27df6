import Anomaly
import Models
import Tensor
import Vision

/// SPEC-PSAD stage 5 (bank-fit): histogram and composition vectors of every
/// train image from its part mask and frozen features, standardised with
/// the train statistics, as two memory banks with their train statistics;
/// and the project's two: the part-instance counts (``PartInstances``),
/// compared unstandardised, and the part geometry (``PartGeometry``),
/// standardised as the histogram.
public struct Banks: Sendable {
    public let histogramStandardizer: Standardizer, compositionStandardizer: Standardizer, geometryStandardizer: Standardizer
    public let histogram: MemoryBank, composition: MemoryBank, instances: MemoryBank, geometry: MemoryBank
    public let histogramTrainStatistics: [Double], compositionTrainStatistics: [Double], instancesTrainStatistics: [Double]
    public let geometryTrainStatistics: [Double]

    /// Distances of one image's vectors to the four banks.
    public func distances(_ v: PartVectors) -> (histogram: Double, composition: Double, instances: Double, geometry: Double) {
        (histogram.nearestDistance(histogramStandardizer(v.histogram)), composition.nearestDistance(compositionStandardizer(v.composition)),
         instances.nearestDistance(v.instances), geometry.nearestDistance(geometryStandardizer(v.geometry)))
    }
}

/// One image's vectors for the banks: pixel count per class (background
/// included), the composition (mean feature per foreground class), the
/// count of pieces per foreground class, and each foreground class's
/// centroid and second moments.
public typealias PartVectors = (histogram: [Double], composition: [Double], instances: [Double], geometry: [Double])

public enum BankFit {
    public struct Parameters: Codable, Equatable, Sendable {
        /// Standardisation epsilon: the reference's 1e-10 or a safer value.
        public var epsilon = Standardizer.referenceEpsilon
        public var trainStatistic = MemoryBank.TrainStatistic.leaveOneOut.rawValue
        /// Strides of the frozen features the composition averages.
        public var strides = [4, 8, 16]
        public init() {}
    }

    /// The bank vectors of one image.
    public static func vectors(image: Image, labels: [Int32], classes: Int, backbone: any Backbone,
                               strides: [Int], normalization: ImageNormalization = .imagenet) -> PartVectors {
        let taps = backbone.features(normalization(image.tensor()), strides: Set(strides))
        return vectors(taps: taps, labels: labels, height: image.height, width: image.width, classes: classes, strides: strides)
    }

    /// The same from taps already computed.
    public static func vectors(taps: [Int: Tensor], labels: [Int32], height: Int, width: Int, classes: Int,
                               strides: [Int]) -> PartVectors {
        let (histogram, composition) = PartFeatures.vectors(features: strides.map { taps[$0]! }, labels: labels, height: height, width: width, classes: classes)
        return (histogram, composition, PartInstances.counts(labels: labels, height: height, width: width, classes: classes),
                PartGeometry.vector(labels: labels, height: height, width: width, classes: classes))
    }

    public static func run(trainVectors: [PartVectors], parameters p: Parameters) -> Banks {
        let hs = Standardizer(train: trainVectors.map(\.histogram), epsilon: p.epsilon)
        let cs = Standardizer(train: trainVectors.map(\.composition), epsilon: p.epsilon)
        let hb = MemoryBank(train: trainVectors.map { hs($0.histogram) })
        let cb = MemoryBank(train: trainVectors.map { cs($0.composition) })
        let nb = MemoryBank(train: trainVectors.map(\.instances))
        let gs = Standardizer(train: trainVectors.map(\.geometry), epsilon: p.epsilon)
        let gb = MemoryBank(train: trainVectors.map { gs($0.geometry) })
        let kind = MemoryBank.TrainStatistic(rawValue: p.trainStatistic) ?? .leaveOneOut
        return Banks(histogramStandardizer: hs, compositionStandardizer: cs, geometryStandardizer: gs,
                     histogram: hb, composition: cb, instances: nb, geometry: gb,
                     histogramTrainStatistics: hb.trainStatistics(kind), compositionTrainStatistics: cb.trainStatistics(kind),
                     instancesTrainStatistics: nb.trainStatistics(kind), geometryTrainStatistics: gb.trainStatistics(kind))
    }
}
