import Foundation
import Stages
import Testing
import TestSupport
import Vision

/// The method has one implementation: a category run as a sweep (a
/// coordinator and a worker process, one job per stage, files through the
/// protocol) and in one process (`psad-worker method`, the same stage
/// values chained in memory) gives the same metrics, to the last bit.
@Suite struct OneMethodPathTests {
    @Test func aSweepAndTheInProcessChainGiveIdenticalMetrics() throws {
        let cluster = try Cluster(leaseSeconds: 10)
        let data = cluster.state.url.appendingPathComponent("data")
        try SyntheticBenchmark.write(to: data, seed: 8, size: .small, only: ["bottle_label"])
        try cluster.startCoordinator()
        try cluster.submit("""
            {"name": "both", "dataset": "\(data.path)", "categories": ["bottle_label"], "max_attempts": 1,
             "grid": {"n_shot": 3, "image_size": 64, "patch_image_size": 64, "epochs": 2, "unet_epochs": 1, "epsilon": 1e-6, "seeds": [3],
                      "memory_types": ["h", "c", "p", "hcp"], "scale_types": ["max", "std", "none"]}}
            """)
        try cluster.startWorker("a")
        let counts = try cluster.wait("both", seconds: 600) { ($0["done"] ?? 0) + ($0["dead"] ?? 0) + ($0["blocked"] ?? 0) == 18 }
        #expect(counts == ["done": 18], "\(cluster.tail())")
        var swept: [String: Double] = [:]
        for line in try cluster.command(["results", "both", "--json"]).split(separator: "\n") {
            let row = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let setting = try #require(row["setting"] as? [String: Any])
            let key = "\(setting["memory_type"] ?? "?")/\(setting["scale_type"] ?? "?")"
            if let metric = row["metric"] as? String, let value = row["value"] as? Double { swept["\(key) \(metric)"] = value }
        }

        let (status, output) = try runProgram(Cluster.binaries.appendingPathComponent("psad-worker").path, [
            "method", "--category", data.appendingPathComponent("bottle_label").path, "--n-shot", "3", "--image-size", "64", "--patch-image-size", "64",
            "--epochs", "2", "--unet-epochs", "1", "--epsilon", "1e-6", "--seed", "3", "--losses", "sup+H+hist",
            "--memory-types", "h,c,p,hcp", "--scale-types", "max,std,none"])
        #expect(status == 0, "\(output.suffix(2000))")
        let json = String(output[try #require(output.firstIndex(of: "{"))...])
        let result = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let run = try #require((result["runs"] as? [[String: Any]])?.first)
        let metrics = try #require(run["metrics"] as? [String: [String: Double]])
        #expect(metrics.count == 12)
        var compared = 0
        for (setting, m) in metrics {
            for (name, metric) in [("logical_auroc", "logical_auroc"), ("structural_auroc", "structural_auroc")] {
                let mine = try #require(m[name], "\(setting) \(name)")
                let theirs = try #require(swept["\(setting) \(metric)"], "the sweep has no \(setting) \(metric): \(swept.keys.sorted())")
                #expect(mine == theirs, "\(setting) \(metric): in process \(mine), swept \(theirs)")
                compared += 1
            }
        }
        #expect(compared == 24)
        // The pixel metrics come from the same patch-features stage.
        let pixel = try #require(result["pixel"] as? [String: Double])
        #expect(pixel["pixel_auroc"] == swept["hcp/max pixel_auroc"] && pixel["spro"] == swept["hcp/max spro"], "\(pixel)")
    }

    /// n_shot is "up to N" (SPEC-PSAD: 5 labelled images, or one per
    /// product type): a value no category can give fails at submit, naming
    /// the field; one that a category cannot give is said, and its
    /// segment-train job is keyed on the count it gets, so n_shot 3 and 5 on
    /// a category with 3 labelled images are one job.
    @Test func nShotIsCappedByTheLabelledImagesAndAValueNoCategoryHasFailsAtSubmit() throws {
        let cluster = try Cluster(leaseSeconds: 10)
        let data = cluster.state.url.appendingPathComponent("data")
        try SyntheticBenchmark.write(to: data, seed: 8, size: .small, only: ["bottle_label", "pin_grid"])
        let labelled = try ["bottle_label", "pin_grid"].map { try CategoryManifest.load(categoryRoot: data.appendingPathComponent($0)).fewShot.count }
        #expect(labelled == [3, 5])
        func sweep(_ name: String, _ shots: [Int]) throws -> URL {
            let file = cluster.state.url.appendingPathComponent("\(name).json")
            try Data("""
                {"name": "\(name)", "dataset": "\(data.path)", "categories": ["bottle_label", "pin_grid"],
                 "grid": {"n_shot": \(shots), "memory_types": ["hcp"], "scale_types": ["max"]}}
                """.utf8).write(to: file)
            return file
        }
        let tooMany = try cluster.run(["submit", try sweep("too-many", [5, 6]).path])
        #expect(tooMany.status != 0 && tooMany.errors.contains("grid.n_shot: 6 is more than any category's labelled images (at most 5"), "\(tooMany.errors)")
        #expect(!(try cluster.run(["status"])).output.contains("too-many"))
        let capped = try cluster.run(["submit", try sweep("capped", [3, 5]).path])
        #expect(capped.status == 0 && capped.output.contains("note: n_shot 5 runs with 3 labelled images in bottle_label"), "\(capped.output) \(capped.errors)")
        // bottle_label: one segment-train for 3 and 5; pin_grid: two.
        let json = try cluster.command(["status", "capped", "--json"])
        let status = try #require((try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]])?.first)
        let counts = try #require(status["counts"] as? [String: [String: Int]])
        #expect(counts["segment-train"]?.values.reduce(0, +) == 3, "\(counts)")
    }
}
