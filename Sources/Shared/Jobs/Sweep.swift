import Foundation

/// A sweep file (JSON or YAML): the dataset, its categories and the grid
/// of settings; every combination of the grid's values is one setting.
/// Documented with examples in `ops/sweeps/`.
public struct Sweep: Equatable, Sendable {
    public var name: String
    /// The dataset root (MVTec LOCO AD layout), as the workers see it.
    public var dataset: String
    public var categories: [String]
    /// Higher runs first.
    public var priority = 0
    /// Attempts per job before it is dead.
    public var maxAttempts = 3
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

    /// The backbones a grid may name.
    public static let knownBackbones = BackboneName.allCases.map(\.rawValue)

    public struct Grid: Equatable, Sendable {
        public var nShot = [5]
        public var memoryTypes = ["h", "c", "p", "hcp"]
        public var scaleTypes = ["max"]
        public var seeds = [0]
        public var backbones = ["efficientnet-lite0"]
        /// PatchCore's and the banks' feature extractors when they differ
        /// from the segmentation encoder (nil: the same as `backbones`).
        public var patchBackbones: [String]?
        public var bankBackbones: [String]?
        public var imageSizes = [256]
        public var epochs = [100]
        public var lossSets = ["sup+H+hist"]
        public var lessNormalFractions = [1.0]
        public var unetEpochs = [0]
        public var epsilons = [1e-6]
        public var trainStatistics = ["leave-one-out"]
        /// Share of train patches in PatchCore's memory (greedy k-center coreset; 1 = all).
        public var coresetFractions = [1.0]
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

