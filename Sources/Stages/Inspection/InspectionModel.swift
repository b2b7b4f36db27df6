import Anomaly
import AtomicWrite
import Foundation
import Models
import Shared
import Tensor
import Vision

/// A trained category packed for inspecting new images (`psad-coordinator
/// export`, `psad-worker predict`): a folder holding `model.json` (what the
/// model is, how it was calibrated, every file's and backbone's SHA-256)
/// and the pieces: the segmenter's head (and fine-tuned encoder units) and
/// PatchCore's memory as safetensors, the train images' histogram and
/// composition vectors (JSON: double precision, as bank-fit computed them), and
/// the train patches PatchCore keeps. The backbones' ImageNet
/// weights are not copied: they are the installed ones, checked by digest.
///
/// Scoring an image repeats the sweep's stages on it alone: preprocess,
/// segment, the banks' vectors and distances, PatchCore's nearest patches,
/// and evaluate's scaled sum (or maximum), with the same code, so a test image scores
/// what the sweep's `scores.csv` says it scored.
public struct InspectionModel {
    /// 2: the segmenter's test-time views (``Description/ttaAngles``); 3:
    /// the banks' maximum instead of their sum (``Description/combine``); 4:
    /// the part-instance bank (memory type letter n); 5: the part-geometry
    /// bank (letter g). A model is written in the lowest format that holds
    /// it, so a summing model of the paper's banks stays readable by builds
    /// that read format 2.
    public static let formatVersion = 5
    public static let descriptionName = "model.json"
    static let headName = "segmenter.safetensors", encoderName = "encoder.safetensors"
    static let banksName = "bank_vectors.json", memoryName = "patch_memory.safetensors", unetName = "unet.safetensors"

    public struct Description: Codable, Equatable, Sendable {
        public var format: Int
        public var category: String
        /// Where it came from: the sweep and the setting's canonical JSON.
        public var sweep: String
        public var setting: String
        public var classes: Int
        public var cropMargin: Int
        public var imageSize: Int
        /// The retrained UNet whose masks the banks use (nil: the segmenter's).
        public var unet: UNetShape?
        /// The segmenter's test-time views, radians (nil: the image alone; pseudo-label's `tta_views`).
        public var ttaAngles: [Double]?
        public var segmentBackbone: BackboneName
        public var patchBackbone: BackboneName
        public var bankBackbone: BackboneName
        public var patchImageSize: Int
        public var patchResize: PatchResize
        /// PatchCore's search: nil exact, N inverted lists probed.
        public var patchProbes: Int?
        public var seed: UInt64
        public var epsilon: Double
        public var trainStatistic: TrainStatisticName
        public var memoryType: MemoryCombination
        public var scaleType: ScaleName
        /// nil: the sum of the scaled distances (formats 1 and 2 have no other).
        public var combine: BankCombine?
        /// The scale of the test anomaly maps in the sweep (a map pixel of this value is white).
        public var mapScale: Float
        /// Each enabled bank's train statistics (what the scaling divides by).
        public var trainStatistics: TrainStatistics
        /// Backbone name -> SHA-256 of its installed weight file.
        public var weights: [String: String]
        /// File of the bundle -> SHA-256.
        public var files: [String: String]
        /// An image scoring above this is anomalous.
        public var threshold: Double
        public var calibration: Calibration
    }

    /// The train images' histogram, composition and part-instance vectors
    /// (what the banks hold, before standardisation; no instances before format 4, no geometry before 5).
    struct BankVectors: Codable {
        var histogram: [[Double]], composition: [[Double]], instances: [[Double]]?, geometry: [[Double]]?
    }

    public struct UNetShape: Codable, Equatable, Sendable {
        public var width: Int, depth: Int
    }

    public struct TrainStatistics: Codable, Equatable, Sendable {
        public var histogram: [Double], composition: [Double], patch: [Double]
        /// The part-instance bank's (format 4).
        public var instances: [Double]?
        /// The part-geometry bank's (format 5).
        public var geometry: [Double]?
    }

    /// How the threshold was chosen and what it gives.
    public struct Calibration: Codable, Equatable, Sendable {
        /// The false-positive rate asked for on `validation/good`.
        public var targetFPR: Double
        public var validationImages: Int
        /// The rate the threshold gives there.
        public var validationFPR: Double
        /// The sweep's image AUROC for this setting.
        public var testLogicalAUROC: Double?, testStructuralAUROC: Double?
        /// The threshold on the sweep's test scores: good images called
        /// anomalous, and anomalies caught, per split.
        public var testImages: Int
        public var testFPR: Double?, testLogicalTPR: Double?, testStructuralTPR: Double?
    }

