import Anomaly
import Foundation
import Models
import Shared
import Tensor
import Vision

// The seven stages of the method. Images are read from the dataset and
// preprocessed again where a stage needs them (cheaper than shipping them);
// everything computed travels as files (``ArtifactFormat`` names them all).

/// Reads every image and annotation once (bad input stops the category
/// here, before any training) and writes the few-shot masks.
public enum PreprocessStage: MethodStage {
    public static let name = "preprocess"
    public typealias Parameters = OnData<StageSettings.None>

    public static func run(_ job: Parameters, inputs: StageInputs, context: StageContext) throws -> StageOutput {
        let input = try job.data.input()
        let counts = Dictionary(uniqueKeysWithValues: try input.validate().map { ($0.key.rawValue, $0.value) })
        let labelled = try input.labelled(nShot: input.manifest.fewShot.count)
        var out = StageOutput(), names: [String] = []
        for (label, sample) in zip(input.manifest.fewShot, labelled) {
            let name = (label.image as NSString).lastPathComponent
            names.append(name)
            out.files[ArtifactFormat.fewShotMask(name)] = try PNG.encodeMask(sample.mask!)
        }
        out.files[ArtifactFormat.preprocessListing] = try ArtifactFormat.encode(ArtifactFormat.PreprocessListing(
            category: input.category.name, imageSize: input.size, classes: input.classes, fewShot: names, counts: counts))
        return out
    }
}

/// The few-shot segmenter: a head on the encoder's taps (frozen, or with
/// its last or all units trained too), trained on the labelled images and
/// every normal one.
public enum SegmentTrainStage: MethodStage {
    public static let name = "segment-train"
    public typealias Parameters = OnData<StageSettings.SegmentTrain>

    public static func run(_ job: Parameters, inputs: StageInputs, context: StageContext) throws -> StageOutput {
        let input = try job.data.input(), p = job.settings
        let backbone = try context.backbone(p.backbone)
        // Preprocess validated the annotations (its few_shot/ masks are for users);
        // importing them here again is cheaper than decoding its PNGs.
        let labelled = try input.labelled(nShot: p.nShot)
        let train = try input.images(.train), types = input.productTypes
        var sp = SegmentTrainParameters()
        sp.epochs = p.epochs
        sp.seed = p.seed
        sp.lossSet = p.lossSet
        sp.rotationDegrees = input.manifest.augmentationRotationDegrees
        if let v = p.viewsPerLabelledImage { sp.viewsPerLabelledImage = v }
        if let v = p.batchPairs { sp.batchPairs = v }
        if let v = p.learningRate { sp.learningRate = v }
        sp.finetune = p.finetune ?? .head
        sp.viewReuse = p.viewReuse ?? 1
        try context.advance(0, sp.epochs, "epochs")
        // The frozen taps, where the head trains on them or the trained units start after them.
        let trainTaps = sp.finetune == .all ? nil : try context.taps(.train, of: input, backbone: p.backbone, loaded: train)
        let result = try SegmentTrain.run(labelled: labelled, unlabelled: train.indices.map { SegmentationSample(image: train[$0], productType: types[$0]) },
                                      classes: input.classes, histogramClasses: input.manifest.histogramClasses, backbone: backbone,
                                      parameters: sp, unlabelledTaps: trainTaps, encoder: try p.backbone.trainingEncoder(sp.finetune),
                                      checkpoints: context.checkpoints, progress: { epoch, _ in try context.advance(epoch + 1, sp.epochs, "epochs") })
        var out = StageOutput(files: [ArtifactFormat.head: SafetensorsFile.encode(result.head.tensors),
                                      ArtifactFormat.losses: try JSONEncoder().encode(result.epochLosses)],
                              metrics: ["final_loss": Double(result.epochLosses.last ?? 0)])
        if let tuned = result.encoder { out.files[ArtifactFormat.fineTunedEncoder] = SafetensorsFile.encode(tuned) }
        out.profile = result.profile
        return out
    }
}

/// The segmenter's masks of every train and test image.
public enum PseudoLabelStage: MethodStage {
    public static let name = "pseudo-label"
    public typealias Parameters = OnData<StageSettings.PseudoLabel>

