import AtomicWrite
import Anomaly
import Foundation
import Tensor
import Vision

/// Writes a method run's stage outputs in formats users read: PNG (masks
/// as palette images of class indices, anomaly maps as 8-bit gray),
/// safetensors (weights, vectors, patch distances), CSV and JSON. Paths are
/// relative to the run's folder; every file is written whole or not at all.
struct ArtifactWriter {
    let root: URL

    init(_ root: URL) { self.root = root }

    func url(_ path: String) throws -> URL {
        let url = root.appendingPathComponent(path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        return url
    }

    func mask(_ image: Image, _ path: String) throws {
        try PNG.writeMask(image, to: url(path))
    }

    /// One palette PNG per image: `<folder>/<split>/<id>.png`.
    func masks(_ labels: [[Int32]], samples: [LocoSample], size: Int, _ folder: String) throws {
        for (sample, mask) in zip(samples, labels) {
            try self.mask(Image(width: size, height: size, channels: 1, pixels: mask.map { UInt8(clamping: $0) }),
                          "\(folder)/\(sample.split.rawValue)/\(sample.id).png")
        }
    }

    func tensors(_ tensors: [String: Tensor], _ path: String) throws {
        try SafetensorsFile.write(tensors, to: url(path))
    }

    func json(_ value: some Encodable, _ path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        try AtomicFile.write(encoder.encode(value), to: url(path))
    }

    func csv(header: [String], rows: [[String]], _ path: String) throws {
        let text = ([header] + rows).map { $0.joined(separator: ",") }.joined(separator: "\n") + "\n"
        try AtomicFile.write(Data(text.utf8), to: url(path))
    }

    /// patch-features: image scores (train rows leave-one-out), the test
    /// images' per-patch nearest distances, and their anomaly maps as PNG
    /// scaled by the largest map value (written in `patch/maps.json`).
    func patch(_ patch: PatchStage.Result, train: [LocoSample], test: [LocoSample], size: Int) throws {
        let rows = zip(train, patch.trainScores).map { [$0.0.split.rawValue, $0.0.id, "\($0.1)"] }
            + zip(test, patch.testScores).map { [$0.0.split.rawValue, $0.0.id, "\($0.1)"] }
        try csv(header: ["split", "image", "score"], rows: rows, "patch-features/scores.csv")
        let grid = Tensor(shape: [test.count, patch.gridHeight, patch.gridWidth], storage: patch.testPatchDistances.flatMap { $0 })
        try tensors(["test_patch_distances": grid], "patch-features/patch_distances.safetensors")
        let (images, scale) = try MapImages.encode(patch.testMaps(size: size), size: size)
        for (sample, png) in zip(test, images) {
            try AtomicFile.write(png, to: url("patch-features/maps/\(sample.split.rawValue)/\(sample.id).png"))
        }
        try json(["scale": Double(scale)], "patch-features/maps.json")
    }

    /// bank-fit: the raw train vectors, the standardisation and the train statistics.
    func banks(_ vectors: [(histogram: [Double], composition: [Double])], _ banks: Banks, _ path: String) throws {
        func matrix(_ rows: [[Double]]) -> Tensor {
            Tensor(shape: [rows.count, rows.first?.count ?? 0], storage: rows.flatMap { $0.map(Float.init) })
        }
        func vector(_ v: [Double]) -> Tensor { Tensor(shape: [v.count], storage: v.map(Float.init)) }
        try tensors(["train_histogram": matrix(vectors.map(\.histogram)),
                     "train_composition": matrix(vectors.map(\.composition)),
                     "histogram_mean": vector(banks.histogramStandardizer.mean),
                     "histogram_std": vector(banks.histogramStandardizer.std),
                     "composition_mean": vector(banks.compositionStandardizer.mean),
                     "composition_std": vector(banks.compositionStandardizer.std),
                     "histogram_train_statistics": vector(banks.histogramTrainStatistics),
                     "composition_train_statistics": vector(banks.compositionTrainStatistics)], path)
    }

    /// evaluate: each test image's raw distance to the three banks.
    func distances(_ d: Evaluate.BankDistances, samples: [LocoSample], _ path: String) throws {
        let rows = samples.indices.map { i in
            [samples[i].split.rawValue, samples[i].id, "\(d.histogram[i])", "\(d.composition[i])", "\(d.patch[i])"]
        }
        try csv(header: ["split", "image", "histogram", "composition", "patch"], rows: rows, path)
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
