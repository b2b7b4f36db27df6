import Foundation

/// Every file a method stage writes or reads, by name and layout, with
/// their records, one JSON configuration (sorted snake_case keys) and one
/// CSV writer. The stages write through it and the report reads through it,
/// so a name or a field is spelled once.
///
/// | stage | files |
/// |---|---|
/// | preprocess | `preprocess.json` (``PreprocessListing``), `few_shot/<image>.png` masks |
/// | segment-train | `head.safetensors`, `losses.json`; `encoder.safetensors` where the encoder trained |
/// | pseudo-label | `masks/<split>/<id>.png` for train and test images |
/// | unet-train | `masks/<split>/<id>.png` from the UNet, `losses.json` |
/// | patch-features | `scores.json` (``PatchScores``), `patch_distances.safetensors`, `maps/<split>/<id>.png` |
/// | bank-fit | `banks.safetensors` (train vectors, standardisation, train statistics), `distances.json` (``BankDistances``) |
/// | evaluate | `metrics.json`, `roc.json` (``RocPoints`` per anomaly split), `scores.csv` (split, score), `defect_types.json` (``DefectTypeAUROC``) |
public enum ArtifactFormat {
    // preprocess
    public static let preprocessListing = "preprocess.json"
    public static func fewShotMask(_ image: String) -> String { "few_shot/\(image)" }
    // segment-train, unet-train
    public static let head = "head.safetensors"
    /// The fine-tuned encoder units' weights and running statistics, by the backbone's PyTorch names.
    public static let fineTunedEncoder = "encoder.safetensors"
    public static let losses = "losses.json"
    /// unet-train's network: parameters and batch-norm running statistics (what export packs).
    public static let unet = "unet.safetensors"
    // pseudo-label, unet-train; `split` as the dataset names its folder (`train/good`, `test/logical_anomalies`)
    public static func mask(split: String, id: String) -> String { "masks/\(split)/\(id).png" }
    // patch-features
    public static let patchScores = "scores.json"
    public static let patchDistances = "patch_distances.safetensors"
    public static func map(split: String, id: String) -> String { "maps/\(split)/\(id).png" }
    /// (split, id) of a test image's map name (`maps/test/<split>/<id>.png`), nil for any other name.
    public static func testMap(_ name: String) -> (split: String, id: String)? {
        guard name.hasPrefix("maps/test/"), name.hasSuffix(".png") else { return nil }
        let parts = name.dropFirst("maps/test/".count).dropLast(4).split(separator: "/", maxSplits: 1)
        return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
    }
    // bank-fit
    public static let bankDistances = "distances.json"
    public static let banks = "banks.safetensors"
    // evaluate
    public static let metrics = "metrics.json"
    public static let roc = "roc.json"
    public static let scoresCSV = "scores.csv"
    public static let defectTypes = "defect_types.json"