    public static func run(_ job: Parameters, inputs: StageInputs, context: StageContext) throws -> StageOutput {
        let input = try job.data.input(), p = job.settings
        let backbone = try context.backbone(p.backbone)
        let head = try SegmentationHead(file: try SafetensorsFile(data: try inputs.file("segmenter", ArtifactFormat.head), source: ArtifactFormat.head))
        let angles = SegmentTrain.testTimeAngles(count: p.ttaViews ?? 0, rotationDegrees: input.manifest.augmentationRotationDegrees)
        let masks: [[Int32]]
        if let tuned = try inputs.role("segmenter")[ArtifactFormat.fineTunedEncoder] {
            // The encoder trained with the head: its units laid over the installed weights.
            let file = try SafetensorsFile(data: tuned, source: ArtifactFormat.fineTunedEncoder)
            let tensors = try Dictionary(uniqueKeysWithValues: file.entries.map { ($0.name, try file.tensor($0.name)) })
            let encoder = try p.backbone.load(weights: WeightSet(overlay: tensors, over: p.backbone.weights()))
            masks = SegmentTrain.pseudoLabels(head, images: try input.images(.train) + input.testImages(), backbone: encoder, angles: angles)
        } else if context.cachesTaps {
            let taps = try context.taps(.train, of: input, backbone: p.backbone) + context.taps(.test, of: input, backbone: p.backbone)
            if angles.isEmpty {
                masks = taps.map { SegmentTrain.pseudoLabels(head, taps: $0, height: input.size, width: input.size) }
            } else {
                let images = try input.images(.train) + input.testImages()
                masks = Compute.mapAcrossThreads(images.count) { i in
                    SegmentTrain.pseudoLabels(head, image: images[i], taps: taps[i], angles: angles, backbone: backbone)
                }
            }
        } else {
            // One image's taps at a time (a category's are hundreds of MB).
            masks = SegmentTrain.pseudoLabels(head, images: try input.images(.train) + input.testImages(), backbone: backbone, angles: angles)
        }
        return StageOutput(files: try ArtifactFormat.maskFiles(masks, samples: input.category[.train] + input.testSamples, size: input.size))
    }
}

/// A UNet retrained on the pseudo-labels; its masks replace them.
public enum UNetTrainStage: MethodStage {
    public static let name = "unet-train"
    public typealias Parameters = OnData<StageSettings.UNetTrain>

    public static func run(_ job: Parameters, inputs: StageInputs, context: StageContext) throws -> StageOutput {
        let input = try job.data.input(), p = job.settings
        let train = try input.images(.train)
        let labels = try ArtifactFormat.readMasks(try inputs.role("pseudo_labels"), samples: input.category[.train])
        var up = UNetTrain.Parameters()
        up.epochs = p.unetEpochs
        up.seed = p.seed
        up.rotationDegrees = input.manifest.augmentationRotationDegrees
        if let v = p.unetWidth { up.width = v }
        if let v = p.unetDepth { up.depth = v }
        if let v = p.unetBatch { up.batch = v }
        try context.advance(0, up.epochs, "epochs")
        let unet = try UNetTrain.run(images: train, labels: labels, classes: input.classes, parameters: up, checkpoints: context.checkpoints,
                                 progress: { epoch, _ in try context.advance(epoch + 1, up.epochs, "epochs") })
        let masks = UNetTrain.masks(unet.net, images: train) + UNetTrain.masks(unet.net, images: try input.testImages())
        var out = StageOutput(files: try ArtifactFormat.maskFiles(masks, samples: input.category[.train] + input.testSamples, size: input.size))
        out.files[ArtifactFormat.losses] = try JSONEncoder().encode(unet.epochLosses)
        out.files[ArtifactFormat.unet] = SafetensorsFile.encode(unet.net.tensors)
        out.profile = unet.profile
        return out
    }
}

/// PatchCore: nearest-neighbour patch distances against the train images'
/// patches, image scores, anomaly maps and the pixel metrics.
public enum PatchFeaturesStage: MethodStage {
    public static let name = "patch-features"
    public typealias Parameters = OnData<StageSettings.PatchFeatures>

    public static func run(_ job: Parameters, inputs: StageInputs, context: StageContext) throws -> StageOutput {
        let input = try job.data.input(), p = job.settings
        // PatchCore's own input (the reference: the image resized to 256 x 256); maps come back to the preprocessed frame.
        let patchInput = input.inFrame(size: p.patchImageSize, fit: p.patchResize == .square ? .square : .pad)
        let trainSamples = input.category[.train]
        let kept = memorySubset(trainSamples.count, fraction: p.lessNormalFraction)
        let tests = input.testSamples.count
        // Progress: every image encoded (train, then test), then every image scored.
        let count = kept + tests
        try context.advance(0, 2 * count, "image steps")
        let trainTaps = Array(try context.taps(.train, of: patchInput, backbone: p.backbone).prefix(kept))
        try context.advance(kept, 2 * count, "image steps")
        let testTaps = try context.taps(.test, of: patchInput, backbone: p.backbone)
        try context.advance(count, 2 * count, "image steps")
        let patch = try PatchStage.run(trainTaps: trainTaps, testTaps: testTaps, coresetFraction: p.coresetFraction, probes: p.patchProbes, seed: p.seed ?? 0,
                                   scored: { try context.advance(count + $0, 2 * count, "image steps") })
        let maps = try input.maps(patch.testMaps(size: patchInput.size), from: patchInput)
        let fprLimit = p.fprLimit ?? 0.05
        let pixel = try input.pixelMetrics(maps: maps, fprLimit: fprLimit)
        let (images, scale) = try MapImages.encode(maps, size: input.size)
        var out = StageOutput()
        out.files[ArtifactFormat.patchScores] = try ArtifactFormat.encode(ArtifactFormat.PatchScores(
            train: patch.trainScores, test: patch.testScores, pixelAUROC: pixel?.pixelAUROC, spro: pixel?.spro,
            fprLimit: fprLimit, testDefectTypes: try input.testDefectTypes(), mapScale: scale))
        out.files[ArtifactFormat.patchDistances] = SafetensorsFile.encode([
            "test_patch_distances": Tensor(shape: [patch.testPatchDistances.count, patch.gridHeight, patch.gridWidth],
                                           storage: patch.testPatchDistances.flatMap { $0 })])
        for (sample, png) in zip(input.testSamples, images) { out.files[ArtifactFormat.map(sample)] = png }
        out.metrics["map_scale"] = Double(scale)
        return out
    }