    public enum BundleError: Error, CustomStringConvertible {
        case notABundle(String)
        case version(found: Int, supported: Int, path: String)
        case digest(file: String, expected: String, found: String)
        case weights(backbone: String, expected: String, found: String)

        public var description: String {
            switch self {
            case .notABundle(let p): "\(p) is not an exported model (no readable \(InspectionModel.descriptionName))"
            case .version(let found, let supported, let path):
                "\(path) is a model of format \(found); this build reads formats 1 to \(supported): export it again with this version"
            case .digest(let file, let expected, let found): "\(file) does not match its recorded SHA-256 (\(expected.prefix(16))..., found \(found.prefix(16))...): the bundle is damaged"
            case .weights(let b, let expected, let found):
                "the installed \(b) weights (SHA-256 \(found.prefix(16))...) are not the ones the model was trained with (\(expected.prefix(16))...)"
            }
        }
    }

    public let description: Description
    let head: SegmentationHead
    let unet: UNet?
    let segmentEncoder: any Backbone, bankEncoder: any Backbone, patchEncoder: any Backbone
    let banks: Banks
    let memory: PatchMemory
    let prep: Preprocessor, patchPrep: Preprocessor
    /// The segmentation encoder has trained units (it is not the installed backbone).
    let finetuned: Bool

    /// Loads a bundle, checking its format, every file's digest and the installed backbones' weights.
    public init(folder: URL) throws {
        let describing = folder.appendingPathComponent(Self.descriptionName)
        guard let data = FileManager.default.contents(atPath: describing.path) else { throw BundleError.notABundle(folder.path) }
        struct Format: Decodable { var format: Int }
        guard let format = try? JSONDecoder().decode(Format.self, from: data) else { throw BundleError.notABundle(folder.path) }
        // Format 1 is format 2 without test-time views; format 2 is format 3 with the banks summed; format 3 is format 4 without the
        // instance bank; format 4 is format 5 without the geometry bank.
        guard (1...Self.formatVersion).contains(format.format) else { throw BundleError.version(found: format.format, supported: Self.formatVersion, path: folder.path) }
        let d = try ArtifactFormat.decode(Description.self, data, name: describing.path)
        var files: [String: Data] = [:]
        for (name, expected) in d.files {
            guard ArtifactStore.isValid(expected), !name.contains("/") else { throw BundleError.notABundle(folder.path) }
            let url = folder.appendingPathComponent(name)
            guard let bytes = FileManager.default.contents(atPath: url.path) else { throw ArtifactError.missing("\(url.path)") }
            let found = ArtifactStore.hash(bytes)
            guard found == expected else { throw BundleError.digest(file: url.path, expected: expected, found: found) }
            files[name] = bytes
        }
        for (name, expected) in d.weights {
            guard let backbone = BackboneName(rawValue: name) else { throw BundleError.notABundle(folder.path) }
            let found = try backbone.weightsDigest()
            guard found == expected else { throw BundleError.weights(backbone: name, expected: expected, found: found) }
        }
        try self.init(description: d, files: files)
    }

    init(description d: Description, files: [String: Data]) throws {
        description = d
        func file(_ name: String) throws -> SafetensorsFile {
            guard let data = files[name] else { throw ArtifactError.missing(name) }
            return try SafetensorsFile(data: data, source: name)
        }
        head = try SegmentationHead(file: try file(Self.headName))
        if let shape = d.unet {
            let f = try file(Self.unetName)
            unet = try UNet(width: shape.width, depth: shape.depth, classes: d.classes,
                            tensors: Dictionary(uniqueKeysWithValues: f.entries.map { ($0.name, try f.tensor($0.name)) }))
        } else {
            unet = nil
        }
        var loaded: [BackboneName: any Backbone] = [:]
        func backbone(_ name: BackboneName) throws -> any Backbone {
            if let b = loaded[name] { return b }
            let b = try name.load()
            loaded[name] = b
            return b
        }
        finetuned = files[Self.encoderName] != nil
        if finetuned {
            let tuned = try file(Self.encoderName)
            let tensors = try Dictionary(uniqueKeysWithValues: tuned.entries.map { ($0.name, try tuned.tensor($0.name)) })
            segmentEncoder = try d.segmentBackbone.load(weights: WeightSet(overlay: tensors, over: d.segmentBackbone.weights()))
        } else {
            segmentEncoder = try backbone(d.segmentBackbone)
        }
        bankEncoder = try backbone(d.bankBackbone)
        patchEncoder = try backbone(d.patchBackbone)
        guard let vectorData = files[Self.banksName] else { throw ArtifactError.missing(Self.banksName) }
        let vectors = try ArtifactFormat.decode(BankVectors.self, vectorData, name: Self.banksName)
        var bp = BankFit.Parameters()
        bp.epsilon = d.epsilon
        bp.trainStatistic = (d.trainStatistic == .reference ? MemoryBank.TrainStatistic.reference : .leaveOneOut).rawValue
        banks = BankFit.run(trainVectors: vectors.histogram.indices.map {
            (histogram: vectors.histogram[$0], composition: vectors.composition[$0], instances: vectors.instances?[$0] ?? [],
             geometry: vectors.geometry?[$0] ?? [])
        }, parameters: bp)
        let memoryRows = try file(Self.memoryName).tensor("memory")
        memory = PatchMemory(trainPatches: [memoryRows], coreset: nil, probes: d.patchProbes, seed: d.seed)
        prep = Preprocessor(cropMargin: d.cropMargin, targetSize: d.imageSize)
        patchPrep = Preprocessor(cropMargin: d.cropMargin, targetSize: d.patchImageSize, fit: d.patchResize == .square ? .square : .pad)
    }

