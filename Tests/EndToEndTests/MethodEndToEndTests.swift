import Foundation
import Testing
import Shared
import TestSupport
import Vision

/// The method itself through the system: a sweep over a small synthetic
/// category, every stage a job on real worker processes, artifacts passed
/// by hash, metrics recorded as results.
@Suite struct MethodEndToEndTests {
    @Test func aMethodSweepRunsEveryStageOnWorkersAndRecordsResults() throws {
        let cluster = try Cluster(leaseSeconds: 10)
        let data = cluster.state.url.appendingPathComponent("data")
        try SyntheticBenchmark.write(to: data, seed: 3, size: .small, only: ["pin_grid"])
        try cluster.startCoordinator()
        try cluster.submit("""
            {"name": "m", "dataset": "\(data.path)", "categories": ["pin_grid"], "max_attempts": 1,
             "grid": {"n_shot": 2, "image_size": 64, "patch_image_size": 64, "epochs": 2, "memory_types": ["h", "p", "hcp"], "unet_epochs": [0, 1]}}
            """)
        try cluster.startWorker("a")
        try cluster.startWorker("b")
        // preprocess, patch-features, segment-train, pseudo-label, unet-train,
        // two bank-fits (segmenter masks, UNet masks), six evaluate jobs.
        let counts = try cluster.wait("m", seconds: 600) { ($0["done"] ?? 0) + ($0["dead"] ?? 0) + ($0["blocked"] ?? 0) == 13 }
        #expect(counts == ["done": 13], "\(cluster.tail())")
        let results = try cluster.command(["results", "m"]).split(separator: "\n")
        // 6 evaluate jobs x (logical, structural, mean AUROC, pixel AUROC, sPRO).
        #expect(results.count == 1 + 6 * 5, "\(results)")
        #expect(results.contains { $0.hasPrefix("pin_grid,logical_auroc,") })
        let table = try cluster.command(["results", "m", "--table"])
        // A row per UNet setting (the grid varies it), not an average over both.
        #expect(table.contains("| category | setting | h/max LA | h/max SA | hcp/max LA |") && table.contains("| pin_grid | unet_epochs=0 |")
                && table.contains("| pin_grid | unet_epochs=1 |") && table.contains("| **mean** | unet_epochs=1 |"), "\(table)")
        // The report: the table, both ablations, ROC curves and example pictures from the stages' artifacts.
        let out = cluster.state.url.appendingPathComponent("report")
        _ = try cluster.command(["report", "m", "--out", out.path])
        let html = try String(contentsOf: out.appendingPathComponent("report.html"), encoding: .utf8)
        #expect(html.contains("<td>pin_grid</td>") && html.contains("Memory banks") && html.contains("UNet retraining"), "\(html.prefix(3000))")
        #expect(html.components(separatedBy: "class=\"roc-logical\"").count == 2)
        // AUROC per defect type: patch-features read the ground truth, evaluate scored each type.
        #expect(html.contains("<h2>Per defect type</h2>") && html.contains("<td>pin_grid</td><td>structural_anomalies</td>"), "\(html.prefix(3000))")
        // Four examples (top good, top logical, top structural, lowest anomaly), each an overlay and a map.
        #expect(html.components(separatedBy: "src=\"data:image/png;base64,").count - 1 == 8, "\(html.prefix(3000))")
        #expect(try String(contentsOf: out.appendingPathComponent("report.csv"), encoding: .utf8).split(separator: "\n").count == 1 + 6)
        // A second identical sweep reuses every job.
        try cluster.submit("""
            {"name": "again", "dataset": "\(data.path)", "categories": ["pin_grid"],
             "grid": {"n_shot": 2, "image_size": 64, "patch_image_size": 64, "epochs": 2, "memory_types": ["h"], "unet_epochs": 0}}
            """)
        #expect(try cluster.counts("again") == ["done": 6])
        #expect(try cluster.command(["results", "again"]).split(separator: "\n").count == 1 + 5)
        // Comparisons: against itself nothing drops; against a sweep with another headline (hcp, not h) a note says so.
        let same = try cluster.run(["report", "m", "--against", "m", "--max-drop", "0", "--out", out.path])
        #expect(same.status == 0 && same.output.contains("no drop of more than 0.0 points against 'm'"), "\(same)")
        let other = try cluster.command(["report", "again", "--against", "m", "--out", out.path])
        #expect(other.contains("note: 'm' has another headline setting"), "\(other)")
    }

    /// The same method sweep twice on the same data: once cleanly, once with
    /// its worker SIGKILLed in the middle of segment-train and then the
    /// coordinator SIGKILLed and restarted while the replacement worker
    /// holds a job. The faulted run's workers share a checkpoint folder and
    /// save every epoch: the replacement goes on from the killed worker's
    /// last saved epoch. The faulted run's results equal the clean run's,
    /// digit for digit: a retried, resumed or re-adopted stage computes what
    /// it would have.
    /// Cancelling a sweep while a worker trains its segmenter: the worker
    /// abandons the job and the stage stops at its next epoch (it says so
    /// in its log) instead of training on beside whatever comes next.
    @Test func aCancelledSegmenterStopsTraining() throws {
        let cluster = try Cluster(leaseSeconds: 10)
        let data = cluster.state.url.appendingPathComponent("data")
        try SyntheticBenchmark.write(to: data, seed: 3, size: .small, only: ["pin_grid"])
        try cluster.startCoordinator()
        try cluster.submit("""
            {"name": "long", "dataset": "\(data.path)", "categories": ["pin_grid"], "max_attempts": 1,
             "grid": {"n_shot": 2, "image_size": 64, "patch_image_size": 64, "epochs": 100000, "memory_types": ["h"]}}
            """)
        try cluster.startWorker("a")
        let log = cluster.state.url.appendingPathComponent("worker-a.log")
        /// The worker's log once it says `what`, or as it is after `seconds`.
        func logOnce(saying what: String, seconds: Double) -> String {
            let deadline = Date().addingTimeInterval(seconds)
            var text = ""
            while Date() < deadline {
                text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
                if text.contains(what) { break }
                Thread.sleep(forTimeInterval: 0.2)
            }
            return text
        }
        // Started (a job held ahead in the worker's window is leased too, but not running).
        #expect(logOnce(saying: "kind=segment-train token=", seconds: 300).contains("kind=segment-train token="), "\(cluster.tail())")
        Thread.sleep(forTimeInterval: 3)
        _ = try cluster.command(["cancel", "long"])
        let text = logOnce(saying: "an abandoned job's stage stopped", seconds: 60)
        #expect(text.contains("an abandoned job's stage stopped") && text.contains("kind=segment-train")
                && text.contains("cancelled after"), "\(cluster.tail())")
    }

    @Test func aSweepThroughKillsEndsWithTheCleanRunsResults() throws {
        let data = try TemporaryDirectory()
        try SyntheticBenchmark.write(to: data.url, seed: 4, size: .small, only: ["pin_grid"])
        let sweep = """
            {"name": "f", "dataset": "\(data.url.path)", "categories": ["pin_grid"], "max_attempts": 3,
             "grid": {"n_shot": 2, "image_size": 64, "patch_image_size": 64, "epochs": 20, "memory_types": ["h", "p", "hcp"]}}
            """
        func run(faults: Bool) throws -> String {
            let cluster = try Cluster(leaseSeconds: 2)
            let shared = cluster.state.url.appendingPathComponent("checkpoints")
            let saving = faults ? ["--checkpoints", shared.path, "--checkpoint-seconds", "0"] : []
            try cluster.startCoordinator()
            try cluster.submit(sweep)
            try cluster.startWorker("a", saving)
            if faults {
                _ = try cluster.waitKinds("f", seconds: 300) { $0["segment-train"]?["leased"] == 1 }
                // Killed once it has saved an epoch: a state file in the shared folder (not
                // only the partial file of a save under way, which the kill may cut off).
                let deadline = Date().addingTimeInterval(300)
                while Date() < deadline, !((try? FileManager.default.contentsOfDirectory(atPath: shared.path)) ?? [])
                        .contains(where: { $0.hasSuffix(".state") && !$0.hasPrefix(".") }) {
                    Thread.sleep(forTimeInterval: 0.05)
                }
                cluster.signalWorker("a", SIGKILL)
                try cluster.startWorker("b", saving)
                _ = try cluster.waitKinds("f", seconds: 300) { ($0["bank-fit"]?["leased"] ?? 0) + ($0["patch-features"]?["leased"] ?? 0) == 1 }
                cluster.killCoordinator()
                try cluster.startCoordinator()
            }
            let counts = try cluster.wait("f", seconds: 600) { ($0["done"] ?? 0) + ($0["dead"] ?? 0) + ($0["blocked"] ?? 0) == 8 }
            #expect(counts == ["done": 8], "\(cluster.tail())")
            if faults {
                // Nine runs for eight jobs: only the killed segment-train ran twice; the job in
                // flight across the coordinator's restart was re-adopted, not run again.
                let runs = try ["a", "b"].map {
                    try String(contentsOf: cluster.state.url.appendingPathComponent("worker-\($0).log"), encoding: .utf8)
                        .components(separatedBy: "kind=").count - 1
                }
                #expect(runs.reduce(0, +) == 9, "\(runs) \(cluster.tail())")
                let b = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-b.log"), encoding: .utf8)
                #expect(b.contains("resumed after epoch ") && b.contains("of 20 from \(shared.path)"), "\(b)")
                #expect(try FileManager.default.contentsOfDirectory(atPath: shared.path).isEmpty, "the state is removed once the stage is done")
            }
            return try cluster.command(["results", "f"])
        }
        let clean = try run(faults: false), faulted = try run(faults: true)
        #expect(clean.split(separator: "\n").count == 1 + 3 * 5)
        #expect(faulted == clean)
    }

    /// Each kind of bad dataset input in its own category, beside a healthy
    /// one: every broken category dies at its first stage, once (no retries:
    /// the error is not transient), with an error naming the file; the
    /// healthy category finishes.
    @Test func badInputKillsOnlyItsCategoryWithoutRetries() throws {
        let cluster = try Cluster(leaseSeconds: 10)
        let data = cluster.state.url.appendingPathComponent("data")
        let fm = FileManager.default
        try SyntheticBenchmark.write(to: data, seed: 3, size: .small, only: ["pin_grid", "bolt_bag", "bottle_label", "cable_pair", "snack_box"])
        func path(_ relative: String) -> URL { data.appendingPathComponent(relative) }
        // A truncated image.
        let truncated = path("bolt_bag/test/good/001.png")
        let bytes = try Data(contentsOf: truncated)
        try bytes.prefix(bytes.count / 2).write(to: truncated)
        // A ground-truth mask three columns wider than its image.
        let mask = path("bottle_label/ground_truth/structural_anomalies/000/000.png")
        let region = try PNG.read(mask, mode: .indices)
        var wide = Image(width: region.width + 3, height: region.height, channels: 1)
        for y in 0..<region.height { for x in 0..<region.width { wide[x: x, y: y, channel: 0] = region[x: x, y: y, channel: 0] } }
        try PNG.write(wide, to: mask)
        // A few-shot annotation in VIA JSON whose polygon has a string for its x coordinates.
        var manifest = try CategoryManifest.load(categoryRoot: path("cable_pair"))
        manifest.fewShot[0] = .init(image: manifest.fewShot[0].image, annotation: "annotations/000.json", format: .via)
        try Data(#"{"000.png1": {"filename": "000.png", "regions": [{"shape_attributes": {"name": "polygon", "all_points_x": "12,40,40", "all_points_y": [1, 1, 9]}, "region_attributes": {"label": "connector"}}]}}"#.utf8)
            .write(to: path("cable_pair/annotations/000.json"))
        try manifest.write(to: path("cable_pair"))
        // A manifest naming a labelled image that is not there.
        manifest = try CategoryManifest.load(categoryRoot: path("snack_box"))
        manifest.fewShot[0].image = "train/good/999.png"
        try manifest.write(to: path("snack_box"))
        // An empty split: a copy of the healthy category without its logical anomalies.
        try fm.copyItem(at: path("pin_grid"), to: path("pin_grid_empty"))
        for file in try fm.contentsOfDirectory(atPath: path("pin_grid_empty/test/logical_anomalies").path) {
            try fm.removeItem(at: path("pin_grid_empty/test/logical_anomalies/\(file)"))
        }

        try cluster.startCoordinator()
        let categories = ["pin_grid", "bolt_bag", "bottle_label", "cable_pair", "snack_box", "pin_grid_empty"]
        try cluster.submit("""
            {"name": "b", "dataset": "\(data.path)", "categories": ["\(categories.joined(separator: "\", \""))"], "max_attempts": 3,
             "grid": {"n_shot": 1, "image_size": 64, "patch_image_size": 64, "epochs": 1, "memory_types": ["h"]}}
            """)
        try cluster.startWorker("a")
        try cluster.startWorker("b")
        let counts = try cluster.wait("b", seconds: 600) { ($0["done"] ?? 0) + ($0["dead"] ?? 0) + ($0["blocked"] ?? 0) == 36 }
        #expect(counts == ["done": 6, "dead": 5, "blocked": 25], "\(cluster.tail())")
        let kinds = try cluster.kindCounts("b")
        #expect(kinds["preprocess"] == ["done": 1, "dead": 5], "every broken category died at its first stage: \(kinds)")
        let workerLogs = try ["a", "b"].map { try String(contentsOf: cluster.state.url.appendingPathComponent("worker-\($0).log"), encoding: .utf8) }
        #expect(workerLogs.map { $0.components(separatedBy: "kind=preprocess").count - 1 }.reduce(0, +) == 6,
                "each category's preprocess ran once, none retried")
        let coordinator = try String(contentsOf: cluster.logs[0], encoding: .utf8)
        for named in ["bolt_bag/test/good/001.png", "bottle_label/ground_truth/structural_anomalies/000/000.png: mask is",
                      "cable_pair/annotations/000.json: field '000.png1.regions[0].shape_attributes.all_points_x'",
                      "snack_box/psad-manifest.json: field 'few_shot[0].image'", "pin_grid_empty/test/logical_anomalies: split has no PNG images"] {
            #expect(coordinator.contains(named), "the error names the file: \(named)")
        }
    }

    /// A dataset changed in place is never computed under the old keys:
    /// submitting the same sweep again says the data changed instead of
    /// handing back the old results, the sweep under a new name gets jobs of
    /// its own, and a worker that finds other files than the sweep was
    /// submitted with refuses the job (at once, naming the folder).
    @Test func aDatasetChangedInPlaceIsNeverComputedUnderTheOldKeys() throws {
        let cluster = try Cluster(leaseSeconds: 10)
        let data = cluster.state.url.appendingPathComponent("data")
        try SyntheticBenchmark.write(to: data, seed: 3, size: .small, only: ["pin_grid"])
        let file = cluster.state.url.appendingPathComponent("d.json")
        try Data("""
            {"name": "d", "dataset": "\(data.path)", "categories": ["pin_grid"],
             "grid": {"n_shot": 1, "image_size": 64, "patch_image_size": 64, "epochs": 1, "memory_types": ["h"]}}
            """.utf8).write(to: file)
        try cluster.startCoordinator()
        let first = try cluster.run(["submit", file.path])
        #expect(first.status == 0 && first.output.contains("data: 1 of 1 categories read"), "\(first)")
        #expect(try cluster.run(["submit", file.path]).output.contains("was submitted before (same file)"))
        // One train image replaced by another.
        let fm = FileManager.default, train = data.appendingPathComponent("pin_grid/train/good")
        try fm.removeItem(at: train.appendingPathComponent("000.png"))
        try fm.copyItem(at: train.appendingPathComponent("001.png"), to: train.appendingPathComponent("000.png"))
        let again = try cluster.run(["submit", file.path])
        #expect(again.status != 0 && again.errors.contains("sweep 'd' was submitted before with other data in pin_grid"), "\(again)")
        let renamed = try cluster.run(["submit", file.path, "--name", "d2"])
        #expect(renamed.output.contains("sweep d2: 6 jobs, 6 new, 0 reused (done), 0 already queued"), "\(renamed)")
        // Changed once more before any worker ran: neither sweep's data is there now.
        try fm.removeItem(at: train.appendingPathComponent("007.png"))
        try cluster.startWorker("a")
        for sweep in ["d", "d2"] {
            let kinds = try cluster.waitKinds(sweep, seconds: 60) { $0["preprocess"]?["dead"] == 1 }
            #expect(kinds["evaluate"]?["blocked"] == 1, "\(kinds)")
        }
        let coordinator = try String(contentsOf: cluster.logs[0], encoding: .utf8)
        #expect(coordinator.contains("pin_grid is not the data this sweep was submitted with"), "\(cluster.tail())")
        // `dataset check --digest` on the worker's machine shows the digest the worker saw.
        let here = try DatasetDigest.of(categoryAt: data.appendingPathComponent("pin_grid")).hex
        let check = try cluster.run(["dataset", "check", data.appendingPathComponent("pin_grid").path, "--digest"], withState: false)
        #expect(check.output.contains("digest \(here) ("), "\(check)")
        #expect(coordinator.contains("(digest \(here.prefix(12)) here"))
        let worker = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-a.log"), encoding: .utf8)
        #expect(worker.components(separatedBy: "kind=preprocess").count - 1 == 2, "each preprocess ran once, not retried")
    }
}
