import Foundation
import Scheduler
import Shared
import Vision

/// Everything a sweep's report shows, gathered from the coordinator's
/// database and artifacts: the per-category table at the headline setting
/// (laid out like the paper's), one ablation table per thing the sweep
/// varies, ROC curves, example images with their part segmentation and
/// anomaly map, stage costs, and a comparison with another sweep.
public struct SweepReport: Sendable {
    /// Image and pixel metrics in the order tables show them.
    public static let metrics = ["logical_auroc", "structural_auroc", "mean_auroc", "pixel_auroc", "spro"]

    public struct CategoryRow: Sendable {
        public var category: String
        public var metrics: [String: Double]
        /// The same category and setting in the `--against` sweep.
        public var against: [String: Double]?
    }

    /// One varied parameter, the others held at the headline setting.
    /// Values are means over the categories that have every row.
    public struct Ablation: Sendable {
        public var parameter: String
        public var rows: [(value: String, metrics: [String: Double])]
        public var categories: Int
    }

    public struct Curve: Sendable {
        public var category: String
        public var logical: RocPoints
        public var structural: RocPoints
    }

    public struct Example: Sendable {
        public var category: String
        public var caption: String
        public var split: String
        public var id: String
        public var score: Double
        /// PNGs: the test image with its part segmentation blended in, and
        /// the anomaly map in colour.
        public var overlay: Data
        public var map: Data
    }

    /// Image AUROC of one defect type at the headline setting (from the
    /// evaluation's `defect_types.json`).
    public struct DefectTypeRow: Codable, Sendable, Equatable {
        public var category: String?
        public var split: String
        public var defectType: String
        public var images: Int
        public var auroc: Double
    }

    public struct Evaluation: Sendable {
        public var category: String
        public var setting: [String: String]
        public var metrics: [String: Double]
    }

    public var sweep: String
    public var against: String?
    public var headline: [String: String]
    /// Setting keys with more than one value in this sweep.
    public var varied: [String]
    public var rows: [CategoryRow]
    public var ablations: [Ablation]
    public var curves: [Curve]
    public var examples: [Example]
    /// Per category and defect type, where the data had ground truth.
    public var defectTypes: [DefectTypeRow] = []
    public var stages: [SweepRecord.Stage]
    public var evaluations: [Evaluation]
    /// Things the reader should know (missing images, pending jobs).
    public var notes: [String]

    /// The mean over categories of each metric of the main table (over the
    /// categories that have it).
    public var meanRow: [String: Double] { Self.mean(rows.map(\.metrics)) }
    public var meanAgainst: [String: Double]? {
        let a = rows.compactMap(\.against)
        return a.isEmpty ? nil : Self.mean(a)
    }

    static func mean(_ values: [[String: Double]]) -> [String: Double] {
        var sums: [String: (Double, Int)] = [:]
        for v in values { for (k, x) in v { sums[k, default: (0, 0)].0 += x; sums[k, default: (0, 0)].1 += 1 } }
        return sums.mapValues { $0.0 / Double($0.1) }
    }
}

extension SweepReport {
    public enum BuildError: Error, CustomStringConvertible {
        case notAMethodSweep(String)
        public var description: String {
            switch self { case .notAMethodSweep(let s): "sweep '\(s)' has no evaluations (a diagnostic sweep has nothing to report)" }
        }
    }

