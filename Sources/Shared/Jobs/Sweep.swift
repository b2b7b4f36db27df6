import Foundation

/// A sweep file (JSON or YAML): the dataset, its categories and the grid
/// of settings; every combination of the grid's values is one setting.
/// Documented with examples in `ops/sweeps/`. Read with `Codable`
/// (``SweepFields`` gives each field's problem in the file's own terms).
public struct Sweep: Equatable, Sendable {
    public var name: String
    /// The dataset root (MVTec LOCO AD layout), as the workers see it.
    public var dataset: String
    public var categories: [String]
    /// Higher runs first.
    public var priority = 0
    /// Attempts per job before it is dead.
    public var maxAttempts = 3
    /// The share of jobs (sampled by key, so the same jobs every time) run
    /// a second time on another worker and compared before they count
    /// (0: none; 1: every job).
    public var verify = 0.0
    public var grid = Grid()
    /// Diagnostic jobs instead of the method (load and fault tests).
    public var diagnostic: Diagnostic?
    /// A run label that enters every job's key: with one, nothing done
    /// before is reused (nightly runs compute everything afresh).
    public var run: String?
    /// Category -> ``DatasetDigest`` of its folder, where the submitting
    /// coordinator could read it (not part of the file): it enters the keys
    /// of the stages that read the images, so changed data is computed afresh.
    public var dataDigests: [String: String] = [:]
    /// Each category's image counts and classes, where submit could read
    /// them: the jobs' memory needs follow from them (``StageMemory``).
    public var dataSizes: [String: CategorySize] = [:]

    /// Every field a list of the values to sweep (a scalar in the file is a one-value list).
    public struct Grid: Equatable, Sendable {
        public var nShot = [5]
        public var memoryTypes = ["h", "c", "p", "hcp"].compactMap(MemoryCombination.init)
        public var scaleTypes = [ScaleName.max]
        public var seeds = [0]
        public var backbones = [BackboneName.efficientNetLite0]
        /// PatchCore's and the banks' feature extractors when they differ
        /// from the segmentation encoder (nil: the same as `backbones`).
        public var patchBackbones: [BackboneName]?
        public var bankBackbones: [BackboneName]?
        public var imageSizes = [256]
        public var epochs = [100]
        public var lossSets = [LossSet.supEntropyHistogram]
        public var lessNormalFractions = [1.0]
        public var unetEpochs = [0]
        public var epsilons = [1e-6]
        public var trainStatistics = [TrainStatisticName.leaveOneOut]
        /// Share of train patches in PatchCore's memory (greedy k-center coreset; 1 = all).
        public var coresetFractions = [1.0]
        /// PatchCore's input side and fit (the reference: the image resized to 256 x 256).
        public var patchImageSizes = [256]
        public var patchResizes = [PatchResize.square]
        /// Augmented views per labelled image in segment-train; 0: a fresh
        /// augmentation at every step (nil: the stage's default, fresh views).
        public var labelledViews: [Int]?
        /// What trains in segment-train (nil: the head only).
        public var finetunes: [Finetune]?
        /// Draws each fresh labelled view serves on average (nil or 1: a fresh view at every draw).
        public var viewReuse: [Int]?
        /// PatchCore's search: probes of inverted lists; 0 or absent: exact.
        public var patchProbes: [Int]?
        /// Rotated views the pseudo-labels average with each image's own; 0 or absent: none.
        public var ttaViews: [Int]?
        /// How the banks' scaled distances combine; absent: their sum.
        public var combines: [BankCombine]?
        public init() {}
    }

    /// `jobs` independent jobs that sleep `seconds`; every `failEvery`-th
    /// fails (0: none), with a permanent error when `permanent`.
    public struct Diagnostic: Equatable, Sendable {
        public var jobs = 1
        public var seconds = 0.0
        public var failEvery = 0
        public var permanent = false
        /// Chains the jobs in a line instead (each depends on the previous).
        public var chained = false
        /// Every job fails (transiently) while this file exists: a cause
        /// outside the job's key that a user can remove, then `resume`.
        public var failWhileExists: String?
        /// Outputs each job writes besides `echo.json` (small blobs of
        /// distinct bytes): the protocol with as many artifacts as a stage
        /// that writes one per image of a real-size category.
        public var outputs = 0
        /// One more output of this many bytes (`big.bin`), uploaded in
        /// chunks: the path of a stage's large artifacts (0: none).
        public var outputBytes = 0
        public init() {}
    }

