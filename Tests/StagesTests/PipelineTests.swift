import Foundation
import Testing
import TestSupport
import Models
import Tensor
import Vision
@testable import Stages
import Shared

/// Every stage of one category chained in one process on a small synthetic
/// category read from disk, as `psad-worker method` runs it, artifacts included.
@Suite struct PipelineTests {
    @Test func wholeCategoryRunsEveryStageAndWritesItsArtifacts() throws {
        let data = try TemporaryDirectory(), artifacts = try TemporaryDirectory()
        try SyntheticBenchmark.write(to: data.url, seed: 5, size: .small, only: ["bottle_label"])
        // One structural test image made unmistakable: uniform noise, unlike
        // any patch of any train image (the certain case the scores must get right).
        let noisy = data.url.appendingPathComponent("bottle_label/test/structural_anomalies/000.png")
        let original = try PNG.read(noisy)
        var generator = SeededGenerator(seed: 17)
        try PNG.write(Image(width: original.width, height: original.height, channels: original.channels,
                            pixels: (0..<original.pixels.count).map { _ in UInt8.random(in: 0...255, using: &generator) }), to: noisy)
        var s = MethodChain.Settings()
        s.nShot = 3
        s.imageSize = 96
        s.patchImageSize = 96
        s.lossSets = [.sup, .supEntropyHistogram]
        s.epochs = 4; s.viewsPerLabelledImage = 2; s.batchPairs = 4; s.learningRate = 1e-2
        s.unetEpochs = 1; s.unetWidth = 4; s.unetDepth = 2; s.unetBatch = 4
        s.epsilon = 1e-6
        let categoryRoot = data.url.appendingPathComponent("bottle_label")
        let result = try MethodChain.run(categoryRoot: categoryRoot, settings: s, artifacts: artifacts.url)
        let classes = try CategoryManifest.load(categoryRoot: categoryRoot).classCount

        #expect(result.runs.map(\.lossSet) == [.sup, .supEntropyHistogram])
        for run in result.runs {
            let keys: [String] = ["h", "c", "p", "hc", "hcp"].flatMap { memory in ["max", "none"].map { "\(memory)/\($0)" } }
            #expect(Set(run.metrics.keys) == Set(keys))
            #expect(run.segmentLosses.count == 4 && run.unetLosses.count == 1)
        }
        var expected: [String] = ["preprocess", "patch-features"]
        for tag in ["sup", "sup+H+hist"] {
            for stage in ["segment-train", "pseudo-label", "unet-train", "bank-fit", "evaluate"] { expected.append("\(stage)[\(tag)]") }
        }
        #expect(result.stages.map(\.stage) == expected)
        #expect(result.stages.allSatisfy { $0.seconds >= 0 && ($0.peakMebibytes ?? 1) > 0 })
        #expect(result.pixel != nil)

        // The artifacts, read back as a user would: each stage's files as a sweep's job writes them.
        let root = artifacts.url
        func file(_ path: String) -> URL { root.appendingPathComponent(path) }
        var tests: [String] = []
        for split in ["test/good", "test/logical_anomalies", "test/structural_anomalies"] {
            for i in 0..<4 { tests.append("\(split)/00\(i).png") }
        }
        for name in tests {
            let mask = try PNG.read(file("sup+H+hist/unet-train/masks/\(name)"), mode: .indices)
            #expect(mask.width == 96 && mask.height == 96 && mask.pixels.allSatisfy { Int($0) < classes })
            #expect(try PNG.read(file("patch-features/maps/\(name)")).width == 96)
        }
        for i in 0..<8 { _ = try PNG.read(file("sup/pseudo-label/masks/train/good/00\(i).png"), mode: .indices) }
        _ = try PNG.read(file("preprocess/few_shot/000.png"), mode: .indices)
        let head = try SafetensorsFile(contentsOf: file("sup/segment-train/head.safetensors"))
        #expect(try head.tensor("head.2.weight").shape[0] == classes)
        let banks = try SafetensorsFile(contentsOf: file("sup/bank-fit/banks.safetensors"))
        #expect(try banks.tensor("train_histogram").shape == [8, classes])
        #expect(try banks.tensor("composition_train_statistics").shape == [8])
        #expect(try banks.tensor("test_histogram").shape == [12, classes])
        #expect(try banks.tensor("test_composition").shape == [12, banks.tensor("train_composition").shape[1]])
        #expect(try banks.tensor("train_instances").shape == [8, classes - 1] && banks.tensor("test_instances").shape == [12, classes - 1])
        #expect(try banks.tensor("instances_train_statistics").shape == [8])
        let scores = try String(contentsOf: file("sup/evaluate/hcp-max/scores.csv"), encoding: .utf8).split(separator: "\n")
        #expect(scores.count == 13 && scores[0] == "split,score")
        #expect(FileManager.default.fileExists(atPath: file("sup/evaluate/p-none/metrics.json").path))
        let saved = try JSONSerialization.jsonObject(with: Data(contentsOf: file("result.json"))) as? [String: Any]
        #expect(saved?["category"] as? String == "bottle_label")
        #expect((saved?["runs"] as? [Any])?.count == 2)
        // Nothing but finished files: no partial writes left behind.
        let everything = FileManager.default.enumerator(atPath: root.path)!.compactMap { $0 as? String }
        #expect(!everything.contains { $0.hasSuffix(".partial") })

        // Every score is a number; every AUROC lies in [0, 1]. How well 4
        // normal images separate from 4 anomalies after 4 epochs at 96 px is a
        // coin flip that varies with the BLAS kernel's rounding: accuracy is
        // measured by the benchmarks (BENCHMARKS.md), not asserted here.
        for run in result.runs {
            for (key, m) in run.metrics {
                #expect([m.logicalAUROC, m.structuralAUROC].allSatisfy { $0.map { $0.isFinite && (0...1).contains($0) } == true }, "\(key)")
            }
        }
        for line in scores.dropFirst() {
            #expect(Double(line.split(separator: ",")[1])?.isFinite == true, "\(line)")
        }
        // The noise image (the first structural one, test image 8) has the highest patch score of all twelve.
        let patch = try JSONDecoder().decode([String: AnyCodable].self, from: Data(contentsOf: file("patch-features/scores.json")))
        let test = try #require(patch["test"]?.numbers)
        #expect(test.count == 12 && test.indices.filter { $0 != 8 }.allSatisfy { test[$0] < test[8] }, "\(test)")
    }
}

