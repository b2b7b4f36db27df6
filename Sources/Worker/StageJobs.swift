import Anomaly
import Foundation
import Models
import Shared
import Stages
import Tensor
import Vision

/// Runs one method stage job (DESIGN.md, Stages and the DAG): typed
/// parameters from the job, input artifacts from upstream jobs, outputs as
/// files users read. Images are read from the dataset (workers see it at
/// the sweep's `dataset` path) and preprocessed again where needed —
/// cheaper than shipping them; everything computed travels as artifacts:
///
/// | stage | outputs |
/// |---|---|
/// | preprocess | `preprocess.json` (listing, checked readable), `few_shot/<image>.png` masks |
/// | segment-train | `head.safetensors`, `losses.json` |
/// | pseudo-label | `masks/<split>/<id>.png` for train and test images |
/// | unet-train | `masks/<split>/<id>.png` from the UNet, `losses.json` |
/// | patch-features | `scores.json` (train leave-one-out, test; pixel metrics; each test image's defect types), `patch_distances.safetensors`, `maps/<split>/<id>.png` |
/// | bank-fit | `banks.safetensors`, `distances.json` (test distances, train statistics) |
/// | evaluate | `metrics.json`, `roc.json` (false- and true-positive rates per anomaly split), `scores.csv`, `defect_types.json` (AUROC per defect type, where the data has ground truth); metrics reported to the coordinator |
///
/// Bad input (a dataset error, an unreadable image or annotation) fails the
/// job permanently: retrying cannot fix it.
enum StageJobs {
    static let kinds: [StageKind] = [.preprocess, .segmentTrain, .pseudoLabel, .unetTrain, .patchFeatures, .bankFit, .evaluate]

    struct JobError: Error, CustomStringConvertible {
        let description: String
        var permanent = true
    }

    struct Job {
        let kind: StageKind
        let parameters: [String: ParameterValue]
        let inputs: [String: [String: Data]]
        var progress: ProgressSink = { _, _, _ in }

        func string(_ name: String) throws -> String {
            guard case .string(let s)? = parameters[name] else { throw JobError(description: "the job has no string parameter '\(name)'") }
            return s
        }
        func int(_ name: String) throws -> Int {
            guard case .int(let i)? = parameters[name] else { throw JobError(description: "the job has no integer parameter '\(name)'") }
            return i
        }
        func double(_ name: String) throws -> Double {
            switch parameters[name] {
            case .double(let d)?: return d
            case .int(let i)?: return Double(i)
            default: throw JobError(description: "the job has no number parameter '\(name)'")
            }
        }
        func input(_ role: String) throws -> [String: Data] {
            guard let files = inputs[role] else { throw JobError(description: "the job has no input '\(role)'", permanent: false) }
            return files
        }
        func file(_ role: String, _ name: String) throws -> Data {
            guard let data = try input(role)[name] else { throw JobError(description: "input '\(role)' has no output '\(name)'", permanent: false) }
            return data
        }
        /// The category's images as the job's parameters name them; where the
        /// sweep recorded the folder's digest at submit, the folder here must
        /// still have it (or the job would compute from other data under the key).
        func category() throws -> CategoryInput {
            let root = URL(fileURLWithPath: try string("dataset")).appendingPathComponent(try string("category"))
            if case .string(let expected)? = parameters["data_digest"] {
                let here: DatasetDigest.Summary
                do { here = try DatasetDigest.of(categoryAt: root) } catch { throw JobError(description: "\(error)") }
                guard here.hex == expected else {
                    throw JobError(description: "\(root.path) is not the data this sweep was submitted with (digest \(here.hex.prefix(12)) "
                                   + "here over \(here.files) files, \(expected.prefix(12)) at submit): it changed since, or this worker "
                                   + "sees other files at that path; submit again to compute from what is there now")
                }
            }
            return try CategoryInput(root: root, imageSize: try int("image_size"))
        }
        func backbone() throws -> any Backbone {
            let name = try string("backbone")
            if name == "efficientnet-lite0" { return try EfficientNetLite.pretrainedLite0() }
            guard let config = ResNet.Config.all.first(where: { $0.name == name }) else { throw JobError(description: "unknown backbone '\(name)'") }
            return try ResNet.pretrained(config, depth: 3)
        }
    }

    /// Where a stage says how far it is: done, total, unit.
    typealias ProgressSink = @Sendable (Int, Int, String) -> Void

