import Anomaly
import AtomicWrite
import Foundation
import Models
import Shared
import Tensor
import Vision

/// Builds an ``InspectionModel`` bundle from one evaluation of a sweep:
/// the trained pieces the sweep's jobs wrote, PatchCore's memory computed
/// again from the train images (patch-features keeps only scores), and a
/// threshold calibrated on `validation/good`.
public enum InspectionExport {
    /// What the sweep's jobs of one evaluation give.
    public struct Inputs: Sendable {
        public var sweep: String
        public var setting: String
        public var segment: OnData<StageSettings.SegmentTrain>
        /// The pseudo-labels' settings (their test-time views).
        public var pseudo: StageSettings.PseudoLabel
        public var patch: OnData<StageSettings.PatchFeatures>
        public var bank: OnData<StageSettings.BankFit>
        public var evaluate: StageSettings.Evaluate
        /// segment-train's files (the head; fine-tuned encoder units when it trained them).
        public var segmenter: [String: Data]
        /// The masks the banks were fitted on (pseudo-label's files), bank-fit's
        /// files (banks and distances), patch-features' scores, evaluate's files.
        public var masks: [String: Data], banks: [String: Data], patchScores: Data, evaluation: [String: Data]
        /// The UNet's settings when the masks are a retrained UNet's (`masks` then holds unet-train's files).
        public var unet: OnData<StageSettings.UNetTrain>?
        public init(sweep: String, setting: String, segment: OnData<StageSettings.SegmentTrain>, pseudo: StageSettings.PseudoLabel, patch: OnData<StageSettings.PatchFeatures>,
                    bank: OnData<StageSettings.BankFit>, evaluate: StageSettings.Evaluate, segmenter: [String: Data], masks: [String: Data],
                    banks: [String: Data], patchScores: Data, evaluation: [String: Data], unet: OnData<StageSettings.UNetTrain>? = nil) {
            self.sweep = sweep; self.setting = setting; self.segment = segment; self.pseudo = pseudo; self.patch = patch; self.bank = bank
            self.evaluate = evaluate; self.segmenter = segmenter; self.masks = masks; self.banks = banks; self.patchScores = patchScores
            self.evaluation = evaluation; self.unet = unet
        }
    }