/// Just enough JSON to read a list of numbers out of an artifact.
private struct AnyCodable: Decodable {
    let numbers: [Double]?
    init(from decoder: any Decoder) throws {
        numbers = try? decoder.singleValueContainer().decode([Double].self)
    }
}

extension PipelineTests {
    /// segment-train with `finetune: last` writes the trained units
    /// (encoder.safetensors beside the head), and pseudo-label segments with
    /// them: the same head on the installed encoder gives other masks.
    @Test func pseudoLabelUsesTheEncoderSegmentTrainFineTuned() throws {
        let data = try TemporaryDirectory()
        try SyntheticBenchmark.write(to: data.url, seed: 5, size: .small, only: ["bottle_label"])
        let on = DataFields(dataset: data.url.path, category: "bottle_label", imageSize: 64)
        let context = StageContext()
        let segmenter = try SegmentTrainStage.run(OnData(on, StageSettings.SegmentTrain(
            backbone: .efficientNetLite0, nShot: 3, epochs: 2, lossSet: .sup, seed: 1, viewsPerLabelledImage: 2, batchPairs: 4,
            learningRate: 1e-2, finetune: .last)), inputs: StageInputs(), context: context)
        let tuned = try #require(segmenter.files[ArtifactFormat.fineTunedEncoder])
        #expect(try SafetensorsFile(data: tuned, source: "encoder").entries.contains { $0.name == "_blocks.10._bn2.running_var" })
        func masks(_ files: [String: Data]) throws -> [String: Data] {
            try PseudoLabelStage.run(OnData(on, StageSettings.PseudoLabel(backbone: .efficientNetLite0)),
                                     inputs: StageInputs(["segmenter": files]), context: context).files
        }
        var headOnly = segmenter.files
        headOnly[ArtifactFormat.fineTunedEncoder] = nil
        let withEncoder = try masks(segmenter.files), without = try masks(headOnly)
        #expect(withEncoder.keys == without.keys && !withEncoder.isEmpty)
        #expect(withEncoder != without)
    }
}

extension PipelineTests {
    /// What a stage reported, kept across threads.
    final class Reports: @unchecked Sendable {
        private let lock = NSLock()
        private var done: [Int] = []
        func append(_ d: Int) { lock.lock(); done.append(d); lock.unlock() }
        var all: [Int] { lock.lock(); defer { lock.unlock() }; return done }
    }

