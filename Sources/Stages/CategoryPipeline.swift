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
        let category = try LocoCategory(root: categoryRoot)
        let manifest = try CategoryManifest.load(categoryRoot: categoryRoot)
        var prepSettings = manifest.preprocess
        if let size = s.imageSize { prepSettings.targetSize = size }
        let prep = Preprocessor(prepSettings)
        let classes = manifest.classCount
        let size = prep.targetSize

        // preprocess
        func load(_ split: Split) throws -> [Image] {
            try category[split].map { prep.image(try readImage($0.url)) }
        }
        let train = try load(.train), good = try load(.testGood)
        let logical = try load(.testLogical), structural = try load(.testStructural)
        let testSamples = category[.testGood] + category[.testLogical] + category[.testStructural]
        let types = manifest.productTypeIndex(ofTrain: category[.train], categoryRoot: categoryRoot)
        var labelled: [SegmentationSample] = []
        for label in manifest.fewShot.prefix(s.nShot) {
            let native = try readImage(categoryRoot.appendingPathComponent(label.image))
            let mask = try AnnotationImport.mask(for: label, manifest: manifest, categoryRoot: categoryRoot,
                                                 imageWidth: native.width, imageHeight: native.height)
            let position = category[.train].firstIndex { $0.url.lastPathComponent == (label.image as NSString).lastPathComponent }
            labelled.append(SegmentationSample(image: prep.image(native), mask: prep.mask(mask), productType: position.flatMap { types[$0] }))
            try out?.mask(prep.mask(mask), "preprocess/few_shot/\((label.image as NSString).lastPathComponent)")
        }
        clock.lap("preprocess")

        // encoder taps, once per image
        let tests = good + logical + structural
        func taps(_ images: [Image]) -> [[Int: Tensor]] {
            images.map { backbone.features(ImageNormalization.imagenet($0.tensor()), strides: [4, 8, 16]) }
        }
        let trainTaps = taps(train), testTaps = taps(tests)
        clock.lap("encode")

        // patch-features (independent of the segmenter)
        let patch = PatchStage.run(trainTaps: trainTaps, testTaps: testTaps)
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
        let pixel = try pixelMetrics(category: category, prep: prep, patch: patch, goodCount: ng, size: size, fprLimit: s.fprLimit)
        clock.lap("pixel-metrics")
        let result = Result(category: category.name, runs: runs, pixel: pixel, stages: clock.records, peakIsPerStage: clock.peakIsPerStage)
        try out?.json(result, "result.json")
        return result
    }

    /// Pixel metrics in the preprocessed frame: anomaly maps at the
    /// preprocessing size, ground-truth regions preprocessed like masks,
    /// padding left out, absolute saturation thresholds rescaled by the area ratio.
    static func pixelMetrics(category: LocoCategory, prep: Preprocessor, patch: PatchStage.Result, goodCount: Int,
                             size: Int, fprLimit: Double) throws -> PixelMetrics.Result? {
        let anomalousSamples = category[.testLogical] + category[.testStructural]
        guard anomalousSamples.contains(where: { !$0.groundTruth.isEmpty }) else { return nil }
        let native = try readImage(category[.testGood][0].url)
        let (w, h) = prep.resizedSize(width: native.width, height: native.height)
        let areaRatio = Double(w * h) / Double((native.width - 2 * prep.cropMargin) * (native.height - 2 * prep.cropMargin))
        func map(_ i: Int) -> [Float] {
            let full = AnomalyMap.from(patchDistances: patch.testPatchDistances[i], gridHeight: patch.gridHeight,
                                       gridWidth: patch.gridWidth, height: size, width: size)
            return (0..<h).flatMap { y in (0..<w).map { x in full.storage[y * size + x] } }
        }
        func unpadded(_ mask: Image) -> Image {
            Image(width: w, height: h, channels: 1, pixels: (0..<h).flatMap { y in Array(mask.pixels[(y * size)..<(y * size + w)]) })
        }
        let goodMaps = (0..<goodCount).map(map)
        let anomalous = try anomalousSamples.enumerated().map { k, sample in
            PixelMetrics.AnomalousImage(map: map(goodCount + k),
                                        regions: try sample.groundTruth.map { unpadded(prep.mask(try PNG.read($0, mode: .indices))) })
        }
        let defects = category.defects.map { d -> DefectConfig in
            var scaled = d
            if !d.relativeSaturation { scaled.saturationThreshold = d.saturationThreshold * areaRatio }
            return scaled
        }
        return try PixelMetrics.compute(goodMaps: goodMaps, anomalous: anomalous, defects: defects, fprLimit: fprLimit)
    }

    static func readImage(_ url: URL) throws -> Image {
        do { return try PNG.read(url).rgb() } catch { throw DatasetError.badImage(file: url.path, detail: "\(error)") }
    }
}
