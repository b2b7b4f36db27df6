import Foundation
@testable import Report
import Scheduler
import Shared
import Testing
import TestSupport
import Vision

/// The report's numbers come from a sweep whose results are made up here,
/// so every cell is known: LA = 0.5 + 0.1 n_shot + 0.2 (hcp) + 0.05 (max
/// scaling) + 0.01 (category b), SA = LA - 0.1.
@Suite struct ReportTests {
    static func la(_ s: [String: String], _ category: String) -> Double {
        0.5 + 0.1 * Double(Int(s["n_shot"]!)!) + (s["memory_type"] == "hcp" ? 0.2 : 0) + (s["scale_type"] == "max" ? 0.05 : 0)
            + (category == "b" ? 0.01 : 0)
    }

    static let roc = #"{"logical": {"fpr": [0, 0, 1], "tpr": [0, 0.5, 1]}, "structural": {"fpr": [0, 1], "tpr": [0, 1]}}"#
    static let defectTypes = #"[{"auroc": 0.75, "defect_type": "wrong_slot", "images": 6, "split": "logical_anomalies"}]"#

    /// A state directory with the sweep submitted and every job completed.
    static func finishedSweep(_ dir: TemporaryDirectory, roc: String = roc) throws -> JobStore {
        let store = try JobStore(path: dir.url.appendingPathComponent("state.sqlite").path)
        let sweep = try Sweep.parse(Data("""
            {"name": "s", "dataset": "/nowhere", "categories": ["a", "b"],
             "grid": {"n_shot": [1, 2], "memory_types": ["h", "hcp"], "scale_types": ["max", "none"]}}
            """.utf8), file: "s.json")
        try store.submit(sweep, file: String(decoding: try JSONSerialization.data(withJSONObject: [
            "name": "s", "dataset": "/nowhere", "categories": ["a", "b"],
            "grid": ["n_shot": [1, 2], "memory_types": ["h", "hcp"], "scale_types": ["max", "none"]]]), as: UTF8.self), now: 100)
        var settings: [JobKey: (String, [String: String])] = [:]
        for e in SweepExpander.expand(sweep).evaluations {
            settings[e.key] = (e.category, try JSONDecoder().decode([String: ParameterValue].self, from: Data(e.setting.utf8)).mapValues(\.description))
        }
        let rocHash = ArtifactStore.hash(Data(roc.utf8)), typesHash = ArtifactStore.hash(Data(defectTypes.utf8))
        while let a = try store.dispatch(worker: "w", memoryMiB: 1 << 20, now: 200, leaseSeconds: 10) {
            var metrics: [String: Double] = [:], outputs: [String: String] = [:]
            if a.kind == .evaluate, let (category, setting) = settings[a.key] {
                let l = la(setting, category)
                metrics = ["logical_auroc": l, "structural_auroc": l - 0.1, "mean_auroc": l - 0.05]
                outputs["roc.json"] = rocHash
                outputs["defect_types.json"] = typesHash
            }
            _ = try store.complete(token: a.token, outputs: outputs, metrics: metrics,
                                   smallBlobs: [(rocHash, Data(roc.utf8)), (typesHash, Data(defectTypes.utf8))], now: 210)
        }
        return store
    }