    /// What one image gave.
    public struct Prediction: Sendable {
        public var score: Double
        public var anomalous: Bool
        /// Each enabled bank's scaled part of the score ("histogram", "composition", "patch", "instances", "geometry").
        public var components: [String: Double]
        /// The bank with the largest part.
        public var drivenBy: String
        /// For the histogram, composition, instance and geometry banks: the part
        /// class whose (standardised) values differ most from the nearest train image's.
        public var part: Int?
        /// The part segmentation and the anomaly map, in the preprocessed frame (imageSize squared).
        public var parts: [Int32]
        public var map: [Float]
    }

    /// Scores images (as read, native size) the way the stages compute a
    /// category, so that the digits are theirs: each image's encoder passes
    /// and segmentation on one thread (``Compute/mapAcrossThreads(_:_:)``),
    /// then, image by image on every thread, the part vectors and the
    /// nearest-patch search.
    public func predict(_ images: [Image]) -> [Prediction] {
        let d = description, size = d.imageSize
        struct Encoded { var image: Image, parts: [Int32]?, bankTaps: [Int: Tensor], patchTaps: [Int: Tensor] }
        let encoded = Compute.mapAcrossThreads(images.count) { i in
            Compute.onOneThread {
                let x = prep.image(images[i])
                let patchTaps = patchEncoder.features(ImageNormalization.imagenet(patchPrep.image(images[i]).tensor()), strides: [4, 8, 16])
                if unet != nil {
                    return Encoded(image: x, parts: nil, bankTaps: bankEncoder.features(ImageNormalization.imagenet(x.tensor()), strides: [4, 8, 16]),
                                   patchTaps: patchTaps)
                }
                let segmentTaps = segmentEncoder.features(ImageNormalization.imagenet(x.tensor()), strides: [4, 8, 16])
                let parts = SegmentTrain.pseudoLabels(head, image: x, taps: segmentTaps, angles: d.ttaAngles ?? [], backbone: segmentEncoder)
                let bankTaps = d.bankBackbone == d.segmentBackbone && !finetuned ? segmentTaps
                    : bankEncoder.features(ImageNormalization.imagenet(x.tensor()), strides: [4, 8, 16])
                return Encoded(image: x, parts: parts, bankTaps: bankTaps, patchTaps: patchTaps)
            }
        }
        return zip(images, encoded).map { image, e in
            // The UNet's masks image by image on every thread, as unet-train computes them.
            let parts = e.parts ?? UNetTrain.masks(unet!, images: [e.image])[0]
            return score(image, parts, bankTaps: e.bankTaps, patchTaps: e.patchTaps)
        }
    }