    /// A job no longer wanted stops at its next step (a worker's abandoned
    /// job then frees its core and memory instead of running on beside the
    /// next one): segment-train after the epoch in which the flag rose,
    /// patch-features before it encodes the test images; both throw
    /// StageCancelled.
    @Test func aCancelledStageStopsAtItsNextStep() throws {
        let data = try TemporaryDirectory()
        try SyntheticBenchmark.write(to: data.url, seed: 5, size: .small, only: ["bottle_label"])
        let on = DataFields(dataset: data.url.path, category: "bottle_label", imageSize: 64)
        let epochs = Reports()
        // The flag rises once two reports are in: epoch 0's start and epoch 1's end pass, epoch 2's end throws.
        let training = StageContext(progress: { done, _, _ in epochs.append(done) }, isCancelled: { epochs.all.count >= 2 })
        #expect(throws: StageCancelled.self) {
            try SegmentTrainStage.run(OnData(on, StageSettings.SegmentTrain(
                backbone: .efficientNetLite0, nShot: 3, epochs: 50, lossSet: .sup, seed: 1, viewsPerLabelledImage: 2, batchPairs: 4)),
                                      inputs: StageInputs(), context: training)
        }
        #expect(epochs.all == [0, 1])
        let images = Reports()
        let searching = StageContext(progress: { done, _, _ in images.append(done) }, isCancelled: { images.all.count >= 2 })
        #expect(throws: StageCancelled.self) {
            try PatchFeaturesStage.run(OnData(on, StageSettings.PatchFeatures(backbone: .efficientNetLite0, patchImageSize: 64, patchResize: .square,
                                                                              lessNormalFraction: 1, coresetFraction: 1)),
                                       inputs: StageInputs(), context: searching)
        }
        #expect(images.all.count == 2, "\(images.all)")
    }
}

/// The peak resident memory a worker reports per job, read from the
/// kernel's status text as bytes.
@Suite struct StageRecorderTests {
    @Test func thePeakIsTheVmHWMLineInMebibytes() {
        let status = "Name:\tpsad-worker\nVmPeak:\t  999999 kB\nVmHWM:\t   52224 kB\nVmRSS:\t   40000 kB\n"
        #expect(StageRecorder.peak(inStatus: ArraySlice(Array(status.utf8))) == 51)
        #expect(StageRecorder.peak(inStatus: ArraySlice(Array("Name:\tx\nVmRSS:\t1 kB\n".utf8))) == nil)
        #expect(StageRecorder.peak(inStatus: ArraySlice(Array("VmHWM:\t kB\n".utf8))) == nil)
        // This process's own: a positive figure.
        #expect((StageRecorder.peakMebibytes() ?? 0) > 0)
    }

    /// Above the mark an exec left (`swift test` launches this process
    /// through one), getrusage's figure is VmHWM itself.
    @Test func aboveTheExecsMarkThePeakIsVmHWM() throws {
        #if os(Linux)
        #expect(StageRecorder.resetPeak())
        let bound = try #require(StageRecorder.execBound.withLock { $0 })
        // Resident beyond the bound: 32 MiB more than it, every page touched.
        let bytes = (bound + 32 << 10) << 10
        let held = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 4096)
        defer { held.deallocate() }
        for page in stride(from: 0, to: bytes, by: 4096) { held[page] = 1 }
        // Other tests run beside this one and move the mark (they allocate, and reset it):
        // some moment within a few tries has it still, VmHWM the same before and after.
        var readings: [[Double?]] = []
        for _ in 0..<20 {
            let before = StageRecorder.statusPeakMebibytes(), fast = StageRecorder.maxResidentKiB().map { Double($0) / 1024 }
            let peak = StageRecorder.peakMebibytes(), after = StageRecorder.statusPeakMebibytes()
            readings.append([before, fast, peak, after])
            if before == after, let fast, fast > Double(bound) / 1024 { break }
        }
        // getrusage reads the resident count from per-CPU counters without summing them (status
        // sums them): the resident set is three counters (file, anonymous, shared pages), and each
        // CPU's share of each may lag by the counter's batch, max(32, 2 x CPUs) pages.
        let cpus = Double(ProcessInfo.processInfo.activeProcessorCount)
        let lag = 3 * cpus * max(32, 2 * cpus) * 4 / 1024
        let steady = try #require(readings.last, "\(readings)")
        let (status, fast, peak) = (try #require(steady[0]), try #require(steady[1]), try #require(steady[2]))
        #expect(steady[0] == steady[3] && abs(fast - status) <= lag && peak == fast, "bound \(bound) KiB, lag \(lag) MiB: \(readings)")
        #expect(held[bytes - 4096] == 1)
        #endif
    }
}
