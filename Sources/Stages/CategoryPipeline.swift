import Anomaly
import Foundation
import Models
import Tensor
import Vision

/// Every PSAD stage for one category in one process: preprocess,
/// segment-train, pseudo-label, unet-train, patch-features, bank-fit,
/// evaluate. The encoder runs once per image; its taps serve the segmenter,
/// the banks and PatchCore (whose input size is the preprocessing size).
///
/// Several loss sets may be given (the paper's loss ablation): the stages
/// that do not depend on the segmenter (preprocess, encode,
/// patch-features) run once and serve every loss set.
public enum CategoryPipeline {
    public struct Settings: Codable, Equatable, Sendable {
        public var nShot = 5
        public var segment = SegmentTrainParameters()
        /// The loss sets to train with; empty means `segment.lossSet` alone.
        public var lossSets: [LossSet] = []
        /// UNet retraining; `epochs == 0` skips it and the banks use the
        /// segmenter's own masks.
        public var unet = UNetTrain.Parameters()
        public var bank = BankFit.Parameters()
        public var memoryTypes = ["h", "c", "p", "hc", "hcp"]
        public var scaleTypes = ["max", "none"]
        /// Overrides the manifest's target size when set.
        public var imageSize: Int?
        public var fprLimit = 0.05
        /// Share of the train patches kept in PatchCore's memory (greedy
        /// k-center coreset); 1 keeps all, as the reference does.
        public var coresetFraction = 1.0
        public init() {}

        var effectiveLossSets: [LossSet] { lossSets.isEmpty ? [segment.lossSet] : lossSets }
    }

    /// What one loss set gives.
    public struct Run: Codable, Sendable {
        public var lossSet: LossSet
        /// "memory/scale" -> image metrics.
        public var metrics: [String: Evaluate.Metrics]
        public var segmentLosses: [Float], unetLosses: [Float]
    }

    public struct Result: Codable, Sendable {
        public var category: String
        public var runs: [Run]
        /// From the patch bank's anomaly maps (shared by every run).
        public var pixel: PixelMetrics.Result?
        /// Wall time and peak memory of each stage, in order.
        public var stages: [StageRecorder.Record]
        public var peakIsPerStage: Bool
    }