    /// Parses and validates; unknown keys and bad values are errors.
    public static func parse(_ data: Data, file: String) throws -> Sweep {
        let text = String(decoding: data, as: UTF8.self)
        let reader = FieldReader(file: file, text: text)
        let any: Any
        if text.first(where: { !$0.isWhitespace }) == "{" {
            do { any = try JSONSerialization.jsonObject(with: data) } catch {
                throw SweepError(file: file, line: nil, field: "(document)", problem: "not valid JSON: \((error as NSError).userInfo["NSDebugDescription"] ?? error.localizedDescription)")
            }
        } else {
            any = try YAMLDocument.load(text, file: file)
        }
        guard let top = any as? [String: Any] else { throw reader.error("(document)", "must be a JSON object") }
        try reader.only(top, ["name", "dataset", "categories", "priority", "max_attempts", "grid", "diagnostic", "run"], at: "")
        var sweep = Sweep(name: try reader.string(top, "name"), dataset: try reader.string(top, "dataset", default: ""),
                          categories: try reader.strings(top, "categories", default: []))
        sweep.priority = try reader.int(top, "priority", default: 0)
        sweep.maxAttempts = try reader.int(top, "max_attempts", default: 3, atLeast: 1)
        if top["run"] != nil { sweep.run = try reader.string(top, "run") }
        if let g = top["grid"] {
            guard let grid = g as? [String: Any] else { throw reader.error("grid", "must be an object") }
            let fields = ["n_shot", "memory_types", "scale_types", "seeds", "backbone", "patch_backbone", "bank_backbone", "image_size", "epochs",
                          "loss_set", "less_normal_fraction", "unet_epochs", "epsilon", "train_statistic", "coreset_fraction"]
            try reader.only(grid, fields, at: "grid.")
            var d = Grid()
            d.nShot = try reader.ints(grid, "n_shot", path: "grid.n_shot", default: d.nShot, atLeast: 1)
            d.memoryTypes = try reader.strings(grid, "memory_types", path: "grid.memory_types", default: d.memoryTypes) { m in
                MemoryCombination(m) != nil ? nil : "'\(m)' is not a combination of h, c and p"
            }
            d.scaleTypes = try reader.strings(grid, "scale_types", path: "grid.scale_types", default: d.scaleTypes) {
                ScaleName(rawValue: $0) != nil ? nil : "'\($0)' is not max, std or none"
            }
            d.seeds = try reader.ints(grid, "seeds", path: "grid.seeds", default: d.seeds, atLeast: 0)
            let knownBackbone = { (name: String) -> String? in
                Sweep.knownBackbones.contains(name)
                    ? nil : "'\(name)' is not a known backbone"
            }
            d.backbones = try reader.strings(grid, "backbone", path: "grid.backbone", default: d.backbones, check: knownBackbone)
            if grid["patch_backbone"] != nil {
                d.patchBackbones = try reader.strings(grid, "patch_backbone", path: "grid.patch_backbone", default: [], check: knownBackbone)
            }
            if grid["bank_backbone"] != nil {
                d.bankBackbones = try reader.strings(grid, "bank_backbone", path: "grid.bank_backbone", default: [], check: knownBackbone)
            }
            d.imageSizes = try reader.ints(grid, "image_size", path: "grid.image_size", default: d.imageSizes, atLeast: 32)
            d.epochs = try reader.ints(grid, "epochs", path: "grid.epochs", default: d.epochs, atLeast: 1)
            d.lossSets = try reader.strings(grid, "loss_set", path: "grid.loss_set", default: d.lossSets) {
                LossSet(rawValue: $0) != nil ? nil : "'\($0)' is not sup, sup+H or sup+H+hist"
            }
            d.lessNormalFractions = try reader.doubles(grid, "less_normal_fraction", path: "grid.less_normal_fraction", default: d.lessNormalFractions) {
                $0 > 0 && $0 <= 1 ? nil : "\($0) is not in (0, 1]"
            }
            d.unetEpochs = try reader.ints(grid, "unet_epochs", path: "grid.unet_epochs", default: d.unetEpochs, atLeast: 0)
            d.epsilons = try reader.doubles(grid, "epsilon", path: "grid.epsilon", default: d.epsilons) { $0 > 0 ? nil : "\($0) is not positive" }
            d.trainStatistics = try reader.strings(grid, "train_statistic", path: "grid.train_statistic", default: d.trainStatistics) {
                TrainStatisticName(rawValue: $0) != nil ? nil : "'\($0)' is not leave-one-out or reference"
            }
            d.coresetFractions = try reader.doubles(grid, "coreset_fraction", path: "grid.coreset_fraction", default: d.coresetFractions) {
                $0 > 0 && $0 <= 1 ? nil : "\($0) is not in (0, 1]"
            }
            sweep.grid = d
        }
        if let g = top["diagnostic"] {
            guard let diag = g as? [String: Any] else { throw reader.error("diagnostic", "must be an object") }
            try reader.only(diag, ["jobs", "seconds", "fail_every", "permanent", "chained", "fail_while_exists", "outputs"], at: "diagnostic.")
            var d = Diagnostic()
            d.jobs = try reader.int(diag, "jobs", path: "diagnostic.jobs", default: 1, atLeast: 1)
            d.seconds = try reader.doubles(diag, "seconds", path: "diagnostic.seconds", default: [0]) { $0 >= 0 ? nil : "must not be negative" }[0]
            d.failEvery = try reader.int(diag, "fail_every", path: "diagnostic.fail_every", default: 0, atLeast: 0)
            d.permanent = try reader.bool(diag, "permanent", path: "diagnostic.permanent")
            d.chained = try reader.bool(diag, "chained", path: "diagnostic.chained")
            d.outputs = try reader.int(diag, "outputs", path: "diagnostic.outputs", default: 0, atLeast: 0)
            if diag["fail_while_exists"] != nil { d.failWhileExists = try reader.string(diag, "fail_while_exists") }
            sweep.diagnostic = d
        } else {
            if sweep.dataset.isEmpty { throw reader.error("dataset", "is required (the dataset root)") }
            if sweep.categories.isEmpty { throw reader.error("categories", "names no category") }
            for name in sweep.categories where name.isEmpty || name == "." || name == ".." || name.contains("/") {
                throw reader.error("categories", "'\(name)' is not a folder name inside the dataset")
            }
            if let twice = sweep.categories.first(where: { c in sweep.categories.filter { $0 == c }.count > 1 }) {
                throw reader.error("categories", "'\(twice)' is listed twice")
            }
        }
        return sweep
    }
}

/// Typed field access on a parsed JSON object, with errors that name the
/// file, the line where the field appears, and the field's path.
struct FieldReader {
    let file: String
    let text: String

