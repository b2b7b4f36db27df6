import Foundation
import Scheduler
import Shared
import Testing
import TestSupport
import Vision

/// The protocol at the size of a real category: a stage with one output per
/// image (thousands), a job that reads them all, and a result the
/// coordinator cannot take, which must end its attempt with the reason
/// instead of leaving both sides waiting.
@Suite(.serialized) struct RealScaleEndToEndTests {
    /// The key of the first job a worker's log names (short form: a unique prefix).
    static func jobKeys(_ cluster: Cluster, worker: String) throws -> [String] {
        let log = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-\(worker).log"), encoding: .utf8)
        return log.split(separator: "\n").compactMap { line in
            guard line.contains("kind=diagnostic"), let r = line.range(of: "key=") else { return nil }
            return String(line[r.upperBound...].prefix { $0.isHexDigit })
        }
    }

    @Test func aStageWithThousandsOfOutputsReportsAndFeedsTheNextJob() throws {
        let cluster = try Cluster(leaseSeconds: 5)
        try cluster.startCoordinator()
        // 3,000 outputs of about 270 bytes: a done header listing them would be
        // about 400 KiB (the limit is 64 KiB); the second job reads all of them.
        try cluster.submit(SweepEndToEndTests.diagnostic("many", #""jobs": 2, "chained": true, "outputs": 3000"#))
        try cluster.startWorker("a")
        _ = try cluster.wait("many", seconds: 180) { $0["done"] == 2 }
        let keys = try Self.jobKeys(cluster, worker: "a")
        #expect(keys.count == 2)
        let store = try JobStore(path: cluster.state.url.appendingPathComponent("state.sqlite").path)
        let artifacts = try ArtifactStore(root: cluster.state.url)
        for (i, short) in keys.enumerated() {
            let key = try store.resolve(short).hex
            let outputs = try store.outputs(of: key)
            #expect(outputs.count == 3001)
            let part = try store.artifact(try #require(outputs["part/02999.bin"]), in: artifacts)
            let prefix = Data("\(key) part/02999.bin ".utf8)
            #expect(part.starts(with: prefix) && part.count == prefix.count + 200)
            let echo = try JSONSerialization.jsonObject(with: store.artifact(outputs["echo.json"]!, in: artifacts)) as? [String: String]
            // The second job was handed all 3,001 of the first one's artifacts (through an inputs manifest).
            #expect(echo?["inputs"] == (i == 0 ? "" : "previous:3001"), "\(echo ?? [:])")
            // The worker's measurement of the attempt is kept with it.
            let run = try #require(try store.explain(try store.resolve(short)).run)
            #expect(run.worker == "a" && (run.seconds ?? 0) > 0)
            #if os(Linux)
            #expect((run.peakMiB ?? 0) > 1, "\(run)")
            #endif
        }
        let explain = try cluster.command(["explain", keys[0]])
        #expect(explain.contains("ran on a: ") && explain.contains(" MiB (estimate "), "\(explain)")
    }

    /// A long stage says how far it is: the worker's heartbeats carry it,
    /// status shows it per running job with the time left, and the one-line
    /// view run-sweep prints has a bar.
    @Test func aRunningStagesProgressReachesStatus() throws {
        let cluster = try Cluster(leaseSeconds: 2)
        try cluster.startCoordinator()
        try cluster.submit(SweepEndToEndTests.diagnostic("slow", #""jobs": 1, "seconds": 4"#))
        try cluster.startWorker("a")
        let deadline = Date().addingTimeInterval(30)
        var running: [String: Any] = [:]
        while Date() < deadline {
            let json = try cluster.command(["status", "slow", "--json"])
            let statuses = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]]
            if let r = (statuses?.first?["running"] as? [[String: Any]])?.first, (r["done"] as? Int ?? 0) > 0 { running = r; break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(running["total"] as? Int == 40 && running["unit"] as? String == "tenths of a second" && running["worker"] as? String == "a",
                "\(running)")
        // The time left once a second count has come (the pace is measured from the first).
        var text = ""
        while Date() < deadline {
            text = try cluster.command(["status", "slow"])
            if text.contains(" left") { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(text.contains("running:") && text.contains("/40 tenths of a second") && text.contains(" left"), "\(text)")
        let line = try cluster.command(["status", "slow", "--line"])
        #expect(line.hasPrefix("sweep slow: 0/1 done [--------------------] 0% | diagnostic diagnostic "), "\(line)")
        _ = try cluster.wait("slow", seconds: 30) { $0["done"] == 1 }
        #expect(try cluster.command(["status", "slow", "--line"]).hasPrefix("sweep slow: 1/1 done [####################] 100%"))
    }

    @Test func aResultTheCoordinatorRefusesFailsItsAttemptWithTheReason() throws {
        let cluster = try Cluster(leaseSeconds: 2)
        try cluster.startCoordinator()
        try cluster.submit(SweepEndToEndTests.diagnostic("refused", #""jobs": 1, "outputs": 1000"#, attempts: 2))
        // This worker lists every output in the done header, as the protocol
        // did before manifests: 1,000 outputs make a binary header of about 100 KiB.
        try cluster.startWorker("old", ["--header-only-results-for-fault-tests"])
        // Refused twice, each time failing the attempt at once (not after a
        // lease expiry, and not never): dead after its two attempts.
        let final = try cluster.wait("refused", seconds: 30) { $0["dead"] == 1 }
        #expect(final["leased"] == nil)
        let status = try cluster.command(["status", "refused"])
        #expect(status.contains("2/2") && status.contains("refused the worker's done message") && status.contains("header of"), "\(status)")
        // The worker is not stuck on the refused result: it drains and leaves at once.
        cluster.signalWorker("old", SIGTERM)
        let deadline = Date().addingTimeInterval(10)
        while cluster.workers["old"]!.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        #expect(!cluster.workers["old"]!.isRunning, "\(cluster.tail())")
        let log = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-old.log"), encoding: .utf8)
        #expect(log.contains("refused the done message") && !log.contains("asking again"), "\(log)")
    }
}

/// What real categories bring that the synthetic benchmark lacks, through
/// real processes: more part classes than a 16-colour palette (LOCO's
/// pushpins has 26) and splits that are not there.
@Suite struct RealDataShapesEndToEndTests {
    /// A small bottle_label with its part classes moved to ids 17...25 (26
    /// classes, the first 16 unused), no structural anomalies and no
    /// validation images.
    static func manyClassesLogicalOnly(_ root: URL) throws -> URL {
        try SyntheticBenchmark.write(to: root, seed: 6, size: .small, only: ["bottle_label"])
        let category = root.appendingPathComponent("bottle_label"), fm = FileManager.default
        for gone in ["test/structural_anomalies", "ground_truth/structural_anomalies", "validation"] {
            try fm.removeItem(at: category.appendingPathComponent(gone))
        }
        let manifestURL = category.appendingPathComponent("psad-manifest.json")
        var manifest = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: manifestURL)) as? [String: Any])
        let names = (manifest["classes"] as! [[String: Any]]).map { $0["name"] as! String }
        manifest["classes"] = [["id": 0, "name": "background"]] + (1...16).map { ["id": $0, "name": "unused_\($0)"] }
            + names.dropFirst().enumerated().map { ["id": 17 + $0.offset, "name": $0.element] }
        try JSONSerialization.data(withJSONObject: manifest).write(to: manifestURL)
        for label in manifest["few_shot"] as! [[String: Any]] {
            let url = category.appendingPathComponent(label["annotation"] as! String)
            var mask = try PNG.read(url, mode: .indices)
            mask.pixels = mask.pixels.map { $0 == 0 ? 0 : $0 + 16 }
            try PNG.writeMask(mask, to: url)
        }
        return category
    }

    @Test func aCategoryOf26ClassesWithoutStructuralAnomaliesRunsThroughTheSystem() throws {
        let cluster = try Cluster(leaseSeconds: 10)
        let data = cluster.state.url.appendingPathComponent("data")
        _ = try Self.manyClassesLogicalOnly(data)
        try cluster.startCoordinator()
        try cluster.submit("""
            {"name": "shapes", "dataset": "\(data.path)", "categories": ["bottle_label"], "max_attempts": 1,
             "grid": {"n_shot": 3, "image_size": 64, "patch_image_size": 64, "epochs": 2, "memory_types": ["hcp"], "unet_epochs": 1}}
            """)
        try cluster.startWorker("a")
        let counts = try cluster.wait("shapes", seconds: 600) { ($0["done"] ?? 0) + ($0["dead"] ?? 0) + ($0["blocked"] ?? 0) == 7 }
        let status = (try? cluster.command(["status", "shapes"])) ?? ""
        #expect(counts == ["done": 7], "\(status)\n\(cluster.tail())")
        // LA, and nothing made up for the split that is not there.
        let results = try cluster.command(["results", "shapes"]).split(separator: "\n")
        #expect(results.contains { $0.hasPrefix("bottle_label,logical_auroc,") } && results.contains { $0.hasPrefix("bottle_label,mean_auroc,") })
        #expect(!results.contains { $0.contains("structural_auroc") }, "\(results)")
        // The UNet's masks carry class ids past 16, as the few-shot labels do.
        let log = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-a.log"), encoding: .utf8)
        let unet = try #require(log.split(separator: "\n").first { $0.contains("kind=unet-train") })
        let short = String(unet[unet.range(of: "key=")!.upperBound...].prefix { $0.isHexDigit })
        let store = try JobStore(path: cluster.state.url.appendingPathComponent("state.sqlite").path)
        let artifacts = try ArtifactStore(root: cluster.state.url)
        let outputs = try store.outputs(of: try store.resolve(short).hex)
        let masks = try outputs.filter { $0.key.hasPrefix("masks/train/") }.map { try PNG.decode(store.artifact($0.value, in: artifacts), source: $0.key, mode: .indices) }
        // (A UNet of one epoch may still predict the unused ids: only the range is certain.)
        #expect(!masks.isEmpty && masks.allSatisfy { $0.pixels.allSatisfy { $0 < 26 } })
        #expect(masks.contains { $0.pixels.contains { $0 > 16 } })
        // The report says what it has.
        let out = cluster.state.url.appendingPathComponent("report")
        _ = try cluster.command(["report", "shapes", "--out", out.path])
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("report.html").path))
    }
}

/// LOCO's image size and class count through real processes at a test's
/// budget: pin_grid drawn at 1,600 px with 26 part classes (`--size large`:
/// the small counts), a few epochs at 64 px. Every stage reads the full-size
/// PNGs; the pixel metrics are measured at the ground truth's resolution.
@Suite struct LargeImagesEndToEndTests {
    @Test func aCategoryOf1600PixelImagesAnd26ClassesRunsThroughTheSystem() throws {
        let cluster = try Cluster(leaseSeconds: 10)
        let data = cluster.state.url.appendingPathComponent("data")
        try SyntheticBenchmark.write(to: data, seed: 3, size: .large, only: ["pin_grid"])
        let good = try PNG.read(data.appendingPathComponent("pin_grid/train/good/000.png"), mode: .colours)
        #expect(max(good.width, good.height) == 1600)
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: data.appendingPathComponent("pin_grid/psad-manifest.json"))) as? [String: Any]
        #expect((manifest?["classes"] as? [Any])?.count == 26)
        try cluster.startCoordinator()
        try cluster.submit("""
            {"name": "large", "dataset": "\(data.path)", "categories": ["pin_grid"], "max_attempts": 1,
             "grid": {"n_shot": 3, "image_size": 64, "patch_image_size": 64, "epochs": 2, "memory_types": ["hcp"]}}
            """)
        try cluster.startWorker("a")
        let counts = try cluster.wait("large", seconds: 600) { ($0["done"] ?? 0) + ($0["dead"] ?? 0) + ($0["blocked"] ?? 0) == 6 }
        #expect(counts == ["done": 6], "\(cluster.tail())")
        let results = try cluster.command(["results", "large"]).split(separator: "\n")
        for metric in ["logical_auroc", "structural_auroc", "pixel_auroc"] {
            #expect(results.contains { $0.hasPrefix("pin_grid,\(metric),") }, "\(metric) missing: \(results)")
        }
        // Nothing peaked above what the coordinator reserved for it.
        let status = try cluster.command(["status", "large"])
        #expect(!status.contains("peaked above"), "\(status)")
    }
}
