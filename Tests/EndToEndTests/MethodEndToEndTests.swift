import Foundation
import Testing
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
             "grid": {"n_shot": 2, "image_size": 64, "epochs": 2, "memory_types": ["h", "p", "hcp"], "unet_epochs": [0, 1]}}
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
        #expect(table.contains("| category | h/max LA | h/max SA | hcp/max LA |") && table.contains("| pin_grid |") && table.contains("| **mean** |"), "\(table)")
        // A second identical sweep reuses every job.
        try cluster.submit("""
            {"name": "again", "dataset": "\(data.path)", "categories": ["pin_grid"],
             "grid": {"n_shot": 2, "image_size": 64, "epochs": 2, "memory_types": ["h"], "unet_epochs": 0}}
            """)
        #expect(try cluster.counts("again") == ["done": 6])
        #expect(try cluster.command(["results", "again"]).split(separator: "\n").count == 1 + 5)
    }

    @Test func aBrokenImageKillsOnlyItsCategoryWithoutRetries() throws {
        let cluster = try Cluster(leaseSeconds: 10)
        let data = cluster.state.url.appendingPathComponent("data")
        try SyntheticBenchmark.write(to: data, seed: 3, size: .small, only: ["pin_grid", "bolt_bag"])
        let broken = data.appendingPathComponent("bolt_bag/test/good/001.png")
        let bytes = try Data(contentsOf: broken)
        try bytes.prefix(bytes.count / 2).write(to: broken)
        try cluster.startCoordinator()
        try cluster.submit("""
            {"name": "b", "dataset": "\(data.path)", "categories": ["pin_grid", "bolt_bag"], "max_attempts": 3,
             "grid": {"n_shot": 1, "image_size": 64, "epochs": 1, "memory_types": ["h"]}}
            """)
        try cluster.startWorker("a")
        let counts = try cluster.wait("b", seconds: 600) { ($0["done"] ?? 0) + ($0["dead"] ?? 0) + ($0["blocked"] ?? 0) == 12 }
        #expect(counts == ["done": 6, "dead": 1, "blocked": 5], "\(cluster.tail())")
        let status = try cluster.command(["status", "b", "--json"])
        #expect(status.contains("\"preprocess\""))
        let log = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-a.log"), encoding: .utf8)
        #expect(log.components(separatedBy: "kind=preprocess").count - 1 == 2, "the broken category's preprocess ran once, not retried")
        let coordinator = try String(contentsOf: cluster.logs[0], encoding: .utf8)
        #expect(coordinator.contains("bolt_bag/test/good/001.png"), "the error names the file")
    }
}