    public init(name: String, dataset: String, categories: [String]) {
        self.name = name; self.dataset = dataset; self.categories = categories
    }
}

/// A sweep file that cannot be used: which file, which line, which field, what is wrong.
public struct SweepError: Error, Equatable, CustomStringConvertible {
    public let file: String
    public let line: Int?
    public let field: String
    public let problem: String

    public var description: String {
        "\(file)\(line.map { ":\($0)" } ?? ""): \(field): \(problem)"
    }
}

extension Sweep {
    public static func load(_ url: URL) throws -> Sweep {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw SweepError(file: url.path, line: nil, field: "(file)", problem: "cannot be read: \(error.localizedDescription)")
        }
        return try parse(data, file: url.path)
    }

    /// Parses and validates; unknown keys and bad values are errors naming the field and its line.
    public static func parse(_ data: Data, file: String) throws -> Sweep {
        let text = String(decoding: data, as: UTF8.self)
        var json = data
        if text.first(where: { !$0.isWhitespace }) == "{" {
            do { _ = try JSONSerialization.jsonObject(with: data) } catch {
                throw SweepError(file: file, line: nil, field: "(document)", problem: "not valid JSON: \((error as NSError).userInfo["NSDebugDescription"] ?? error.localizedDescription)")
            }
        } else {
            json = try JSONSerialization.data(withJSONObject: YAMLDocument.load(text, file: file), options: [.fragmentsAllowed])
        }
        do {
            return try JSONDecoder().decode(Sweep.self, from: json)
        } catch let problem as SweepFieldProblem {
            throw SweepError(file: file, line: line(of: problem.field, in: text), field: problem.field, problem: problem.text)
        } catch let error as DecodingError {
            // Only a document that is not an object gets here (every field's problem is a ``SweepFieldProblem``).
            throw SweepError(file: file, line: nil, field: "(document)", problem: "must be a JSON object (\(error))")
        }
    }

    /// The first line naming the field: `"name"` in JSON, `name:` in YAML.
    static func line(of field: String, in text: String) -> Int? {
        let name = field.split(separator: ".").last.map(String.init) ?? field
        if let range = text.range(of: "\"\(name)\"") { return text[..<range.lowerBound].filter { $0 == "\n" }.count + 1 }
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var t = line.drop { $0 == " " }
            if t.hasPrefix("- ") { t = t.dropFirst(2).drop { $0 == " " } }
            if t.hasPrefix("\(name):") || t.hasPrefix("'\(name)':") { return i + 1 }
        }
        return nil
    }
}

extension Sweep: Decodable {
    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, dataset, categories, priority, maxAttempts = "max_attempts", verify, grid, diagnostic, run
    }

    public init(from decoder: any Decoder) throws {
        let f = try SweepFields<CodingKeys>(decoder)
        self.init(name: try f.one(.name, String.self), dataset: try f.one(.dataset, String.self, or: ""),
                  categories: try f.list(.categories, or: [String]()))
        priority = try f.one(.priority, Int.self, or: 0)
        maxAttempts = try f.one(.maxAttempts, Int.self, or: 3, atLeast: 1)
        verify = try f.one(.verify, Double.self, or: 0) { $0 >= 0 && $0 <= 1 ? nil : "\($0) is not a share in [0, 1]" }
        run = try f.optional(.run, String.self)
        grid = try f.object(.grid, Grid.self) ?? Grid()
        diagnostic = try f.object(.diagnostic, Diagnostic.self)
        guard diagnostic == nil else { return }
        if dataset.isEmpty { throw f.problem(.dataset, "is required (the dataset root)") }
        if categories.isEmpty { throw f.problem(.categories, "names no category") }
        for name in categories where name.isEmpty || name == "." || name == ".." || name.contains("/") {
            throw f.problem(.categories, "'\(name)' is not a folder name inside the dataset")
        }
        if let twice = categories.first(where: { c in categories.filter { $0 == c }.count > 1 }) {
            throw f.problem(.categories, "'\(twice)' is listed twice")
        }
    }
}