    @Test func theMainTableAndEachAblationHoldTheOtherSettingsAtTheHeadline() throws {
        let dir = try TemporaryDirectory()
        let store = try Self.finishedSweep(dir)
        let report = try SweepReport.build(store: store, artifacts: try ArtifactStore(root: dir.url), sweep: "s")
        #expect(report.headline["n_shot"] == "1" && report.headline["memory_type"] == "hcp" && report.headline["scale_type"] == "max")
        #expect(report.varied == ["memory_type", "n_shot", "scale_type"])
        // Main table: n_shot 1, hcp, max.
        #expect(report.rows.map(\.category) == ["a", "b"])
        #expect(abs(report.rows[0].metrics["logical_auroc"]! - 0.85) < 1e-12 && abs(report.rows[1].metrics["structural_auroc"]! - 0.76) < 1e-12)
        #expect(abs(report.meanRow["logical_auroc"]! - 0.855) < 1e-12)
        // Ablations: memory/scale at n_shot 1; n_shot at hcp/max. Means over both categories.
        #expect(report.ablations.map(\.parameter) == ["memory_type/scale_type", "n_shot"])
        let memory = report.ablations[0]
        #expect(memory.rows.map(\.value) == ["h/max", "h/none", "hcp/max", "hcp/none"] && memory.categories == 2)
        #expect(abs(memory.rows[0].metrics["logical_auroc"]! - 0.655) < 1e-12 && abs(memory.rows[3].metrics["logical_auroc"]! - 0.805) < 1e-12)
        let shots = report.ablations[1]
        #expect(shots.rows.map(\.value) == ["1", "2"])
        #expect(abs(shots.rows[1].metrics["structural_auroc"]! - 0.855) < 1e-12)
        // ROC curves from roc.json; no example images (no scores.csv here), said in a note.
        #expect(report.curves.count == 2 && report.curves[0].logical.tpr == [0, 0.5, 1])
        #expect(report.notes.contains { $0.hasPrefix("a: no example images") })
        #expect(report.stages.first { $0.kind == "evaluate" }.map { ($0.jobs, $0.done, $0.reused, $0.ran) } ?? (0, 0, 0, 0) == (16, 16, 0, 16))

        let html = ReportWriter.html(report)
        #expect(html.contains("<td>a</td><td>85.0</td><td>75.0</td><td>80.0</td>"), "\(html)")
        #expect(html.contains("<tr class=\"mean\"><td>mean</td><td>85.5</td><td>75.5</td><td>80.5</td>"))
        #expect(html.contains("<h2>Labelled images (n_shot)</h2>") && html.contains("<tr><td>2</td><td>95.5</td><td>85.5</td>"))
        // (fpr, tpr) = (0, 0), (0, 0.5), (1, 1) in a 220-pixel square 30 pixels in.
        #expect(html.contains(#"class="roc-logical" d="M30.0,250.0 L30.0,140.0 L250.0,30.0""#))
        // AUROC per defect type from each headline evaluation's defect_types.json.
        #expect(report.defectTypes.map(\.category) == ["a", "b"] && report.defectTypes[1].defectType == "wrong_slot")
        #expect(html.contains("<tr><td>b</td><td>logical_anomalies</td><td>wrong_slot</td><td>6</td><td>75.0</td></tr>"))
        let csv = ReportWriter.csv(report).split(separator: "\n")
        #expect(csv.count == 1 + 16 && csv[0].hasPrefix("category,backbone,bank_backbone,coreset_fraction,"))
        let json = try JSONSerialization.jsonObject(with: try ReportWriter.json(report)) as? [String: Any]
        #expect((json?["ablations"] as? [Any])?.count == 2 && (json?["evaluations"] as? [Any])?.count == 16)
        #expect((json?["defect_types"] as? [[String: Any]])?.first?["auroc"] as? Double == 0.75)
    }

    @Test func aComparisonFlagsOnlyDropsBeyondTheTolerance() throws {
        let dir = try TemporaryDirectory()
        let store = try Self.finishedSweep(dir)
        var report = try SweepReport.build(store: store, artifacts: try ArtifactStore(root: dir.url), sweep: "s", against: "s")
        #expect(report.rows.allSatisfy { $0.against == $0.metrics } && report.regressions(points: 0).isEmpty)
        report.rows[0].against = ["logical_auroc": 0.87, "structural_auroc": 0.755, "mean_auroc": 0.8, "spro": 0.5]
        report.rows[1].against?["structural_auroc"] = nil
        report.rows[1].metrics["logical_auroc"] = nil
        // a: LA 85.0 against 87.0 (-2.0); SA 75.0 against 75.5 (-0.5); b has no LA now.
        let drops = report.regressions(points: 1)
        #expect(drops.count == 3, "\(drops)")
        #expect(drops.contains("a LA: 85.0, was 87.0 in 's' (-2.0 points)"))
        #expect(drops.contains("b LA: 86.0 in 's', no result now"))
        #expect(drops.contains { $0.hasPrefix("mean LA: ") })
        #expect(ReportWriter.html(report).contains("<td class=\"down\">-2.0</td>"))
    }

