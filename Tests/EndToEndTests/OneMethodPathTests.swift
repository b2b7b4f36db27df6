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
             "grid": {"n_shot": 3, "image_size": 64, "epochs": 2, "unet_epochs": 1, "epsilon": 1e-6, "seeds": [3],
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
            "method", "--category", data.appendingPathComponent("bottle_label").path, "--n-shot", "3", "--image-size", "64",
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

    /// A setting the data cannot give fails at submit, naming the field and
    /// the category, before any job exists.
    @Test func anNShotAboveTheLabelledImagesFailsAtSubmit() throws {
        let cluster = try Cluster(leaseSeconds: 10)
        let data = cluster.state.url.appendingPathComponent("data")
        try SyntheticBenchmark.write(to: data, seed: 8, size: .small, only: ["bottle_label"])
        let manifest = try CategoryManifest.load(categoryRoot: data.appendingPathComponent("bottle_label"))
        let file = cluster.state.url.appendingPathComponent("too-many.json")
        try Data("""
            {"name": "too-many", "dataset": "\(data.path)", "categories": ["bottle_label"],
             "grid": {"n_shot": [\(manifest.fewShot.count), \(manifest.fewShot.count + 1)]}}
            """.utf8).write(to: file)
        let r = try cluster.run(["submit", file.path])
        #expect(r.status != 0 && r.errors.contains("grid.n_shot: \(manifest.fewShot.count + 1) is more than the \(manifest.fewShot.count) labelled images bottle_label's psad-manifest.json lists"), "\(r.errors)")
        let status = try cluster.run(["status"])
        #expect(!status.output.contains("too-many"), "\(status.output)")
    }
}