extension Sweep.Grid: Decodable {
    /// The file's names (each setting's name in results, plural where the grid lists several kinds).
    enum CodingKeys: String, CodingKey, CaseIterable {
        case nShot = "n_shot", memoryTypes = "memory_types", scaleTypes = "scale_types", seeds, backbones = "backbone",
             patchBackbones = "patch_backbone", bankBackbones = "bank_backbone", imageSizes = "image_size", epochs,
             lossSets = "loss_set", lessNormalFractions = "less_normal_fraction", unetEpochs = "unet_epochs",
             epsilons = "epsilon", trainStatistics = "train_statistic", coresetFractions = "coreset_fraction",
             patchImageSizes = "patch_image_size", patchResizes = "patch_resize", labelledViews = "labelled_views",
             finetunes = "finetune", patchProbes = "patch_probes", ttaViews = "tta_views", viewReuse = "view_reuse",
             combines = "combine"
    }

    public init(from decoder: any Decoder) throws {
        let f = try SweepFields<CodingKeys>(decoder)
        let fraction = { (x: Double) in x > 0 && x <= 1 ? nil : "\(x) is not in (0, 1]" }
        nShot = try f.list(.nShot, or: nShot, atLeast: 1)
        memoryTypes = try f.list(.memoryTypes, or: memoryTypes)
        scaleTypes = try f.list(.scaleTypes, or: scaleTypes)
        seeds = try f.list(.seeds, or: seeds, atLeast: 0)
        backbones = try f.list(.backbones, or: backbones)
        patchBackbones = try f.optionalList(.patchBackbones)
        bankBackbones = try f.optionalList(.bankBackbones)
        imageSizes = try f.list(.imageSizes, or: imageSizes, atLeast: 32)
        epochs = try f.list(.epochs, or: epochs, atLeast: 1)
        lossSets = try f.list(.lossSets, or: lossSets)
        lessNormalFractions = try f.list(.lessNormalFractions, or: lessNormalFractions, check: fraction)
        unetEpochs = try f.list(.unetEpochs, or: unetEpochs, atLeast: 0)
        epsilons = try f.list(.epsilons, or: epsilons) { $0 > 0 ? nil : "\($0) is not positive" }
        trainStatistics = try f.list(.trainStatistics, or: trainStatistics)
        coresetFractions = try f.list(.coresetFractions, or: coresetFractions, check: fraction)
        patchImageSizes = try f.list(.patchImageSizes, or: patchImageSizes, atLeast: 32)
        patchResizes = try f.list(.patchResizes, or: patchResizes)
        labelledViews = try f.optionalList(.labelledViews, atLeast: 0)
        finetunes = try f.optionalList(.finetunes)
        viewReuse = try f.optionalList(.viewReuse, atLeast: 1)
        if (viewReuse ?? []).contains(where: { $0 > 1 }), (labelledViews ?? []).contains(where: { $0 > 0 }) {
            throw f.problem(.viewReuse, "applies to fresh labelled views (labelled_views 0); cached views are reused by design")
        }
        patchProbes = try f.optionalList(.patchProbes, atLeast: 0)
        ttaViews = try f.optionalList(.ttaViews, atLeast: 0) { $0 <= Self.maxTTAViews ? nil : "\($0) views is more than \(Self.maxTTAViews)" }
        combines = try f.optionalList(.combines)
    }

    /// Each test-time view is an encoder pass over every image of the category.
    public static let maxTTAViews = 16
}

extension Sweep.Diagnostic: Decodable {
    enum CodingKeys: String, CodingKey, CaseIterable {
        case jobs, seconds, failEvery = "fail_every", permanent, chained, failWhileExists = "fail_while_exists", outputs,
             outputBytes = "output_bytes"
    }

    public init(from decoder: any Decoder) throws {
        let f = try SweepFields<CodingKeys>(decoder)
        jobs = try f.one(.jobs, Int.self, or: 1, atLeast: 1)
        seconds = try f.one(.seconds, Double.self, or: 0) { $0 >= 0 ? nil : "must not be negative" }
        failEvery = try f.one(.failEvery, Int.self, or: 0, atLeast: 0)
        permanent = try f.one(.permanent, Bool.self, or: false)
        chained = try f.one(.chained, Bool.self, or: false)
        failWhileExists = try f.optional(.failWhileExists, String.self)
        outputs = try f.one(.outputs, Int.self, or: 0, atLeast: 0)
        outputBytes = try f.one(.outputBytes, Int.self, or: 0, atLeast: 0)
    }
}
