import Foundation
import Tensor
import Vision

/// Every file a method stage writes or reads, by name and layout, and the
/// one JSON configuration they use (sorted snake_case keys). The report and
/// `psad-worker method` read through these too.
public enum StageArtifacts {
    // preprocess
    public static let preprocessListing = "preprocess.json"
    public static func fewShotMask(_ image: String) -> String { "few_shot/\(image)" }
    // segment-train, unet-train
    public static let head = "head.safetensors"
    public static let losses = "losses.json"
    // pseudo-label, unet-train
    public static func mask(_ sample: LocoSample) -> String { "masks/\(sample.split.rawValue)/\(sample.id).png" }
    // patch-features
    public static let patchScores = "scores.json"
    public static let patchDistances = "patch_distances.safetensors"
    public static func map(_ sample: LocoSample) -> String { "maps/\(sample.split.rawValue)/\(sample.id).png" }
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

    public static func encode(_ value: some Encodable) throws -> Data { try encoder.encode(value) }

    public static func decode<T: Decodable>(_ type: T.Type, _ data: Data, name: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        do { return try decoder.decode(type, from: data) } catch { throw StageError("\(name): \(error)", permanent: false) }
    }

    /// A CSV file: a header row and rows, newline-terminated.
    public static func csv(header: [String], rows: [[String]]) -> Data {
        Data((([header] + rows).map { $0.joined(separator: ",") }.joined(separator: "\n") + "\n").utf8)
    }

    /// One palette PNG of class indices per image, named by ``mask(_:)``.
    public static func maskFiles(_ masks: [[Int32]], samples: [LocoSample], size: Int) throws -> [String: Data] {
        var files: [String: Data] = [:]
        for (sample, mask) in zip(samples, masks) {
            files[Self.mask(sample)] = try PNG.encodeMask(Image(width: size, height: size, channels: 1, pixels: mask.map { UInt8(clamping: $0) }))
        }
        return files
    }

    public static func readMasks(_ files: [String: Data], samples: [LocoSample]) throws -> [[Int32]] {
        try samples.map { sample in
            let name = mask(sample)
            guard let data = files[name] else { throw StageError("no mask '\(name)' among the inputs", permanent: false) }
            return try PNG.decode(data, source: name, mode: .indices).pixels.map { Int32($0) }
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
        // Explicit: the snake-case conversion does not round-trip "AUROC".
        enum CodingKeys: String, CodingKey { case train, test, pixelAUROC = "pixelAuroc", spro, fprLimit, testDefectTypes, mapScale }
    }

    /// `distances.json` of bank-fit: each test image's distance to the
    /// histogram and composition banks, and the train statistics scaling uses.
    public struct BankDistances: Codable, Sendable {
        public let histogram: [Double], composition: [Double]
        public let histogramTrainStatistics: [Double], compositionTrainStatistics: [Double]
        /// Test images per split, in order: good, logical, then structural (the rest).
        public let good: Int, logical: Int
    }

    /// `preprocess.json`: what preprocess read.
    public struct PreprocessListing: Codable, Sendable {
        public let category: String
        public let imageSize: Int
        public let classes: Int
        public let fewShot: [String]
        public let counts: [String: Int]
    }
}

/// Anomaly maps as 8-bit gray PNGs, all scaled by the largest value of the set.
public enum MapImages {
    public static func encode(_ maps: [[Float]], size: Int) throws -> (images: [Data], scale: Float) {
        let top = max(maps.map { $0.max() ?? 0 }.max() ?? 0, .leastNormalMagnitude)
        let images = try maps.map { map in
            try PNG.encode(Image(width: size, height: size, channels: 1, pixels: map.map { UInt8(clamping: Int(($0 / top * 255).rounded())) }))
        }
        return (images, top)
    }
}