    /// Train images kept in memory with the less-normal-data option: the first ceil(N * fraction), at least 2.
    public static func memorySubset(_ count: Int, fraction: Double) -> Int {
        min(count, max(2, Int((Double(count) * fraction).rounded(.up))))
    }
}

/// The histogram and composition banks from the train images' masks, and
/// every test image's distance to them.
public enum BankFitStage: MethodStage {
    public static let name = "bank-fit"
    public typealias Parameters = OnData<StageSettings.BankFit>

    public static func run(_ job: Parameters, inputs: StageInputs, context: StageContext) throws -> StageOutput {
        let input = try job.data.input(), p = job.settings
        let size = input.size
        var bp = BankFit.Parameters()
        bp.epsilon = p.epsilon
        bp.trainStatistic = (p.trainStatistic == .reference ? MemoryBank.TrainStatistic.reference : .leaveOneOut).rawValue
        let trainSamples = input.category[.train]
        let kept = PatchFeaturesStage.memorySubset(trainSamples.count, fraction: p.lessNormalFraction)
        let masks = try inputs.role("masks")
        let trainMasks = try ArtifactFormat.readMasks(masks, samples: Array(trainSamples.prefix(kept)))
        let testMasks = try ArtifactFormat.readMasks(masks, samples: input.testSamples)
        func vectors(_ taps: [[Int: Tensor]], _ masks: [[Int32]]) -> [PartVectors] {
            zip(taps, masks).map { BankFit.vectors(taps: $0.0, labels: $0.1, height: size, width: size, classes: input.classes, strides: bp.strides) }
        }
        let trainTaps = Array(try context.taps(.train, of: input, backbone: p.backbone).prefix(kept))
        let trainVectors = vectors(trainTaps, trainMasks)
        let banks = BankFit.run(trainVectors: trainVectors, parameters: bp)
        let testTaps = try context.taps(.test, of: input, backbone: p.backbone)
        let testVectors = vectors(testTaps, testMasks)
        let test = testVectors.map(banks.distances)
        let record = ArtifactFormat.BankDistances(histogram: test.map(\.histogram), composition: test.map(\.composition),
                                                  histogramTrainStatistics: banks.histogramTrainStatistics,
                                                  compositionTrainStatistics: banks.compositionTrainStatistics,
                                                  instances: test.map(\.instances), instancesTrainStatistics: banks.instancesTrainStatistics,
                                                  geometry: test.map(\.geometry), geometryTrainStatistics: banks.geometryTrainStatistics,
                                                  good: input.category[.testGood].count, logical: input.category[.testLogical].count)
        func matrix(_ rows: [[Double]]) -> Tensor { Tensor(shape: [rows.count, rows.first?.count ?? 0], storage: rows.flatMap { $0.map(Float.init) }) }
        func vector(_ v: [Double]) -> Tensor { Tensor(shape: [v.count], storage: v.map(Float.init)) }
        return StageOutput(files: [
            ArtifactFormat.bankDistances: try ArtifactFormat.encode(record),
            ArtifactFormat.banks: SafetensorsFile.encode([
                "train_histogram": matrix(trainVectors.map(\.histogram)),
                "train_composition": matrix(trainVectors.map(\.composition)),
                "test_histogram": matrix(testVectors.map(\.histogram)),
                "test_composition": matrix(testVectors.map(\.composition)),
                "train_instances": matrix(trainVectors.map(\.instances)),
                "test_instances": matrix(testVectors.map(\.instances)),
                "train_geometry": matrix(trainVectors.map(\.geometry)),
                "test_geometry": matrix(testVectors.map(\.geometry)),
                "geometry_mean": vector(banks.geometryStandardizer.mean),
                "geometry_std": vector(banks.geometryStandardizer.std),
                "histogram_mean": vector(banks.histogramStandardizer.mean),
                "histogram_std": vector(banks.histogramStandardizer.std),
                "composition_mean": vector(banks.compositionStandardizer.mean),
                "composition_std": vector(banks.compositionStandardizer.std),
                "histogram_train_statistics": vector(banks.histogramTrainStatistics),
                "composition_train_statistics": vector(banks.compositionTrainStatistics),
                "instances_train_statistics": vector(banks.instancesTrainStatistics),
                "geometry_train_statistics": vector(banks.geometryTrainStatistics)]),
        ])
    }
}