    static func run(_ message: WireMessage.Job, inputs: [String: [String: Data]], progress: @escaping ProgressSink = { _, _, _ in }) -> StageOutcome {
        do {
            let parameters = try JSONDecoder().decode([String: ParameterValue].self, from: Data(message.parameters.utf8))
            return try run(Job(kind: message.kind, parameters: parameters, inputs: inputs, progress: progress))
        } catch let e as JobError {
            return StageOutcome(error: e.description, permanent: e.permanent)
        } catch let e as DatasetError {
            return StageOutcome(error: "\(e)", permanent: true)
        } catch let e as PNGError {
            return StageOutcome(error: "\(e)", permanent: true)
        } catch {
            return StageOutcome(error: "\(error)", permanent: false)
        }
    }

    static func run(_ job: Job) throws -> StageOutcome {
        switch job.kind {
        case .preprocess: return try preprocess(job)
        case .segmentTrain: return try segmentTrain(job)
        case .pseudoLabel: return try pseudoLabel(job)
        case .unetTrain: return try unetTrain(job)
        case .patchFeatures: return try patchFeatures(job)
        case .bankFit: return try bankFit(job)
        case .evaluate: return try evaluate(job)
        case .diagnostic: throw JobError(description: "diagnostic jobs are not method stages")
        }
    }

    // MARK: - the stages

    static func preprocess(_ job: Job) throws -> StageOutcome {
        let input = try job.category()
        // Every image and ground-truth mask read once: bad input stops the category here, before any training.
        let counts = Dictionary(uniqueKeysWithValues: try input.validate().map { ($0.key.rawValue, $0.value) })
        let labelled = try input.labelled(nShot: input.manifest.fewShot.count)
        var out = StageOutcome()
        var names: [String] = []
        for (label, sample) in zip(input.manifest.fewShot, labelled) {
            let name = (label.image as NSString).lastPathComponent
            names.append(name)
            out.outputs["few_shot/\(name)"] = try PNG.encodeMask(sample.mask!)
        }
        out.outputs["preprocess.json"] = try json(["category": .string(input.category.name), "image_size": .int(input.size),
                                                   "classes": .int(input.classes), "few_shot": .strings(names), "counts": .counts(counts)])
        return out
    }

    static func segmentTrain(_ job: Job) throws -> StageOutcome {
        let input = try job.category(), backbone = try job.backbone()
        let nShot = try job.int("n_shot")
        // Preprocess validated the annotations (its few_shot/ masks are for users); importing them
        // here again is cheaper than decoding its PNGs and keeps one code path with the in-process run.
        let labelled = try input.labelled(nShot: nShot)
        let train = try input.images(.train), types = input.productTypes
        var p = SegmentTrainParameters()
        p.epochs = try job.int("epochs")
        p.seed = UInt64(try job.int("seed"))
        guard let lossSet = LossSet(rawValue: try job.string("loss_set")) else { throw JobError(description: "unknown loss set") }
        p.lossSet = lossSet
        job.progress(0, p.epochs, "epochs")
        let result = SegmentTrain.run(labelled: labelled, unlabelled: train.indices.map { SegmentationSample(image: train[$0], productType: types[$0]) },
                                      classes: input.classes, histogramClasses: input.manifest.histogramClasses, backbone: backbone, parameters: p,
                                      progress: { epoch, _ in job.progress(epoch + 1, p.epochs, "epochs") })
        return StageOutcome(outputs: ["head.safetensors": SafetensorsFile.encode(result.head.tensors),
                                      "losses.json": try JSONEncoder().encode(result.epochLosses)],
                            metrics: ["final_loss": Double(result.epochLosses.last ?? 0)])
    }

    static func pseudoLabel(_ job: Job) throws -> StageOutcome {
        let input = try job.category(), backbone = try job.backbone()
        let head = try SegmentationHead(file: try SafetensorsFile(data: try job.file("segmenter", "head.safetensors"), source: "head.safetensors"))
        let samples = input.category[.train] + input.testSamples
        let images = try input.images(.train) + input.testImages()
        let masks = SegmentTrain.pseudoLabels(head, images: images, backbone: backbone)
        return StageOutcome(outputs: try maskFiles(masks, samples: samples, size: input.size))
    }

    static func unetTrain(_ job: Job) throws -> StageOutcome {
        let input = try job.category()
        let train = try input.images(.train)
        let labels = try readMasks(job, role: "pseudo_labels", samples: input.category[.train])
        var p = UNetTrain.Parameters()
        p.epochs = try job.int("unet_epochs")
        p.seed = UInt64(try job.int("seed"))
        job.progress(0, p.epochs, "epochs")
        let unet = UNetTrain.run(images: train, labels: labels, classes: input.classes, parameters: p,
                                 progress: { epoch, _ in job.progress(epoch + 1, p.epochs, "epochs") })
        let masks = UNetTrain.masks(unet.net, images: train) + UNetTrain.masks(unet.net, images: try input.testImages())
        var out = StageOutcome(outputs: try maskFiles(masks, samples: input.category[.train] + input.testSamples, size: input.size))
        out.outputs["losses.json"] = try JSONEncoder().encode(unet.epochLosses)
        return out
    }

