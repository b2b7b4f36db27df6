import Foundation

/// The splits of the MVTec LOCO AD layout, each a folder of PNG images.
public enum Split: String, CaseIterable, Codable, Sendable {
    case train = "train/good"
    case validation = "validation/good"
    case testGood = "test/good"
    case testLogical = "test/logical_anomalies"
    case testStructural = "test/structural_anomalies"

    /// A category must have these; the others may be absent.
    public var isRequired: Bool { self == .train || self == .testGood }

    /// The `ground_truth/<type>` folder name of an anomalous split.
    public var groundTruthFolder: String? {
        switch self {
        case .testLogical: "logical_anomalies"
        case .testStructural: "structural_anomalies"
        default: nil
        }
    }
}

/// One image of a category, with its ground-truth masks when it is anomalous
/// (`ground_truth/<type>/<NNN>/<MMM>.png`, one per defect region).
public struct LocoSample: Equatable, Sendable {
    public let split: Split
    /// The image's file name without extension, e.g. "007".
    public let id: String
    public let url: URL
    public let groundTruth: [URL]
}

/// One entry of `defects_config.json`: a defect type, the pixel value its
/// ground-truth masks carry, and the saturation threshold sPRO uses
/// (in pixels, or a fraction of the region's area when relative).
public struct DefectConfig: Codable, Equatable, Sendable {
    public var defectName: String
    public var pixelValue: Int
    public var saturationThreshold: Double
    public var relativeSaturation: Bool

    public init(defectName: String, pixelValue: Int, saturationThreshold: Double, relativeSaturation: Bool) {
        self.defectName = defectName
        self.pixelValue = pixelValue
        self.saturationThreshold = saturationThreshold
        self.relativeSaturation = relativeSaturation
    }
}

/// A category folder in the MVTec LOCO AD layout, listed in sorted, stable order.
public struct LocoCategory: Sendable {
    public let root: URL
    public var name: String { root.lastPathComponent }
    public let samples: [Split: [LocoSample]]
    public let defects: [DefectConfig]

    /// Lists every split. `train/good` and `test/good` must be there and
    /// hold images, and at least one of the anomaly splits; `validation/good`
    /// and either anomaly split may be absent (a category with logical
    /// anomalies only reports LA, not SA). A missing required split, a split
    /// folder without images (leave a split out by leaving its folder out), a
    /// missing `defects_config.json` or a malformed one is an error naming
    /// the path.
    public init(root: URL) throws {
        self.root = root
        var samples: [Split: [LocoSample]] = [:]
        for split in Split.allCases {
            let folder = root.appendingPathComponent(split.rawValue)
            if !split.isRequired, !FileManager.default.fileExists(atPath: folder.path) {
                samples[split] = []
                continue
            }
            let images = try Self.pngs(in: folder, what: "split folder \(split.rawValue)")
            // A folder that is there but empty is more likely a copy gone wrong than a choice.
            guard !images.isEmpty else { throw DatasetError.emptySplit(path: folder.path) }
            samples[split] = images.map { url in
                let id = url.deletingPathExtension().lastPathComponent
                var truth: [URL] = []
                if let gt = split.groundTruthFolder {
                    let dir = root.appendingPathComponent("ground_truth/\(gt)/\(id)")
                    truth = (try? Self.pngs(in: dir, what: "")) ?? []
                }
                return LocoSample(split: split, id: id, url: url, groundTruth: truth)
            }
        }
        guard !(samples[.testLogical]!.isEmpty && samples[.testStructural]!.isEmpty) else {
            throw DatasetError.missing(path: root.appendingPathComponent("test").path,
                                       what: "anomalous test images (test/logical_anomalies or test/structural_anomalies)")
        }
        self.samples = samples
        let config = root.appendingPathComponent("defects_config.json")
        guard FileManager.default.fileExists(atPath: config.path) else {
            throw DatasetError.missing(path: config.path, what: "defects_config.json")
        }
        defects = try DatasetError.decodeJSON([DefectConfig].self, from: config)
        var seen = Set<Int>()
        for (i, d) in defects.enumerated() {
            guard (1...255).contains(d.pixelValue), seen.insert(d.pixelValue).inserted else {
                throw DatasetError.malformed(file: config.path, field: "[\(i)].pixel_value",
                                             problem: "must be unique and in 1...255, found \(d.pixelValue)")
            }
            guard d.saturationThreshold > 0 else {
                throw DatasetError.malformed(file: config.path, field: "[\(i)].saturation_threshold",
                                             problem: "must be positive, found \(d.saturationThreshold)")
            }
        }
    }

    public subscript(split: Split) -> [LocoSample] { samples[split] ?? [] }

    /// The defect whose masks carry `pixelValue`.
    public func defect(pixelValue: Int) -> DefectConfig? { defects.first { $0.pixelValue == pixelValue } }

    /// PNG files directly inside `folder`, sorted by name.
    static func pngs(in folder: URL, what: String) throws -> [URL] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: folder.path)
        } catch {
            throw DatasetError.missing(path: folder.path, what: what)
        }
        return names.filter { $0.lowercased().hasSuffix(".png") }.sorted()
            .map { folder.appendingPathComponent($0) }
    }
}