    func score(_ image: Image, _ parts: [Int32], bankTaps: [Int: Tensor], patchTaps: [Int: Tensor]) -> Prediction {
        let d = description, size = d.imageSize
        var vectors = BankFit.vectors(taps: bankTaps, labels: parts, height: size, width: size, classes: d.classes, strides: BankFit.Parameters().strides)
        // A model without the part-instance (geometry) bank holds no train counts (geometry) to compare with.
        if banks.instances.train[0].isEmpty { vectors.instances = [] }
        if banks.geometry.train[0].isEmpty { vectors.geometry = [] }
        let distances = banks.distances(vectors)
        let (patchScore, nearest) = memory.score([PatchStage.patches(patchTaps)])[0]
        let patchMap = AnomalyMap.from(patchDistances: nearest, gridHeight: patchTaps[8]!.shape[2], gridWidth: patchTaps[8]!.shape[3],
                                       height: d.patchImageSize, width: d.patchImageSize).storage
        let map = CategoryInput.map(patchMap, native: (image.width, image.height), from: patchPrep, to: prep)
        // Evaluate's combination of the scaled distances, bank by bank.
        let memoryType = MemoryType(d.memoryType), scale = ScaleType(d.scaleType)
        let test = Evaluate.BankDistances(histogram: [distances.histogram], composition: [distances.composition], patch: [Double(patchScore)],
                                          instances: [distances.instances], geometry: [distances.geometry])
        let train = Evaluate.BankDistances(histogram: d.trainStatistics.histogram, composition: d.trainStatistics.composition,
                                           patch: d.trainStatistics.patch, instances: d.trainStatistics.instances ?? [],
                                           geometry: d.trainStatistics.geometry ?? [])
        var components: [String: Double] = [:]
        for (bank, name) in zip(Evaluate.banks, ["histogram", "composition", "patch", "instances", "geometry"]) where memoryType.contains(bank) {
            components[name] = Evaluate.scaler(bank, statistics: train[bank], scale: scale)(test[bank][0])
        }
        let score = Evaluate.scores(test, train: train, memory: memoryType, scale: scale, combine: d.combine ?? .sum)[0]
        let driver = components.max { $0.value < $1.value }?.key ?? "patch"
        var blamed: Int?
        if driver == "histogram" {
            blamed = Self.mostDifferent(banks.histogramStandardizer(vectors.histogram), bank: banks.histogram, blockSize: 1)
        } else if driver == "instances" {
            // Foreground classes only: index c is part c + 1.
            blamed = Self.mostDifferent(vectors.instances, bank: banks.instances, blockSize: 1).map { $0 + 1 }
        } else if driver == "geometry" {
            // Foreground class c's centroid and moments: c + 1 is the part.
            blamed = Self.mostDifferent(banks.geometryStandardizer(vectors.geometry), bank: banks.geometry, blockSize: PartGeometry.width).map { $0 + 1 }
        } else if driver == "composition", d.classes > 1 {
            // Foreground class c's block of every stage's channels: c + 1 is the part.
            let block = vectors.composition.count / (d.classes - 1)
            blamed = Self.mostDifferent(banks.compositionStandardizer(vectors.composition), bank: banks.composition, blockSize: block).map { $0 + 1 }
        }
        return Prediction(score: score, anomalous: score > d.threshold, components: components, drivenBy: driver, part: blamed,
                          parts: parts, map: map)
    }

    /// The block (of `blockSize` values) where `v` differs most, in squared
    /// distance, from its nearest row in `bank`.
    static func mostDifferent(_ v: [Double], bank: MemoryBank, blockSize: Int) -> Int? {
        guard blockSize > 0, let nearest = bank.train.min(by: { squared($0, v) < squared($1, v) }) else { return nil }
        let blocks = v.count / blockSize
        return (0..<blocks).max { a, b in
            squared(Array(v[(a * blockSize)..<((a + 1) * blockSize)]), Array(nearest[(a * blockSize)..<((a + 1) * blockSize)]))
                < squared(Array(v[(b * blockSize)..<((b + 1) * blockSize)]), Array(nearest[(b * blockSize)..<((b + 1) * blockSize)]))
        }
    }

    static func squared(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } }

    /// The anomaly map as an 8-bit gray PNG on the sweep's scale (white: the largest test map value).
    public func mapPNG(_ p: Prediction) throws -> Data {
        let size = description.imageSize, top = max(description.mapScale, .leastNormalMagnitude)
        return try PNG.encode(Image(width: size, height: size, channels: 1, pixels: p.map.map { UInt8(clamping: Int(($0 / top * 255).rounded())) }))
    }

    /// The part segmentation as a palette PNG of class indices.
    public func partsPNG(_ p: Prediction) throws -> Data {
        let size = description.imageSize
        return try PNG.encodeMask(Image(width: size, height: size, channels: 1, pixels: p.parts.map { UInt8(clamping: $0) }))
    }
}

extension BackboneName {
    /// SHA-256 of the installed weight file.
    public func weightsDigest() throws -> String {
        let url = try weightsFile()
        guard let data = FileManager.default.contents(atPath: url.path) else { throw ArtifactError.missing(url.path) }
        return ArtifactStore.hash(data)
    }
}
