import ArgumentParser
import AtomicWrite
import Foundation
import Stages
import Tensor
import Vision

/// `psad-worker predict`: scores images with an exported model
/// (``InspectionModel``): a verdict per image, the bank that drove it, and
/// the anomaly map and part segmentation as PNGs.
struct PredictCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Score images with a model exported by `psad-coordinator export`.",
        discussion: """
            Each IMAGE is a PNG or a folder (its PNGs, sorted by name). An image that cannot be read is named on \
            stderr and skipped; the rest go on. Exit status: 0 when every image was scored, 2 when some were skipped.
            """)

    @Argument(help: "The model folder.") var model: String
    @Argument(help: "Images or folders of images.") var images: [String]
    @Option(help: "Write <name>_map.png and <name>_parts.png for each image here.") var out: String?
    @Flag(help: "One JSON object per image on stdout instead of a line of text.") var json = false

    func run() throws {
        let loading = Date()
        let model = try InspectionModel(folder: URL(fileURLWithPath: self.model))
        let loadSeconds = Date().timeIntervalSince(loading), started = Date()
        var files: [URL] = []
        for path in images {
            var isFolder: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), isFolder.boolValue {
                let names = try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.lowercased().hasSuffix(".png") }.sorted()
                files += names.map { URL(fileURLWithPath: path).appendingPathComponent($0) }
            } else {
                files.append(URL(fileURLWithPath: path))
            }
        }
        let outFolder = out.map { URL(fileURLWithPath: $0) }
        if let outFolder { try FileManager.default.createDirectory(at: outFolder, withIntermediateDirectories: true) }
        let terminal = isatty(2) != 0
        var skipped = 0, anomalous = 0
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        // A chunk of images at a time, one per thread (each scored as the stages score one).
        var done = 0
        for chunkStart in stride(from: 0, to: files.count, by: max(1, Compute.threads)) {
            let chunk = Array(files[chunkStart..<min(files.count, chunkStart + max(1, Compute.threads))])
            var readable: [(url: URL, image: Image)] = []
            for url in chunk {
                do { readable.append((url, try PNG.read(url).rgb())) } catch {
                    skipped += 1
                    FileHandle.standardError.write(Data("predict: skipped \(url.path): \(error)\n".utf8))
                }
            }
            for (item, p) in zip(readable, model.predict(readable.map(\.image))) {
                let url = item.url
                if p.anomalous { anomalous += 1 }
                var written: [String: String] = [:]
                if let outFolder {
                    let stem = url.deletingPathExtension().lastPathComponent
                    let map = outFolder.appendingPathComponent("\(stem)_map.png"), parts = outFolder.appendingPathComponent("\(stem)_parts.png")
                    try AtomicFile.write(try model.mapPNG(p), to: map)
                    try AtomicFile.write(try model.partsPNG(p), to: parts)
                    written = ["map": map.path, "parts": parts.path]
                }
                if json {
                    let line = Line(image: url.path, score: p.score, anomalous: p.anomalous, threshold: model.description.threshold,
                                    components: p.components, drivenBy: p.drivenBy, part: p.part, map: written["map"], parts: written["parts"])
                    print(String(decoding: try encoder.encode(line), as: UTF8.self))
                } else {
                    print("\(url.path): \(String(format: "%.6g", p.score)) \(p.anomalous ? "ANOMALOUS" : "good") (threshold \(String(format: "%.6g", model.description.threshold)); "
                          + "driven by \(p.drivenBy)\(p.part.map { ", part \($0)" } ?? ""))")
                }
                fflush(nil)   // each line whole, as it comes (stderr shares the pipe in scripts)
            }
            done += chunk.count
            if files.count > 1 {
                let progress = "predict: \(done)/\(files.count) images, \(anomalous) anomalous, \(skipped) skipped"
                FileHandle.standardError.write(Data((terminal ? "\r\u{1B}[K" + progress + (done == files.count ? "\n" : "") : progress + "\n").utf8))
            }
        }
        let seconds = Date().timeIntervalSince(started), scored = files.count - skipped
        FileHandle.standardError.write(Data(String(format: "predict: %d images scored in %.3f s (%.2f images/s, %.1f ms each), the model loaded in %.2f s\n",
                                                   scored, seconds, Double(scored) / max(seconds, 1e-9), 1000 * seconds / Double(max(1, scored)), loadSeconds).utf8))
        if skipped > 0 { throw ExitCode(2) }
    }

    /// A JSON line of `--json`.
    struct Line: Encodable {
        var image: String
        var score: Double
        var anomalous: Bool
        var threshold: Double
        var components: [String: Double]
        var drivenBy: String
        var part: Int?
        var map: String?, parts: String?
    }
}