    /// - Parameter artifacts: where to write every stage's output (see
    ///   README "Artifacts of a method run"); nothing is written when nil.
    public static func run(categoryRoot: URL, backbone: any Backbone, settings s: Settings, artifacts: URL? = nil,
                           log: @escaping (String) -> Void = { _ in }) throws -> Result {
        var clock = StageRecorder(log: log)
        let out = artifacts.map(ArtifactWriter.init)
        let input = try CategoryInput(root: categoryRoot, imageSize: s.imageSize)
        let category = input.category, manifest = input.manifest, classes = input.classes, size = input.size
        let train = try input.images(.train), good = try input.images(.testGood)
        let logical = try input.images(.testLogical), structural = try input.images(.testStructural)
        let testSamples = input.testSamples
        let types = input.productTypes
        let labelled = try input.labelled(nShot: s.nShot)
        for (label, sample) in zip(manifest.fewShot, labelled) {
            try out?.mask(sample.mask!, "preprocess/few_shot/\((label.image as NSString).lastPathComponent)")
        }
        clock.lap("preprocess")

        // encoder taps, once per image
        let tests = good + logical + structural
        let trainTaps = CategoryInput.taps(train, backbone: backbone), testTaps = CategoryInput.taps(tests, backbone: backbone)
        clock.lap("encode")

        // patch-features (independent of the segmenter)
        let patch = PatchStage.run(trainTaps: trainTaps, testTaps: testTaps, coresetFraction: s.coresetFraction, seed: s.segment.seed)
        try out?.patch(patch, train: category[.train], test: testSamples, size: size)
        clock.lap("patch-features")

        let (ng, nl) = (good.count, logical.count)
        var runs: [Run] = []
        for lossSet in s.effectiveLossSets {
            let tag = lossSet.rawValue
            var segmentParameters = s.segment
            segmentParameters.lossSet = lossSet
            // segment-train, pseudo-label
            let unlabelled = train.indices.map { SegmentationSample(image: train[$0], productType: types[$0]) }
            let segmenter = SegmentTrain.run(labelled: labelled, unlabelled: unlabelled, classes: classes,
                                             histogramClasses: manifest.histogramClasses, backbone: backbone,
                                             parameters: segmentParameters, unlabelledTaps: trainTaps)
            try out?.tensors(segmenter.head.tensors, "\(tag)/segment-train/head.safetensors")
            clock.lap("segment-train[\(tag)]")
            let pseudo = trainTaps.map { SegmentTrain.pseudoLabels(segmenter.head, taps: $0, height: size, width: size) }
            try out?.masks(pseudo, samples: category[.train], size: size, "\(tag)/pseudo-label")
            clock.lap("pseudo-label[\(tag)]")

            // unet-train, masks of every image
            var trainMasks = pseudo, testMasks: [[Int32]]
            var unetLosses: [Float] = []
            if s.unet.epochs > 0 {
                let unet = UNetTrain.run(images: train, labels: pseudo, classes: classes, parameters: s.unet)
                unetLosses = unet.epochLosses
                trainMasks = UNetTrain.masks(unet.net, images: train)
                testMasks = UNetTrain.masks(unet.net, images: tests)
                try out?.masks(trainMasks, samples: category[.train], size: size, "\(tag)/unet-train")
                clock.lap("unet-train[\(tag)]")
            } else {
                testMasks = testTaps.map { SegmentTrain.pseudoLabels(segmenter.head, taps: $0, height: size, width: size) }
            }
            try out?.masks(testMasks, samples: testSamples, size: size, "\(tag)/masks")

            // bank-fit
            func vectors(_ t: [[Int: Tensor]], _ masks: [[Int32]]) -> [(histogram: [Double], composition: [Double])] {
                zip(t, masks).map { BankFit.vectors(taps: $0.0, labels: $0.1, height: size, width: size, classes: classes, strides: s.bank.strides) }
            }
            let trainVectors = vectors(trainTaps, trainMasks)
            let banks = BankFit.run(trainVectors: trainVectors, parameters: s.bank)
            let distances = vectors(testTaps, testMasks).map { banks.distances(histogram: $0.histogram, composition: $0.composition) }
            try out?.banks(trainVectors, banks, "\(tag)/bank-fit/banks.safetensors")
            clock.lap("bank-fit[\(tag)]")

            // evaluate
            let d = Evaluate.BankDistances(histogram: distances.map(\.histogram), composition: distances.map(\.composition),
                                           patch: patch.testScores.map(Double.init))
            let t = Evaluate.BankDistances(histogram: banks.histogramTrainStatistics, composition: banks.compositionTrainStatistics,
                                           patch: patch.trainScores.map(Double.init))
            var metrics: [String: Evaluate.Metrics] = [:]
            for m in s.memoryTypes {
                guard let memory = MemoryType(m) else { throw DatasetError.malformed(file: "settings", field: "memory_types", problem: "'\(m)' is not a combination of h, c, p") }
                for scaleName in s.scaleTypes {
                    guard let scale = ScaleType(rawValue: scaleName) else { throw DatasetError.malformed(file: "settings", field: "scale_types", problem: "'\(scaleName)' is not max, std or none") }
                    let scores = Evaluate.scores(d, train: t, memory: memory, scale: scale)
                    metrics["\(memory)/\(scaleName)"] = Evaluate.metrics(good: Array(scores[0..<ng]), logical: Array(scores[ng..<(ng + nl)]),
                                                                         structural: Array(scores[(ng + nl)...]))
                }
            }
            let run = Run(lossSet: lossSet, metrics: metrics, segmentLosses: segmenter.epochLosses, unetLosses: unetLosses)
            try out?.distances(d, samples: testSamples, "\(tag)/evaluate/distances.csv")
            try out?.json(run, "\(tag)/evaluate/metrics.json")
            runs.append(run)
            clock.lap("evaluate[\(tag)]")
        }
        let pixel = try input.pixelMetrics(maps: patch.testMaps(size: size), fprLimit: s.fprLimit)
        clock.lap("pixel-metrics")
        let result = Result(category: category.name, runs: runs, pixel: pixel, stages: clock.records, peakIsPerStage: clock.peakIsPerStage)
        try out?.json(result, "result.json")
        return result
    }
}