    @Test func aMalformedRocFileIsANoteNotAFailure() throws {
        let dir = try TemporaryDirectory()
        let store = try Self.finishedSweep(dir, roc: #"{"logical": {"fpr": [0, 1], "tpr": [0]}}"#)
        let report = try SweepReport.build(store: store, artifacts: try ArtifactStore(root: dir.url), sweep: "s")
        #expect(report.curves.isEmpty && report.rows.count == 2)
        #expect(report.notes.contains { $0.hasPrefix("a: roc.json unreadable") }, "\(report.notes)")
    }

    @Test func settingsRecordedBeforeAFieldExistedStillMatchTheHeadline() {
        let headline = ["n_shot": "5", "memory_type": "hcp", "patch_backbone": "resnet18"]
        #expect(SweepReport.matches(["n_shot": "5", "memory_type": "hcp"], headline))
        #expect(!SweepReport.matches(["n_shot": "1", "memory_type": "hcp"], headline))
        #expect(SweepReport.matches(["n_shot": "5", "memory_type": "h"], headline, except: ["memory_type"]))
        #expect(!SweepReport.matches(["n_shot": "5", "memory_type": "hcp", "patch_backbone": "resnet50"], headline))
        // An optional field absent from the headline (its default) is another setting where a result names it.
        #expect(!SweepReport.matches(["n_shot": "5", "memory_type": "hcp", "combine": "max"], headline))
        #expect(SweepReport.matches(["n_shot": "5", "memory_type": "hcp", "combine": "max"], headline, except: ["combine"]))
    }

    @Test func ablationRowsFollowThePapersOrder() {
        #expect(["hcp/none", "c/max", "h/none", "p/max", "hcp/max", "h/max"].sorted(by: SweepReport.ablationOrder)
                == ["h/max", "h/none", "c/max", "p/max", "hcp/max", "hcp/none"])
        #expect(["0.5", "0.125", "1"].sorted(by: SweepReport.ablationOrder) == ["0.125", "0.5", "1"])
        #expect(["sup+H+hist", "sup", "sup+H"].sorted(by: SweepReport.ablationOrder) == ["sup", "sup+H", "sup+H+hist"])
    }

    @Test func anOverlayBlendsPartColoursOnlyWherePartsWerePredicted() throws {
        let image = Image(width: 2, height: 1, channels: 3, pixels: [100, 100, 100, 100, 100, 100])
        let mask = try PNG.encode(Image(width: 2, height: 1, channels: 1, pixels: [0, 1]), palette: ClassPalette.base)
        let out = try PNG.decode(try ReportImages.overlay(image, mask: mask, size: 2), source: "overlay")
        // Class 1 is (230, 25, 75): 0.45 * 100 + 0.55 * colour.
        #expect(out.pixels == [100, 100, 100, 172, 59, 86])
        let wrongSize = try PNG.encode(Image(width: 1, height: 1, channels: 1, pixels: [1]), palette: ClassPalette.base)
        #expect(throws: PNGError.self) { try ReportImages.overlay(image, mask: wrongSize, size: 2) }
    }

    @Test func theHeatScaleRunsThroughItsStops() throws {
        #expect(ReportImages.colour(0) == (68, 1, 84) && ReportImages.colour(255) == (253, 231, 37))
        // 255 / 4 * 2 = 127.5: halfway between stops 1 and 2 is 127.5, so 128 is just past stop 2.
        let c = ReportImages.colour(128)
        #expect(abs(Int(c.0) - 33) <= 1 && abs(Int(c.1) - 145) <= 1 && abs(Int(c.2) - 140) <= 1)
        let map = try PNG.encode(Image(width: 2, height: 1, channels: 1, pixels: [0, 255]))
        #expect(try PNG.decode(try ReportImages.heat(map), source: "heat").pixels == [68, 1, 84, 253, 231, 37])
    }
}