    public static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return encoder
    }

    public static var decoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }

    public static func encode(_ value: some Encodable) throws -> Data { try encoder.encode(value) }

    /// Decodes a file; an error names it.
    public static func decode<T: Decodable>(_ type: T.Type, _ data: Data, name: String) throws -> T {
        do { return try decoder.decode(type, from: data) } catch { throw Unreadable(description: "\(name): \(error)") }
    }

    public struct Unreadable: Error, CustomStringConvertible, Sendable { public let description: String }

    /// A CSV file: a header row and rows, newline-terminated.
    public static func csv(header: [String], rows: [[String]]) -> Data {
        Data((([header] + rows).map { $0.joined(separator: ",") }.joined(separator: "\n") + "\n").utf8)
    }

    /// evaluate's `scores.csv`: each test image's split and final score, in the test order (good, logical, structural).
    public static func scores(_ rows: [(split: String, score: Double)]) -> Data {
        csv(header: ["split", "score"], rows: rows.map { [$0.split, "\($0.score)"] })
    }

    public static func readScores(_ data: Data) throws -> [(split: String, score: Double)] {
        try String(decoding: data, as: UTF8.self).split(separator: "\n").dropFirst().map { line in
            let fields = line.split(separator: ",")
            guard fields.count == 2, let score = Double(fields[1]) else {
                throw Unreadable(description: "\(scoresCSV): line '\(line)' is not split,score")
            }
            return (String(fields[0]), score)
        }
    }

    /// `scores.json` of patch-features.
    public struct PatchScores: Codable, Sendable {
        public let train: [Float], test: [Float]
        public let pixelAUROC: Double?, spro: Double?
        /// The FPR limit sPRO was integrated to (absent in artifacts of code version 3 and before: 0.05).
        public let fprLimit: Double?
        /// Each test image's defect types from its ground truth (patch-features reads it for the
        /// pixel metrics; evaluate, which reads no dataset, needs it for AUROC per type).
        public let testDefectTypes: [[String]]?
        /// The value an anomaly map's 255 stands for (all maps share it).
        public let mapScale: Float?
        public init(train: [Float], test: [Float], pixelAUROC: Double?, spro: Double?, fprLimit: Double?, testDefectTypes: [[String]]?, mapScale: Float?) {
            self.train = train; self.test = test; self.pixelAUROC = pixelAUROC; self.spro = spro; self.fprLimit = fprLimit
            self.testDefectTypes = testDefectTypes; self.mapScale = mapScale
        }
        // Explicit: the snake-case conversion does not round-trip "AUROC".
        enum CodingKeys: String, CodingKey { case train, test, pixelAUROC = "pixelAuroc", spro, fprLimit, testDefectTypes, mapScale }
    }

    /// `distances.json` of bank-fit: each test image's distance to the
    /// histogram, composition, part-instance and part-geometry banks, and
    /// the train statistics scaling uses.
    public struct BankDistances: Codable, Sendable {
        public let histogram: [Double], composition: [Double]
        public let histogramTrainStatistics: [Double], compositionTrainStatistics: [Double]
        /// The part-instance bank's; nil in what bank-fit wrote before code version 6.
        public let instances: [Double]?, instancesTrainStatistics: [Double]?
        /// The part-geometry bank's; nil in what bank-fit wrote before code version 7.
        public let geometry: [Double]?, geometryTrainStatistics: [Double]?
        /// Test images per split, in order: good, logical, then structural (the rest).
        public let good: Int, logical: Int
        public init(histogram: [Double], composition: [Double], histogramTrainStatistics: [Double], compositionTrainStatistics: [Double],
                    instances: [Double]? = nil, instancesTrainStatistics: [Double]? = nil,
                    geometry: [Double]? = nil, geometryTrainStatistics: [Double]? = nil, good: Int, logical: Int) {
            self.histogram = histogram; self.composition = composition
            self.histogramTrainStatistics = histogramTrainStatistics; self.compositionTrainStatistics = compositionTrainStatistics
            self.instances = instances; self.instancesTrainStatistics = instancesTrainStatistics
            self.geometry = geometry; self.geometryTrainStatistics = geometryTrainStatistics
            self.good = good; self.logical = logical
        }
    }

    /// `preprocess.json`: what preprocess read.
    public struct PreprocessListing: Codable, Sendable {
        public let category: String
        public let imageSize: Int
        public let classes: Int
        public let fewShot: [String]
        public let counts: [String: Int]
        public init(category: String, imageSize: Int, classes: Int, fewShot: [String], counts: [String: Int]) {
            self.category = category; self.imageSize = imageSize; self.classes = classes; self.fewShot = fewShot; self.counts = counts
        }
    }
}

/// Image AUROC of one defect type (a row of evaluate's `defect_types.json`):
/// the good test images against the anomalous images of one split whose
/// ground truth holds that type.
public struct DefectTypeAUROC: Codable, Equatable, Sendable {
    public var split: String
    public var defectType: String
    public var images: Int
    public var auroc: Double
    public init(split: String, defectType: String, images: Int, auroc: Double) {
        self.split = split; self.defectType = defectType; self.images = images; self.auroc = auroc
    }
}