    /// The first line naming the field: `"name"` in JSON, `name:` in YAML.
    func line(of field: String) -> Int? {
        let name = field.split(separator: ".").last.map(String.init) ?? field
        if let range = text.range(of: "\"\(name)\"") { return text[..<range.lowerBound].filter { $0 == "\n" }.count + 1 }
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var t = line.drop { $0 == " " }
            if t.hasPrefix("- ") { t = t.dropFirst(2).drop { $0 == " " } }
            if t.hasPrefix("\(name):") || t.hasPrefix("'\(name)':") { return i + 1 }
        }
        return nil
    }

    func error(_ field: String, _ problem: String) -> SweepError {
        SweepError(file: file, line: line(of: field), field: field, problem: problem)
    }

    func only(_ object: [String: Any], _ allowed: [String], at prefix: String) throws {
        for key in object.keys.sorted() where !allowed.contains(key) {
            throw error(prefix + key, "unknown field (expected one of: \(allowed.joined(separator: ", ")))")
        }
    }

    func string(_ o: [String: Any], _ key: String, default value: String? = nil) throws -> String {
        guard let v = o[key] else {
            if let value { return value }
            throw error(key, "is required")
        }
        guard let s = v as? String, !s.isEmpty else { throw error(key, "must be a non-empty string") }
        return s
    }

    func bool(_ o: [String: Any], _ key: String, path: String) throws -> Bool {
        guard let v = o[key] else { return false }
        guard Self.isBool(v), let b = v as? Bool else { throw error(path, "must be true or false") }
        return b
    }

    /// JSON true/false (Foundation hands them over as NSNumber, as numbers).
    static func isBool(_ value: Any) -> Bool {
        if let n = value as? NSNumber { return String(cString: n.objCType) == "c" }
        return value is Bool
    }

    /// A scalar or a non-empty list of scalars.
    func list(_ o: [String: Any], _ key: String, path: String) throws -> [Any]? {
        guard let v = o[key] else { return nil }
        let items = (v as? [Any]) ?? [v]
        guard !items.isEmpty else { throw error(path, "must not be an empty list") }
        return items
    }

    func strings(_ o: [String: Any], _ key: String, path: String? = nil, default value: [String],
                 check: (String) -> String? = { _ in nil }) throws -> [String] {
        let path = path ?? key
        guard let items = try list(o, key, path: path) else { return value }
        return try items.map { item in
            guard let s = item as? String else { throw error(path, "must be a string or a list of strings") }
            if let problem = check(s) { throw error(path, problem) }
            return s
        }
    }

    func ints(_ o: [String: Any], _ key: String, path: String, default value: [Int], atLeast minimum: Int) throws -> [Int] {
        guard let items = try list(o, key, path: path) else { return value }
        return try items.map { item in
            guard !Self.isBool(item), let n = item as? NSNumber, n.doubleValue == n.doubleValue.rounded() else {
                throw error(path, "must be an integer or a list of integers")
            }
            guard n.intValue >= minimum else { throw error(path, "\(n.intValue) is below the minimum \(minimum)") }
            return n.intValue
        }
    }

    func int(_ o: [String: Any], _ key: String, path: String? = nil, default value: Int, atLeast minimum: Int = .min) throws -> Int {
        guard o[key] != nil else { return value }
        if o[key] is [Any] { throw error(path ?? key, "must be a single integer") }
        return try ints(o, key, path: path ?? key, default: [value], atLeast: minimum)[0]
    }

    func doubles(_ o: [String: Any], _ key: String, path: String, default value: [Double], check: (Double) -> String?) throws -> [Double] {
        guard let items = try list(o, key, path: path) else { return value }
        return try items.map { item in
            guard !Self.isBool(item), let n = item as? NSNumber else { throw error(path, "must be a number or a list of numbers") }
            if let problem = check(n.doubleValue) { throw error(path, problem) }
            return n.doubleValue
        }
    }
}