    /// Writes the bundle to `out` (a folder that must not exist yet; it
    /// appears whole or not at all) and returns its description.
    /// `targetFPR`: the share of `validation/good` the threshold may call anomalous.
    @discardableResult
    public static func write(_ i: Inputs, to out: URL, targetFPR: Double = 0.01, log: (String) -> Void = { _ in }) throws -> InspectionModel.Description {
        guard !FileManager.default.fileExists(atPath: out.path) else { throw StageError("\(out.path) exists: give a new folder for the model") }
        guard (0...1).contains(targetFPR) else { throw StageError("--fpr \(targetFPR) is not a rate in [0, 1]") }
        let input = try i.segment.data.input()
        let validation = input.category[.validation]
        guard !validation.isEmpty else {
            throw StageError("\(input.root.path) has no validation/good images to calibrate the threshold on")
        }
        func file(_ files: [String: Data], _ name: String, of what: String) throws -> Data {
            guard let data = files[name] else { throw StageError("\(what) wrote no \(name)") }
            return data
        }
        // Checked before any encoding: an old bank-fit cannot give the part-instance or geometry bank.
        let distances = try ArtifactFormat.decode(ArtifactFormat.BankDistances.self, try file(i.banks, ArtifactFormat.bankDistances, of: "bank-fit"),
                                                  name: ArtifactFormat.bankDistances)
        let instanceBank = MemoryType(i.evaluate.memoryType).contains(.instances)
        let geometryBank = MemoryType(i.evaluate.memoryType).contains(.geometry)
        if let missing = EvaluateStage.missingBank(distances, memory: MemoryType(i.evaluate.memoryType)) {
            throw StageError("memory type \(i.evaluate.memoryType): the sweep's bank-fit wrote no \(missing): resubmit the sweep, then export")
        }
        var files: [String: Data] = [InspectionModel.headName: try file(i.segmenter, ArtifactFormat.head, of: "segment-train")]
        // The banks' train vectors in double precision, as bank-fit computed them (its banks.safetensors
        // holds them as 32-bit floats: banks rebuilt from those would score other digits).
        let b = i.bank.settings
        log("banks: the train images' part vectors with \(b.backbone.rawValue)")
        let bankKept = Array(input.category[.train].prefix(PatchFeaturesStage.memorySubset(input.category[.train].count, fraction: b.lessNormalFraction)))
        let trainMasks = try ArtifactFormat.readMasks(i.masks, samples: bankKept)
        let bankTaps = CategoryInput.taps(Array(try input.images(.train).prefix(bankKept.count)), backbone: try b.backbone.load())
        let vectors = zip(bankTaps, trainMasks).map {
            BankFit.vectors(taps: $0.0, labels: $0.1, height: input.size, width: input.size, classes: input.classes, strides: BankFit.Parameters().strides)
        }
        files[InspectionModel.banksName] = try ArtifactFormat.encode(InspectionModel.BankVectors(
            histogram: vectors.map(\.histogram), composition: vectors.map(\.composition), instances: instanceBank ? vectors.map(\.instances) : nil,
            geometry: geometryBank ? vectors.map(\.geometry) : nil))
        if let tuned = i.segmenter[ArtifactFormat.fineTunedEncoder] { files[InspectionModel.encoderName] = tuned }
        var unetShape: InspectionModel.UNetShape?
        if let unet = i.unet {
            files[InspectionModel.unetName] = try file(i.masks, ArtifactFormat.unet, of: "unet-train (a sweep from before it kept its network: run it again)")
            let defaults = UNetTrain.Parameters()
            unetShape = .init(width: unet.settings.unetWidth ?? defaults.width, depth: unet.settings.unetDepth ?? defaults.depth)
        }

        // PatchCore's memory, as patch-features built it: the kept train images in PatchCore's frame.
        let p = i.patch.settings
        log("PatchCore memory: encoding the train images at \(p.patchImageSize) px")
        let patchInput = input.inFrame(size: p.patchImageSize, fit: p.patchResize == .square ? .square : .pad)
        let kept = PatchFeaturesStage.memorySubset(input.category[.train].count, fraction: p.lessNormalFraction)
        let trainImages = Array(try patchInput.images(.train).prefix(kept))
        let taps = CategoryInput.taps(trainImages, backbone: try p.backbone.load())
        let memory = PatchStage.memory(taps.map(PatchStage.patches), coresetFraction: p.coresetFraction, probes: p.patchProbes, seed: p.seed ?? 0)
        files[InspectionModel.memoryName] = SafetensorsFile.encode(["memory": memory.index.memory])

        let scores = try ArtifactFormat.decode(ArtifactFormat.PatchScores.self, i.patchScores, name: ArtifactFormat.patchScores)
        let metrics = try ArtifactFormat.decode([String: Double].self, try file(i.evaluation, ArtifactFormat.metrics, of: "evaluate"), name: ArtifactFormat.metrics)
        let testScores = try ArtifactFormat.readScores(try file(i.evaluation, ArtifactFormat.scoresCSV, of: "evaluate"))
        var weights: [String: String] = [:]
        for backbone in Set([i.segment.settings.backbone, p.backbone, i.bank.settings.backbone]) {
            weights[backbone.rawValue] = try backbone.weightsDigest()
        }
        var description = InspectionModel.Description(
            format: geometryBank ? 5 : instanceBank ? 4 : i.evaluate.combine == nil ? 2 : 3, category: input.category.name, sweep: i.sweep, setting: i.setting,
            classes: input.classes, cropMargin: input.prep.cropMargin, imageSize: input.size,
            unet: unetShape,
            ttaAngles: i.pseudo.ttaViews.map { SegmentTrain.testTimeAngles(count: $0, rotationDegrees: input.manifest.augmentationRotationDegrees) },
            segmentBackbone: i.segment.settings.backbone, patchBackbone: p.backbone, bankBackbone: i.bank.settings.backbone,
            patchImageSize: p.patchImageSize, patchResize: p.patchResize, patchProbes: p.patchProbes, seed: p.seed ?? 0,
            epsilon: i.bank.settings.epsilon, trainStatistic: i.bank.settings.trainStatistic,
            memoryType: i.evaluate.memoryType, scaleType: i.evaluate.scaleType, combine: i.evaluate.combine, mapScale: scores.mapScale ?? 1,
            trainStatistics: .init(histogram: distances.histogramTrainStatistics, composition: distances.compositionTrainStatistics,
                                   patch: scores.train.map(Double.init), instances: instanceBank ? distances.instancesTrainStatistics : nil,
                                   geometry: geometryBank ? distances.geometryTrainStatistics : nil),
            weights: weights, files: files.mapValues(ArtifactStore.hash), threshold: .infinity,
            calibration: .init(targetFPR: targetFPR, validationImages: validation.count, validationFPR: 0,
                               testLogicalAUROC: metrics["logical_auroc"], testStructuralAUROC: metrics["structural_auroc"],
                               testImages: testScores.count))

        // Calibration: every validation/good image scored by the model itself.
        let model = try InspectionModel(description: description, files: files)
        log("calibrating on \(validation.count) validation/good images")
        let validationScores = model.predict(try validation.map { try CategoryInput.readImage($0.url) }).map(\.score)
        description.threshold = threshold(validationScores, fpr: targetFPR)
        let t = description.threshold
        func rate(_ split: String) -> Double? {
            let s = testScores.filter { $0.split == split }
            return s.isEmpty ? nil : Double(s.filter { $0.score > t }.count) / Double(s.count)
        }
        description.calibration.validationFPR = Double(validationScores.filter { $0 > t }.count) / Double(validationScores.count)
        description.calibration.testFPR = rate("good")
        description.calibration.testLogicalTPR = rate("logical_anomalies")
        description.calibration.testStructuralTPR = rate("structural_anomalies")

        // Whole or nothing: written beside, then renamed into place.
        let partial = out.deletingLastPathComponent().appendingPathComponent(".\(out.lastPathComponent).partial-\(getpid())")
        try? FileManager.default.removeItem(at: partial)
        try FileManager.default.createDirectory(at: partial, withIntermediateDirectories: true)
        for (name, data) in files { try AtomicFile.write(data, to: partial.appendingPathComponent(name)) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        try AtomicFile.write(try encoder.encode(description), to: partial.appendingPathComponent(InspectionModel.descriptionName))
        guard rename(partial.path, out.path) == 0 else {
            throw StageError("could not move the model into \(out.path): \(String(cString: strerror(errno)))")
        }
        return description
    }

    /// The lowest threshold that calls at most `fpr` of `scores` anomalous
    /// (a score above it is): the (floor(fpr n) + 1)-th largest score.
    public static func threshold(_ scores: [Double], fpr: Double) -> Double {
        let sorted = scores.sorted(by: >)
        guard !sorted.isEmpty else { return .greatestFiniteMagnitude }
        let allowed = Int((fpr * Double(sorted.count)).rounded(.down))
        return allowed >= sorted.count ? -.greatestFiniteMagnitude : sorted[allowed]
    }
}