/// One memory and scale type: the final scores, image AUROC for logical and
/// structural anomalies (and per defect type), ROC curves, the pixel metrics
/// carried from patch-features.
public enum EvaluateStage: MethodStage {
    public static let name = "evaluate"
    public typealias Parameters = StageSettings.Evaluate

    /// The project's bank a memory type needs that an older bank-fit did not
    /// write, said as "part-instance distances (written by bank-fit before
    /// code version 6)"; nil when every bank it needs is there.
    public static func missingBank(_ d: ArtifactFormat.BankDistances, memory: MemoryType) -> String? {
        let banks = [(MemoryType.instances, "part-instance", 6, d.instances != nil && d.instancesTrainStatistics != nil),
                     (.geometry, "part-geometry", 7, d.geometry != nil && d.geometryTrainStatistics != nil)]
        return banks.first { memory.contains($0.0) && !$0.3 }.map { "\($0.1) distances (written by bank-fit before code version \($0.2))" }
    }

    public static func run(_ p: Parameters, inputs: StageInputs, context: StageContext) throws -> StageOutput {
        let d = try ArtifactFormat.decode(ArtifactFormat.BankDistances.self, try inputs.file("banks", ArtifactFormat.bankDistances),
                                          name: ArtifactFormat.bankDistances)
        let patch = try ArtifactFormat.decode(ArtifactFormat.PatchScores.self, try inputs.file("patch", ArtifactFormat.patchScores),
                                              name: ArtifactFormat.patchScores)
        guard patch.test.count == d.histogram.count else {
            throw StageError("patch scores for \(patch.test.count) test images, bank distances for \(d.histogram.count)", permanent: false)
        }
        let memory = MemoryType(p.memoryType)
        if let missing = Self.missingBank(d, memory: memory) {
            throw StageError("memory type \(p.memoryType): \(ArtifactFormat.bankDistances) has no \(missing); resubmit the sweep for a current bank-fit",
                             permanent: true)
        }
        let test = Evaluate.BankDistances(histogram: d.histogram, composition: d.composition, patch: patch.test.map(Double.init),
                                          instances: d.instances ?? [], geometry: d.geometry ?? [])
        let train = Evaluate.BankDistances(histogram: d.histogramTrainStatistics, composition: d.compositionTrainStatistics,
                                           patch: patch.train.map(Double.init), instances: d.instancesTrainStatistics ?? [],
                                           geometry: d.geometryTrainStatistics ?? [])
        let scores = Evaluate.scores(test, train: train, memory: memory, scale: ScaleType(p.scaleType),
                                     combine: p.combine ?? .sum)
        let curves = Evaluate.curves(good: Array(scores[0..<d.good]), logical: Array(scores[d.good..<(d.good + d.logical)]),
                                     structural: Array(scores[(d.good + d.logical)...]))
        var metrics = Evaluate.Metrics(logicalAUROC: curves.logical?.area, structuralAUROC: curves.structural?.area).named
        if let v = patch.pixelAUROC { metrics["pixel_auroc"] = v }
        if let v = patch.spro { metrics["spro"] = v }
        let rows = scores.enumerated().map { i, s in
            (split: i < d.good ? "good" : i < d.good + d.logical ? "logical_anomalies" : "structural_anomalies", score: s)
        }
        func points(_ roc: ROC) -> RocPoints { RocPoints(fpr: roc.falsePositiveRates, tpr: roc.truePositiveRates) }
        var files = [ArtifactFormat.metrics: try ArtifactFormat.encode(metrics),
                     ArtifactFormat.roc: try ArtifactFormat.encode(["logical": curves.logical.map(points),
                                                                    "structural": curves.structural.map(points)].compactMapValues { $0 }),
                     ArtifactFormat.scoresCSV: ArtifactFormat.scores(rows)]
        if let types = patch.testDefectTypes, types.count == scores.count, types[d.good...].contains(where: { !$0.isEmpty }) {
            files[ArtifactFormat.defectTypes] = try ArtifactFormat.encode(Evaluate.byDefectType(scores: scores, types: types, good: d.good, logical: d.logical))
        }
        return StageOutput(files: files, metrics: metrics)
    }
}
