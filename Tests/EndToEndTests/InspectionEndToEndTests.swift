import Foundation
import Scheduler
import Shared
import Stages
import Testing
import TestSupport
import Vision

/// From a sweep to a verdict: export one setting of a finished sweep,
/// score images with `psad-worker predict`.
@Suite struct InspectionEndToEndTests {
    @Test func anExportedModelScoresTheTestImagesAsTheSweepDidAndGivesTheRecordedRates() throws {
        let cluster = try Cluster(leaseSeconds: 10)
        let data = cluster.state.url.appendingPathComponent("data")
        try SyntheticBenchmark.write(to: data, seed: 3, size: .small, only: ["pin_grid"])
        try cluster.startCoordinator()
        try cluster.submit("""
            {"name": "m", "dataset": "\(data.path)", "categories": ["pin_grid"], "max_attempts": 1,
             "grid": {"n_shot": 2, "image_size": 64, "patch_image_size": 64, "epochs": 2, "memory_types": ["h", "hcp", "hcpng"], "unet_epochs": [0, 1],
                      "tta_views": 2, "combine": ["sum", "max"]}}
            """)
        try cluster.startWorker("a")
        let counts = try cluster.wait("m", seconds: 600) { $0["done", default: 0] + $0["dead", default: 0] + $0["blocked", default: 0] == 17 }
        #expect(counts == ["done": 17], "\(cluster.tail())")
        let model = cluster.state.url.appendingPathComponent("model")
        // Ten settings (h alone has no maximum to take): they must be named (a field the setting does not hold, as the sum's combine, is "-").
        let ambiguous = try cluster.run(["export", "m", "--category", "pin_grid", "--out", model.path])
        #expect(ambiguous.status != 0 && ambiguous.errors.contains("10 settings") && ambiguous.errors.contains("memory_type")
                && ambiguous.errors.contains("unet_epochs") && ambiguous.errors.contains("combine (-, max)"), "\(ambiguous)")
        let sumSetting = ["--setting", "memory_type=hcp", "--setting", "unet_epochs=0", "--setting", "combine=-"]
        let exported = try cluster.command(["export", "m", "--category", "pin_grid"] + sumSetting + ["--out", model.path])
        #expect(exported.contains("model written to") && exported.contains("validation/good: 2 images"), "\(exported)")
        #expect(try cluster.run(["export", "m", "--category", "pin_grid"] + sumSetting + ["--out", model.path]).errors.contains("exists"))