    /// Gathers the report of `sweep`. `examples` test images per category
    /// are shown (the highest-scoring good image, the highest-scoring
    /// logical and structural anomalies, the lowest-scoring anomaly).
    public static func build(store: JobStore, artifacts: ArtifactStore, sweep name: String, against: String? = nil) throws -> SweepReport {
        let record = try store.sweepRecord(name)
        let sweep = try Sweep.parse(Data(record.file.utf8), file: "sweep '\(name)'")
        guard !record.evaluations.isEmpty else { throw BuildError.notAMethodSweep(name) }
        let headline = try decode(sweep.grid.headlineSetting)
        let evaluations = try record.evaluations.map { Evaluation(category: $0.category, setting: try decode($0.setting), metrics: $0.metrics) }
        let varied = Set(headline.keys).union(evaluations.flatMap(\.setting.keys)).sorted()
            .filter { key in Set(evaluations.map { $0.setting[key] ?? "" }).count > 1 }
        var notes: [String] = []
        let pending = record.evaluations.filter(\.metrics.isEmpty).count
        if pending > 0 { notes.append("\(pending) of \(record.evaluations.count) evaluations have no results yet (not done, dead or blocked): their cells are empty.") }

        // The main table: each category at the headline setting.
        let main = zip(record.evaluations, evaluations).filter { Self.matches($0.1.setting, headline) }.map(\.0)
        var againstRows: [String: [String: Double]] = [:]
        if let against {
            let other = try store.sweepRecord(against)
            let otherHeadline = try decode(try Sweep.parse(Data(other.file.utf8), file: "sweep '\(against)'").grid.headlineSetting)
            if otherHeadline != headline {
                notes.append("'\(against)' has another headline setting; its headline results are compared.")
            }
            for e in other.evaluations where Self.matches(try decode(e.setting), otherHeadline) { againstRows[e.category] = e.metrics }
        }
        let rows = main.map { CategoryRow(category: $0.category, metrics: $0.metrics, against: against == nil ? nil : againstRows[$0.category]) }

        // Ablations: one per varied parameter (memory and scale type as one).
        var ablations: [Ablation] = []
        let banks = [EvaluationSetting.CodingKeys.memoryType.name, EvaluationSetting.CodingKeys.scaleType.name]
        var groups = varied.filter { !banks.contains($0) }.map { [$0] }
        if varied.contains(where: banks.contains) { groups.insert(banks, at: 0) }
        for group in groups {
            let matching = evaluations.filter { Self.matches($0.setting, headline, except: Set(group)) && !$0.metrics.isEmpty }
            var byValue: [String: [String: [String: Double]]] = [:]   // value -> category -> metrics
            var order: [String] = []
            for e in matching {
                // Absent: "-" for an optional field at its default, "?" for a result recorded before the field existed.
                let value = group.map { e.setting[$0] ?? (headline[$0] == nil ? "-" : "?") }.joined(separator: "/")
                if byValue[value] == nil { order.append(value) }
                byValue[value, default: [:]][e.category] = e.metrics
            }
            // Only categories present in every row, so the rows compare like with like.
            var categories = Set(byValue.values.first?.keys.map { $0 } ?? [])
            for perCategory in byValue.values { categories.formIntersection(perCategory.keys) }
            let rows = order.sorted(by: Self.ablationOrder).map { value in
                (value: value, metrics: mean(categories.sorted().compactMap { byValue[value]?[$0] }))
            }
            ablations.append(Ablation(parameter: group.joined(separator: "/"), rows: rows, categories: categories.count))
        }

        // Curves and examples of the headline setting.
        var curves: [Curve] = [], examples: [Example] = [], defectTypes: [DefectTypeRow] = []
        for evaluation in main where !evaluation.metrics.isEmpty {
            let outputs = try store.outputs(of: evaluation.job)
            if let hash = outputs[ArtifactFormat.defectTypes] {
                do {
                    defectTypes += try ArtifactFormat.decode([DefectTypeAUROC].self, try store.artifact(hash, in: artifacts),
                                                             name: ArtifactFormat.defectTypes).map {
                        DefectTypeRow(category: evaluation.category, split: $0.split, defectType: $0.defectType, images: $0.images, auroc: $0.auroc)
                    }
                } catch {
                    notes.append("\(evaluation.category): defect_types.json unreadable (\(error)); no AUROC per defect type.")
                }
            }
            if let hash = outputs[ArtifactFormat.roc] {
                do {
                    let roc = try ArtifactFormat.decode([String: RocPoints].self, try store.artifact(hash, in: artifacts), name: ArtifactFormat.roc)
                    guard let l = roc["logical"], let s = roc["structural"], l.fpr.count == l.tpr.count, s.fpr.count == s.tpr.count else {
                        throw Missing(description: "no logical and structural curves of matching lengths")
                    }
                    curves.append(Curve(category: evaluation.category, logical: l, structural: s))
                } catch {
                    notes.append("\(evaluation.category): roc.json unreadable (\(error)); no ROC curve.")
                }
            } else {
                notes.append("\(evaluation.category): no ROC points (evaluated by a version that did not write roc.json).")
            }
            do {
                examples += try Self.examples(evaluation, outputs: outputs, sweep: sweep, headline: headline, store: store, artifacts: artifacts)
            } catch {
                notes.append("\(evaluation.category): no example images (\(error)).")
            }
        }
        return SweepReport(sweep: name, against: against, headline: headline, varied: varied, rows: rows, ablations: ablations,
                           curves: curves, examples: examples, defectTypes: defectTypes, stages: record.stages, evaluations: evaluations,
                           notes: notes)
    }

    /// Known values in the paper's order (each bank alone, then pairs, then
    /// all three; the method's max scaling first), numbers in numeric order,
    /// the rest by name; "a/b" values part by part.
    static let knownOrder = ["h", "c", "p", "hc", "hp", "cp", "hcp", "n", "hcpn", "g", "hcpg", "hcpng", "max", "std", "none", "sup", "sup+H", "sup+H+hist"]

    static func ablationOrder(_ a: String, _ b: String) -> Bool {
        let x = a.split(separator: "/").map(String.init), y = b.split(separator: "/").map(String.init)
        for (p, q) in zip(x, y) where p != q {
            if let i = knownOrder.firstIndex(of: p), let j = knownOrder.firstIndex(of: q) { return i < j }
            if let u = Double(p), let v = Double(q) { return u < v }
            return p < q
        }
        return x.count < y.count
    }

