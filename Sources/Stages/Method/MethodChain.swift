import Anomaly
import AtomicWrite
import Foundation
import Shared
import Vision

/// Every stage for one category in one process (`psad-worker method`): the
/// same ``MethodStage`` values a sweep's workers run, chained with their
/// files passed in memory, and the encoder's taps computed once per image
/// and shared by the stages (a sweep's jobs each compute their own).
///
/// Several loss sets may be given (the paper's loss ablation): preprocess
/// and patch-features do not depend on the segmenter and run once.
public enum MethodChain {
    public struct Settings: Codable, Equatable, Sendable {
        public var nShot = 5
        public var epochs = 100
        /// One segmenter per loss set.
        public var lossSets: [LossSet] = [.supEntropyHistogram]
        /// UNet retraining; 0 skips it and the banks use the segmenter's own masks.
        public var unetEpochs = 0
        public var epsilon = Standardizer.referenceEpsilon
        public var trainStatistic = TrainStatisticName.leaveOneOut
        public var memoryTypes: [MemoryCombination] = ["h", "c", "p", "hc", "hcp"].compactMap(MemoryCombination.init)
        public var scaleTypes: [ScaleName] = [.max, .none]
        /// How the banks' scaled distances combine (each gives its own metrics).
        public var combines: [BankCombine] = [.sum]
        /// Overrides the manifest's target size when set.
        public var imageSize: Int?
        public var backbone = BackboneName.efficientNetLite0
        /// PatchCore's and the banks' backbones (nil: the encoder's).
        public var patchBackbone: BackboneName?, bankBackbone: BackboneName?
        public var fprLimit = 0.05
        /// Share of the train patches kept in PatchCore's memory (greedy
        /// k-center coreset); 1 keeps all, as the reference does.
        public var coresetFraction = 1.0
        /// PatchCore's search: nil exact (the reference); N: inverted lists, N probed per query.
        public var patchProbes: Int?
        /// Share of the train images in the memories (the less-normal-data ablation).
        public var lessNormalFraction = 1.0
        /// PatchCore's input side and fit (the reference: 256, square).
        public var patchImageSize = 256
        public var patchResize = PatchResize.square
        public var seed: UInt64 = 0
        /// Training knobs left at the stages' defaults unless set (tests shrink them).
        public var viewsPerLabelledImage: Int?, batchPairs: Int?, learningRate: Float?
        /// What trains in segment-train besides the head (nil: the head only).
        public var finetune: Finetune?
        /// Draws a fresh labelled view serves on average (nil: 1, the reference).
        public var viewReuse: Int?
        /// Rotated views the pseudo-labels average with each image's own (nil: none).
        public var ttaViews: Int?
        public var unetWidth: Int?, unetDepth: Int?, unetBatch: Int?
        public init() {}
    }

    /// What one loss set gives.
    public struct Run: Codable, Sendable {
        public var lossSet: LossSet
        /// "memory/scale" (the sum) or "memory/scale/max" -> image metrics.
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