        // The sweep's scores of the test images, from evaluate's scores.csv.
        let store = try JobStore(path: cluster.stateDirectory.appendingPathComponent("state.sqlite").path)
        func sweepScores(unet: Int, memory: String = "hcp", combine: BankCombine = .sum) throws -> [(split: String, score: Double)] {
            let evaluation = try #require(try store.evaluations(sweep: "m", category: "pin_grid").first {
                $0.setting.contains("\"\(memory)\"") && $0.setting.contains("\"unet_epochs\":\(unet)")
                    && $0.setting.contains("\"combine\":\"max\"") == (combine == .max)
            })
            let hash = try #require(try store.record(evaluation.job).outputs[ArtifactFormat.scoresCSV])
            return try ArtifactFormat.readScores(try store.smallBlob(hash) ?? ArtifactStore(root: cluster.stateDirectory).read(hash))
        }
        let expected = try sweepScores(unet: 0)

        // Predict over the test folders (test order: good, logical, structural), a bad image among them.
        let category = data.appendingPathComponent("pin_grid")
        let folders = ["test/good", "test/logical_anomalies", "test/structural_anomalies"].map { category.appendingPathComponent($0).path }
        let bad = cluster.state.url.appendingPathComponent("bad")
        try FileManager.default.createDirectory(at: bad, withIntermediateDirectories: true)
        try Data(try Data(contentsOf: category.appendingPathComponent("test/good/000.png")).prefix(200)).write(to: bad.appendingPathComponent("truncated.png"))
        let maps = cluster.state.url.appendingPathComponent("maps")
        let worker = Cluster.binaries.appendingPathComponent("psad-worker").path
        let predicted = try runProgram(worker, ["predict", model.path] + folders + [bad.path, "--json", "--out", maps.path])
        #expect(predicted.status == 2, "one image skipped: \(predicted.output)")
        #expect(predicted.output.contains("skipped \(bad.appendingPathComponent("truncated.png").path)"), "\(predicted.output)")
        let lines = predicted.output.split(separator: "\n").filter { $0.hasPrefix("{") }
            .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        try #require(lines.count == expected.count, "\(predicted.output)")
        for (line, row) in zip(lines, expected) {
            let score = try #require(line["score"] as? Double)
            #expect(abs(score - row.score) <= 1e-9 * max(1, abs(row.score)), "\(line["image"] ?? "?"): predicted \(score), the sweep \(row.score)")
            #expect(["histogram", "composition", "patch"].contains(line["drivenBy"] as? String ?? ""))
            #expect(FileManager.default.fileExists(atPath: line["map"] as? String ?? "") && FileManager.default.fileExists(atPath: line["parts"] as? String ?? ""))
        }
        // The verdicts at the threshold give the rates the export recorded.
        let description = try JSONSerialization.jsonObject(with: Data(contentsOf: model.appendingPathComponent("model.json"))) as? [String: Any] ?? [:]
        let calibration = description["calibration"] as? [String: Any] ?? [:]
        // The segmenter's test-time views travel with the model (the masks, and so the scores above, depend on them).
        #expect((description["ttaAngles"] as? [Double])?.count == 2, "\(description["ttaAngles"] ?? "none")")
        for (split, field) in [("good", "testFPR"), ("logical_anomalies", "testLogicalTPR"), ("structural_anomalies", "testStructuralTPR")] {
            let verdicts = zip(lines, expected).filter { $0.1.split == split }.map { $0.0["anomalous"] as? Bool == true }
            let rate = Double(verdicts.filter { $0 }.count) / Double(verdicts.count)
            #expect(calibration[field] as? Double == rate, "\(split): \(rate) vs \(calibration)")
        }
        #expect(description["format"] as? Int == 2 && description["combine"] == nil, "a summing model keeps format 2: \(description)")
        // A setting with a retrained UNet packs the UNet; its banks read the UNet's masks, and the scores are the sweep's too.
        // This one adds the part-instance and geometry banks and takes the banks' maximum (format 5), as its evaluate job did.
        let unetModel = cluster.state.url.appendingPathComponent("unet-model")
        _ = try cluster.command(["export", "m", "--category", "pin_grid", "--setting", "memory_type=hcpng", "--setting", "unet_epochs=1",
                                 "--setting", "combine=max", "--out", unetModel.path])
        let unetDescription = try JSONSerialization.jsonObject(with: Data(contentsOf: unetModel.appendingPathComponent("model.json"))) as? [String: Any] ?? [:]
        #expect(unetDescription["format"] as? Int == 5 && unetDescription["combine"] as? String == "max"
                && ((unetDescription["trainStatistics"] as? [String: Any])?["instances"] as? [Double])?.isEmpty == false
                && ((unetDescription["trainStatistics"] as? [String: Any])?["geometry"] as? [Double])?.isEmpty == false, "\(unetDescription)")
        #expect(FileManager.default.fileExists(atPath: unetModel.appendingPathComponent("unet.safetensors").path))
        let unetRun = try runProgram(worker, ["predict", unetModel.path] + folders + ["--json"])
        let unetLines = unetRun.output.split(separator: "\n").filter { $0.hasPrefix("{") }
            .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let unetScores = unetLines.compactMap { $0["score"] as? Double }
        #expect(unetLines.allSatisfy { ($0["components"] as? [String: Double])?.keys.sorted() == ["composition", "geometry", "histogram", "instances", "patch"] })
        let unetExpected = try sweepScores(unet: 1, memory: "hcpng", combine: .max)
        #expect(try sweepScores(unet: 1, memory: "hcpng").map(\.score) != unetExpected.map(\.score), "the maximum and the sum score differently")
        #expect(unetScores.count == unetExpected.count && zip(unetScores, unetExpected).allSatisfy { abs($0 - $1.score) <= 1e-9 * max(1, abs($1.score)) },
                "\(unetScores) vs \(unetExpected.map(\.score))")
        // Loading checks the bundle: a damaged file and another format version are clear errors.
        let memory = model.appendingPathComponent("patch_memory.safetensors")
        var bytes = try Data(contentsOf: memory)
        bytes[bytes.count - 1] ^= 0xff
        try bytes.write(to: memory)
        let damaged = try runProgram(worker, ["predict", model.path, folders[0]])
        #expect(damaged.status != 0 && damaged.output.contains("does not match its recorded SHA-256"), "\(damaged.output)")
        var text = try String(contentsOf: model.appendingPathComponent("model.json"), encoding: .utf8)
        text = text.replacingOccurrences(of: "\"format\" : 2", with: "\"format\" : 99")
        try text.write(to: model.appendingPathComponent("model.json"), atomically: false, encoding: .utf8)
        let future = try runProgram(worker, ["predict", model.path, folders[0]])
        #expect(future.status != 0 && future.output.contains("format 99"), "\(future.output)")
    }
}