    static func patchFeatures(_ job: Job) throws -> StageOutcome {
        let input = try job.category(), backbone = try job.backbone()
        let train = try input.images(.train)
        let kept = memorySubset(train.count, fraction: try job.double("less_normal_fraction"))
        let testImages = try input.testImages()
        // Progress: every image encoded (train, then test), then every image scored.
        let count = kept + testImages.count
        job.progress(0, 2 * count, "image steps")
        let trainTaps = CategoryInput.taps(Array(train.prefix(kept)), backbone: backbone)
        job.progress(kept, 2 * count, "image steps")
        let testTaps = CategoryInput.taps(testImages, backbone: backbone)
        job.progress(count, 2 * count, "image steps")
        let patch = PatchStage.run(trainTaps: trainTaps, testTaps: testTaps, coresetFraction: try job.double("coreset_fraction"),
                                   scored: { job.progress(count + $0, 2 * count, "image steps") })
        let maps = patch.testMaps(size: input.size)
        let pixel = try input.pixelMetrics(maps: maps, fprLimit: 0.05)
        var out = StageOutcome()
        out.outputs["scores.json"] = try encode(PatchScores(train: patch.trainScores, test: patch.testScores, pixelAUROC: pixel?.pixelAUROC,
                                                            spro: pixel?.spro, testDefectTypes: try input.testDefectTypes()))
        out.outputs["patch_distances.safetensors"] = SafetensorsFile.encode([
            "test_patch_distances": Tensor(shape: [patch.testPatchDistances.count, patch.gridHeight, patch.gridWidth],
                                           storage: patch.testPatchDistances.flatMap { $0 })])
        let (images, scale) = try MapImages.encode(maps, size: input.size)
        for (sample, png) in zip(input.testSamples, images) { out.outputs["maps/\(sample.split.rawValue)/\(sample.id).png"] = png }
        out.metrics["map_scale"] = Double(scale)
        return out
    }

    static func bankFit(_ job: Job) throws -> StageOutcome {
        let input = try job.category(), backbone = try job.backbone()
        let size = input.size
        var parameters = BankFit.Parameters()
        parameters.epsilon = try job.double("epsilon")
        parameters.trainStatistic = try job.string("train_statistic") == "reference"
            ? MemoryBank.TrainStatistic.reference.rawValue : MemoryBank.TrainStatistic.leaveOneOut.rawValue
        let trainSamples = input.category[.train]
        let kept = memorySubset(trainSamples.count, fraction: try job.double("less_normal_fraction"))
        let trainMasks = try readMasks(job, role: "masks", samples: Array(trainSamples.prefix(kept)))
        let testMasks = try readMasks(job, role: "masks", samples: input.testSamples)
        func vectors(_ images: [Image], _ masks: [[Int32]]) -> [(histogram: [Double], composition: [Double])] {
            zip(CategoryInput.taps(images, backbone: backbone), masks).map {
                BankFit.vectors(taps: $0.0, labels: $0.1, height: size, width: size, classes: input.classes, strides: parameters.strides)
            }
        }
        let trainVectors = vectors(Array(try input.images(.train).prefix(kept)), trainMasks)
        let banks = BankFit.run(trainVectors: trainVectors, parameters: parameters)
        let test = vectors(try input.testImages(), testMasks).map { banks.distances(histogram: $0.histogram, composition: $0.composition) }
        let record = BankDistances(histogram: test.map(\.histogram), composition: test.map(\.composition),
                                   histogramTrainStatistics: banks.histogramTrainStatistics,
                                   compositionTrainStatistics: banks.compositionTrainStatistics,
                                   good: input.category[.testGood].count, logical: input.category[.testLogical].count)
        func matrix(_ rows: [[Double]]) -> Tensor { Tensor(shape: [rows.count, rows.first?.count ?? 0], storage: rows.flatMap { $0.map(Float.init) }) }
        return StageOutcome(outputs: [
            "distances.json": try encode(record),
            "banks.safetensors": SafetensorsFile.encode(["train_histogram": matrix(trainVectors.map(\.histogram)),
                                                         "train_composition": matrix(trainVectors.map(\.composition))]),
        ])
    }