    /// Whether a recorded setting is `headline` apart from the fields in
    /// `except`. A field the setting lacks (recorded before the field
    /// existed, e.g. `patch_backbone`) does not count against it; a field
    /// the headline lacks does (an optional field, as `view_reuse` or
    /// `combine`, is absent at its default, so a setting that names it is
    /// another setting).
    static func matches(_ setting: [String: String], _ headline: [String: String], except: Set<String> = []) -> Bool {
        headline.allSatisfy { key, value in except.contains(key) || (setting[key].map { $0 == value } ?? true) }
            && setting.keys.allSatisfy { headline[$0] != nil || except.contains($0) }
    }

    static func decode(_ setting: String) throws -> [String: String] {
        try JSONDecoder().decode([String: ParameterValue].self, from: Data(setting.utf8)).mapValues(\.description)
    }

    struct Missing: Error, CustomStringConvertible { let description: String }

    static func examples(_ evaluation: SweepRecord.Evaluation, outputs: [String: String], sweep: Sweep, headline: [String: String],
                         store: JobStore, artifacts: ArtifactStore) throws -> [Example] {
        guard let scoresHash = outputs[ArtifactFormat.scoresCSV] else { throw Missing(description: "evaluate wrote no \(ArtifactFormat.scoresCSV)") }
        guard let patch = try store.input(of: evaluation.job, role: "patch"),
              let banks = try store.input(of: evaluation.job, role: "banks"),
              let masks = try store.input(of: banks, role: "masks") else { throw Missing(description: "the evaluation's inputs are not recorded") }
        let patchOutputs = try store.outputs(of: patch), maskOutputs = try store.outputs(of: masks)
        // scores.csv rows follow the test listing: good, logical, structural, each sorted by id
        // (LocoCategory's order), which is also the order of the map names per split.
        let rows = try ArtifactFormat.readScores(try store.artifact(scoresHash, in: artifacts))
        var ids: [String: [String]] = [:]   // split -> image ids, sorted
        for name in patchOutputs.keys {
            if let map = ArtifactFormat.testMap(name) { ids[map.split, default: []].append(map.id) }
        }
        for split in ids.keys { ids[split]!.sort() }
        var scored: [(split: String, id: String, score: Double)] = []
        var seen: [String: Int] = [:]
        for (split, score) in rows {
            let k = seen[split, default: 0]
            let ids = ids[split] ?? []
            guard k < ids.count else { throw Missing(description: "more scores than anomaly maps in \(split)") }
            scored.append((split, ids[k], score))
            seen[split] = k + 1
        }
        func top(_ split: String) -> (split: String, id: String, score: Double)? { scored.filter { $0.split == split }.max { $0.score < $1.score } }
        var picks: [(String, (split: String, id: String, score: Double))] = []
        if let g = top("good") { picks.append(("good image with the highest score", g)) }
        if let l = top("logical_anomalies") { picks.append(("logical anomaly with the highest score", l)) }
        if let s = top("structural_anomalies") { picks.append(("structural anomaly with the highest score", s)) }
        if let low = scored.filter({ $0.split != "good" }).min(by: { $0.score < $1.score }) { picks.append(("anomaly with the lowest score", low)) }
        let size = Int(headline["image_size"] ?? "") ?? 256
        let root = URL(fileURLWithPath: sweep.dataset).appendingPathComponent(evaluation.category)
        let images = try? ReportImages(categoryRoot: root, size: size)
        return try picks.map { caption, pick in
            guard let maskHash = maskOutputs[ArtifactFormat.mask(split: "test/\(pick.split)", id: pick.id)],
                  let mapHash = patchOutputs[ArtifactFormat.map(split: "test/\(pick.split)", id: pick.id)] else {
                throw Missing(description: "no mask or map for \(pick.split)/\(pick.id)")
            }
            let mask = try store.artifact(maskHash, in: artifacts), map = try store.artifact(mapHash, in: artifacts)
            let picture = try images?.image(split: pick.split, id: pick.id)
            return Example(category: evaluation.category, caption: caption, split: pick.split, id: pick.id, score: pick.score,
                           overlay: try ReportImages.overlay(picture, mask: mask, size: size), map: try ReportImages.heat(map))
        }
    }
}

extension SweepReport {
    /// The drops against the `--against` sweep larger than `points`
    /// percentage points, in LA, SA or their mean, per category and in the
    /// mean row; a category with results there and none here is a drop too.
    public func regressions(points: Double) -> [String] {
        guard let against else { return [] }
        var found: [String] = []
        func check(_ name: String, _ now: [String: Double], _ before: [String: Double]) {
            for metric in ["logical_auroc", "structural_auroc", "mean_auroc"] {
                guard let b = before[metric] else { continue }
                let label = "\(name) \(ReportWriter.names[metric]!)"
                guard let n = now[metric] else { found.append("\(label): \(ReportWriter.percent(b)) in '\(against)', no result now"); continue }
                if 100 * (b - n) > points {
                    found.append("\(label): \(ReportWriter.percent(n)), was \(ReportWriter.percent(b)) in '\(against)' (\(ReportWriter.delta(n, b)) points)")
                }
            }
        }
        for row in rows { check(row.category, row.metrics, row.against ?? [:]) }
        if let mean = meanAgainst { check("mean", meanRow, mean) }
        return found
    }
}