    /// - Parameter artifacts: where to write every stage's files: `preprocess/`,
    ///   `patch-features/`, `<loss set>/<stage>/`, `<loss set>/evaluate/<memory>-<scale>/`
    ///   and `result.json`; nothing is written when nil.
    public static func run(categoryRoot: URL, settings s: Settings, artifacts: URL? = nil,
                           log: @escaping (String) -> Void = { _ in }) throws -> Result {
        var clock = StageRecorder(log: log)
        let context = StageContext(cacheTaps: true)
        let size = try CategoryInput(root: categoryRoot, imageSize: s.imageSize).size
        let data = DataFields(dataset: categoryRoot.deletingLastPathComponent().path, category: categoryRoot.lastPathComponent, imageSize: size)
        func write(_ output: StageOutput, _ folder: String) throws {
            guard let artifacts else { return }
            for (name, bytes) in output.files {
                let url = artifacts.appendingPathComponent(folder).appendingPathComponent(name)
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try AtomicFile.write(bytes, to: url)
            }
        }

        let preprocessed = try PreprocessStage.run(OnData(data, StageSettings.None()), inputs: StageInputs(), context: context)
        try write(preprocessed, "preprocess")
        clock.lap("preprocess")
        let patch = try PatchFeaturesStage.run(OnData(data, .init(backbone: s.patchBackbone ?? s.backbone, patchImageSize: s.patchImageSize,
                                                                  patchResize: s.patchResize, lessNormalFraction: s.lessNormalFraction,
                                                                  coresetFraction: s.coresetFraction, patchProbes: s.patchProbes,
                                                                  seed: s.seed, fprLimit: s.fprLimit)),
                                               inputs: StageInputs(["preprocessed": preprocessed.files]), context: context)
        try write(patch, "patch-features")
        clock.lap("patch-features")

        var runs: [Run] = []
        for lossSet in s.lossSets {
            let tag = lossSet.rawValue
            let segmenter = try SegmentTrainStage.run(OnData(data, .init(backbone: s.backbone, nShot: s.nShot, epochs: s.epochs, lossSet: lossSet,
                                                                         seed: s.seed, viewsPerLabelledImage: s.viewsPerLabelledImage,
                                                                         batchPairs: s.batchPairs, learningRate: s.learningRate,
                                                                         finetune: s.finetune, viewReuse: s.viewReuse)),
                                                      inputs: StageInputs(["preprocessed": preprocessed.files]), context: context)
            try write(segmenter, "\(tag)/segment-train")
            clock.lap("segment-train[\(tag)]")
            let pseudo = try PseudoLabelStage.run(OnData(data, .init(backbone: s.backbone, ttaViews: s.ttaViews)),
                                                  inputs: StageInputs(["segmenter": segmenter.files]), context: context)
            try write(pseudo, "\(tag)/pseudo-label")
            clock.lap("pseudo-label[\(tag)]")
            var masks = pseudo, unetLosses: [Float] = []
            if s.unetEpochs > 0 {
                masks = try UNetTrainStage.run(OnData(data, .init(unetEpochs: s.unetEpochs, seed: s.seed, unetWidth: s.unetWidth,
                                                                  unetDepth: s.unetDepth, unetBatch: s.unetBatch)),
                                               inputs: StageInputs(["pseudo_labels": pseudo.files]), context: context)
                unetLosses = try losses(masks)
                try write(masks, "\(tag)/unet-train")
                clock.lap("unet-train[\(tag)]")
            }
            let banks = try BankFitStage.run(OnData(data, .init(backbone: s.bankBackbone ?? s.backbone, epsilon: s.epsilon, trainStatistic: s.trainStatistic,
                                                                lessNormalFraction: s.lessNormalFraction)),
                                             inputs: StageInputs(["masks": masks.files, "preprocessed": preprocessed.files]), context: context)
            try write(banks, "\(tag)/bank-fit")
            clock.lap("bank-fit[\(tag)]")
            var metrics: [String: Evaluate.Metrics] = [:]
            for memory in s.memoryTypes {
                // One bank's maximum is its sum: evaluated once.
                for scale in s.scaleTypes { for combine in memory.letters.count == 1 ? [.sum] : s.combines {
                    let evaluated = try EvaluateStage.run(.init(memoryType: memory, scaleType: scale, combine: combine),
                                                          inputs: StageInputs(["banks": banks.files, "patch": patch.files]), context: context)
                    let name = "\(memory)/\(scale.rawValue)" + (combine == .sum ? "" : "/\(combine.rawValue)")
                    try write(evaluated, "\(tag)/evaluate/" + name.replacingOccurrences(of: "/", with: "-"))
                    metrics[name] = Evaluate.Metrics(logicalAUROC: evaluated.metrics["logical_auroc"],
                                                     structuralAUROC: evaluated.metrics["structural_auroc"])
                } }
            }
            clock.lap("evaluate[\(tag)]")
            runs.append(Run(lossSet: lossSet, metrics: metrics, segmentLosses: try losses(segmenter), unetLosses: unetLosses))
        }
        let scores = try ArtifactFormat.decode(ArtifactFormat.PatchScores.self, patch.files[ArtifactFormat.patchScores] ?? Data(),
                                               name: ArtifactFormat.patchScores)
        let pixel = scores.pixelAUROC.flatMap { auroc in
            scores.spro.map { PixelMetrics.Result(pixelAUROC: auroc, spro: $0, fprLimit: scores.fprLimit ?? s.fprLimit) }
        }
        let result = Result(category: categoryRoot.lastPathComponent, runs: runs, pixel: pixel, stages: clock.records, peakIsPerStage: clock.peakIsPerStage)
        if let artifacts { try AtomicFile.write(try ArtifactFormat.encode(result), to: artifacts.appendingPathComponent("result.json")) }
        return result
    }

    /// A training stage's loss per epoch.
    static func losses(_ output: StageOutput) throws -> [Float] {
        try ArtifactFormat.decode([Float].self, output.files[ArtifactFormat.losses] ?? Data(), name: ArtifactFormat.losses)
    }
}