    static func evaluate(_ job: Job) throws -> StageOutcome {
        let d = try decode(BankDistances.self, try job.file("banks", "distances.json"))
        let patch = try decode(PatchScores.self, try job.file("patch", "scores.json"))
        guard let memory = MemoryType(try job.string("memory_type")), let scale = ScaleType(rawValue: try job.string("scale_type")) else {
            throw JobError(description: "bad memory or scale type")
        }
        guard patch.test.count == d.histogram.count else {
            throw JobError(description: "patch scores for \(patch.test.count) test images, bank distances for \(d.histogram.count)")
        }
        let test = Evaluate.BankDistances(histogram: d.histogram, composition: d.composition, patch: patch.test.map(Double.init))
        let train = Evaluate.BankDistances(histogram: d.histogramTrainStatistics, composition: d.compositionTrainStatistics,
                                           patch: patch.train.map(Double.init))
        let scores = Evaluate.scores(test, train: train, memory: memory, scale: scale)
        let curves = Evaluate.curves(good: Array(scores[0..<d.good]), logical: Array(scores[d.good..<(d.good + d.logical)]),
                                     structural: Array(scores[(d.good + d.logical)...]))
        var metrics = Evaluate.Metrics(logicalAUROC: curves.logical?.area, structuralAUROC: curves.structural?.area).named
        if let p = patch.pixelAUROC { metrics["pixel_auroc"] = p }
        if let s = patch.spro { metrics["spro"] = s }
        let rows = scores.enumerated().map { i, s in
            "\(i < d.good ? "good" : i < d.good + d.logical ? "logical_anomalies" : "structural_anomalies"),\(s)"
        }
        func points(_ roc: ROC) -> RocPoints { RocPoints(fpr: roc.falsePositiveRates, tpr: roc.truePositiveRates) }
        var outputs = ["metrics.json": try encode(metrics),
                       "roc.json": try encode(["logical": curves.logical.map(points), "structural": curves.structural.map(points)].compactMapValues { $0 }),
                       "scores.csv": Data((["split,score"] + rows).joined(separator: "\n").utf8 + [0x0a])]
        if let types = patch.testDefectTypes, types.count == scores.count, types[d.good...].contains(where: { !$0.isEmpty }) {
            outputs["defect_types.json"] = try encode(Evaluate.byDefectType(scores: scores, types: types, good: d.good, logical: d.logical))
        }
        return StageOutcome(outputs: outputs, metrics: metrics)
    }

    // MARK: - formats

    struct PatchScores: Codable {
        let train: [Float], test: [Float]
        let pixelAUROC: Double?, spro: Double?
        /// Each test image's defect types from its ground truth (patch-features reads it for the
        /// pixel metrics; evaluate, which reads no dataset, needs it for AUROC per type).
        /// Absent in artifacts of code version 2.
        let testDefectTypes: [[String]]?
        // Explicit: the snake-case conversion does not round-trip "AUROC".
        enum CodingKeys: String, CodingKey { case train, test, pixelAUROC = "pixelAuroc", spro, testDefectTypes }
    }

    struct BankDistances: Codable {
        let histogram: [Double], composition: [Double]
        let histogramTrainStatistics: [Double], compositionTrainStatistics: [Double]
        /// Test images per split, in order: good, logical, then structural (the rest).
        let good: Int, logical: Int
    }

    enum Field: Encodable {
        case string(String), int(Int), strings([String]), counts([String: Int])
        func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            switch self {
            case .string(let s): try c.encode(s)
            case .int(let i): try c.encode(i)
            case .strings(let s): try c.encode(s)
            case .counts(let d): try c.encode(d)
            }
        }
    }

    static func json(_ fields: [String: Field]) throws -> Data { try encode(fields) }

    static func encode(_ value: some Encodable) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return try encoder.encode(value)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ data: Data) throws -> T {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        do { return try decoder.decode(type, from: data) } catch { throw JobError(description: "input \(T.self): \(error)", permanent: false) }
    }

    /// Train images kept in memory with the less-normal-data option: the first ceil(N * fraction), at least 2.
    static func memorySubset(_ count: Int, fraction: Double) -> Int {
        min(count, max(2, Int((Double(count) * fraction).rounded(.up))))
    }

    static func maskFiles(_ masks: [[Int32]], samples: [LocoSample], size: Int) throws -> [String: Data] {
        var files: [String: Data] = [:]
        for (sample, mask) in zip(samples, masks) {
            files["masks/\(sample.split.rawValue)/\(sample.id).png"] = try PNG.encodeMask(
                Image(width: size, height: size, channels: 1, pixels: mask.map { UInt8(clamping: $0) }))
        }
        return files
    }

    static func readMasks(_ job: Job, role: String, samples: [LocoSample]) throws -> [[Int32]] {
        try samples.map { sample in
            let name = "masks/\(sample.split.rawValue)/\(sample.id).png"
            return try PNG.decode(try job.file(role, name), source: name, mode: .indices).pixels.map { Int32($0) }
        }
    }
}
