import Foundation
import Synchronization
import Testing
import TestSupport
import Models
import Shared
import Tensor
import Vision
@testable import Stages

/// A training stage keeps its state between epochs and a run stopped part of
/// the way goes on from there as the uninterrupted run would have.
@Suite struct TrainingCheckpointTests {
    /// What the checkpoints said, for the tests to read.
    final class Said: Sendable {
        let lines = Mutex<[String]>([])
        var all: [String] { lines.withLock { $0 } }
        func checkpoints(_ folder: URL, owner: String = "job-1") -> TrainingCheckpoints {
            TrainingCheckpoints(file: folder.appendingPathComponent("job.state"), owner: owner, interval: 0,
                                log: { line in self.lines.withLock { $0.append(line) } })
        }
    }

    struct Stopped: Error {}

    static func state() -> TrainingState {
        var rng = SeededGenerator(seed: 9)
        let a = Tensor.randomNormal([3, 4], generator: &rng), b = Tensor.randomNormal([5], generator: &rng)
        return TrainingState(epoch: 2, rng: rng.state, parameters: [a, b], buffers: ["bn.running_mean": Tensor.randomNormal([4], generator: &rng)],
                             optimizer: AdamW.State(step: 7, m: [a.storage.map { $0 / 3 }, b.storage], v: [a.storage.map { $0 * $0 }, b.storage.map(abs)]),
                             epochLosses: [1.5, 0.25], counters: ["draws": 20, "fresh_views": 20])
    }

    @Test func aStateComesBackAsItWasSavedAndADamagedOneIsRefused() throws {
        let folder = try TemporaryDirectory(), said = Said()
        let checkpoints = said.checkpoints(folder.url)
        #expect(checkpoints.load() == nil && said.all.isEmpty, "no file: nothing to resume, nothing to say")
        let saved = Self.state()
        try checkpoints.save(saved)
        #expect(checkpoints.load() == saved)
        // The generator continues the same sequence from the saved state.
        var original = SeededGenerator(seed: 9)
        for _ in 0..<10 { _ = original.next() }
        var restored = try #require(SeededGenerator(state: original.state))
        #expect((0..<5).map { _ in restored.next() } == (0..<5).map { _ in original.next() })
        #expect(SeededGenerator(state: [0, 0, 0, 0]) == nil && SeededGenerator(state: [1, 2, 3]) == nil)

        // Another job's state is not taken.
        #expect(said.checkpoints(folder.url, owner: "job-2").load() == nil)
        #expect(said.all.last?.contains("it belongs to job-1, not job-2") == true, "\(said.all)")
        // One byte changed anywhere: refused, and said.
        let bytes = try Data(contentsOf: checkpoints.file)
        for offset in [3, 80, bytes.count - 2] {
            var damaged = bytes
            damaged[offset] ^= 0x10
            try damaged.write(to: checkpoints.file)
            #expect(checkpoints.load() == nil)
            #expect(said.all.last?.contains("does not match its contents (damaged)") == true, "offset \(offset): \(said.all)")
        }
        try bytes.prefix(40).write(to: checkpoints.file)
        #expect(checkpoints.load() == nil && said.all.last?.contains("too short") == true)
        // A save cut off by a kill leaves its partial file; the job's end takes it away
        // with the state, and leaves another job's files alone.
        let leftover = folder.url.appendingPathComponent(".job.state.0A1B.partial")
        let others = [".other.state.0A1B.partial", "other.state"].map { folder.url.appendingPathComponent($0) }
        for file in [leftover] + others { try Data([1, 2, 3]).write(to: file) }
        checkpoints.remove()
        #expect(!FileManager.default.fileExists(atPath: checkpoints.file.path))
        #expect(!FileManager.default.fileExists(atPath: leftover.path))
        #expect(others.allSatisfy { FileManager.default.fileExists(atPath: $0.path) })
    }

    @Test func theOptimiserTakesOnlyAStateOfItsShape() {
        let p = Parameter(Tensor(shape: [2], storage: [1, 2]))
        let optimizer = AdamW(parameters: [p])
        #expect(!optimizer.restore(AdamW.State(step: 3, m: [[1, 2, 3]], v: [[1, 2]])))
        #expect(!optimizer.restore(AdamW.State(step: -1, m: [[1, 2]], v: [[1, 2]])))
        #expect(optimizer.state == AdamW.State(step: 0, m: [[0, 0]], v: [[0, 0]]))
        #expect(optimizer.restore(AdamW.State(step: 3, m: [[1, 2]], v: [[3, 4]])) && optimizer.state.step == 3)
    }

    /// Relative difference of two runs' values: the encoder's threaded GEMMs
    /// may round the last bit differently from run to run, so a resumed run
    /// is held to the uninterrupted one within float32 training noise (as
    /// two uninterrupted runs are, `freshViewsAtEveryStepTrainReproducibly`).
    static func drift(_ a: [Float], _ b: [Float]) -> Float {
        a.count == b.count ? zip(a, b).map { abs($0 - $1) / max(abs($1), 1e-3) }.max() ?? 0 : .infinity
    }

    /// segment-train stopped after 3 of 7 epochs (the job cancelled: the
    /// state is saved before the stop goes on), then run again: it starts
    /// at epoch 4, and its losses, draws and head are the uninterrupted
    /// run's. The frozen encoder with fresh views, and the encoder's last
    /// units trained with fixed views (their parameters are in the state).
    @Test(arguments: [Finetune.head, .last])
    func segmentTrainStoppedPartWayGoesOnAsTheUninterruptedRun(finetune: Finetune) throws {
        let backbone = try EfficientNetLite.pretrainedLite0()
        let labelled = SegmentTrainTests.samples(0..<2, size: 64)
        let unlabelled = SegmentTrainTests.samples(2..<6, size: 64).map { SegmentationSample(image: $0.image) }
        var p = SegmentTrainParameters()
        p.epochs = 7; p.batchPairs = 2; p.learningRate = 1e-2; p.seed = 5; p.finetune = finetune
        p.viewsPerLabelledImage = finetune == .head ? 0 : 2
        func encoder() throws -> FineTunedEncoder? { finetune == .head ? nil : try BackboneName.efficientNetLite0.trainingEncoder(finetune) }
        let whole = try SegmentTrain.run(labelled: labelled, unlabelled: unlabelled, classes: 5, backbone: backbone, parameters: p,
                                         encoder: try encoder())
        let folder = try TemporaryDirectory(), said = Said(), checkpoints = said.checkpoints(folder.url)
        #expect(throws: Stopped.self) {
            try SegmentTrain.run(labelled: labelled, unlabelled: unlabelled, classes: 5, backbone: backbone, parameters: p,
                                 encoder: try encoder(), checkpoints: checkpoints) { epoch, _ in if epoch == 2 { throw Stopped() } }
        }
        let saved = try #require(checkpoints.load())
        #expect(saved.epoch == 3 && saved.epochLosses.count == 3)
        var epochs: [Int] = []
        let resumed = try SegmentTrain.run(labelled: labelled, unlabelled: unlabelled, classes: 5, backbone: backbone, parameters: p,
                                           encoder: try encoder(), checkpoints: checkpoints) { epoch, _ in epochs.append(epoch) }
        #expect(epochs == [3, 4, 5, 6])
        #expect(said.all.contains { $0.hasPrefix("resumed after epoch 3 of 7") }, "\(said.all)")
        #expect(Array(resumed.epochLosses.prefix(3)) == saved.epochLosses)
        #expect(Self.drift(resumed.epochLosses, whole.epochLosses) < 1e-3, "\(resumed.epochLosses) vs \(whole.epochLosses)")
        #expect(resumed.draws == whole.draws && resumed.freshViews == whole.freshViews)
        for (name, t) in whole.head.tensors {
            #expect(Self.drift(resumed.head.tensors[name]!.storage, t.storage) < 1e-2, "head \(name)")
        }
        if let tuned = whole.encoder {
            let resumedEncoder = try #require(resumed.encoder)
            let worst = tuned.map { name, t in Self.drift(resumedEncoder[name]!.storage, t.storage) }.max()!
            #expect(worst < 1e-2, "encoder tensors: \(worst)")
        }
    }

    /// A state that does not fit the run (another class count: another head)
    /// is said and not taken; the run starts from the first epoch.
    @Test func aStateOfAnotherShapeIsNotTaken() throws {
        let folder = try TemporaryDirectory(), said = Said(), checkpoints = said.checkpoints(folder.url)
        try checkpoints.save(Self.state())
        let samples = SegmentTrainTests.samples(0..<3, size: 32)
        var p = UNetTrain.Parameters()
        p.width = 4; p.depth = 2; p.epochs = 2; p.batch = 3
        var epochs: [Int] = []
        _ = try UNetTrain.run(images: samples.map(\.image), labels: samples.map { $0.mask!.pixels.map { Int32($0) } }, classes: 5,
                              parameters: p, checkpoints: checkpoints) { epoch, _ in epochs.append(epoch) }
        #expect(epochs == [0, 1])
        #expect(said.all.contains { $0.contains("does not fit this run; starting from the first epoch") }, "\(said.all)")
    }

    /// unet-train stopped after 2 of 5 epochs and run again: its batch norms'
    /// running statistics come back with the weights (the masks use them).
    @Test func unetTrainStoppedPartWayGoesOnAsTheUninterruptedRun() throws {
        let samples = SegmentTrainTests.samples(0..<4, size: 32)
        let images = samples.map(\.image), labels = samples.map { $0.mask!.pixels.map { Int32($0) } }
        var p = UNetTrain.Parameters()
        p.width = 8; p.depth = 3; p.epochs = 5; p.batch = 2; p.learningRate = 1e-2; p.seed = 2
        let whole = try UNetTrain.run(images: images, labels: labels, classes: 5, parameters: p)
        let folder = try TemporaryDirectory(), said = Said(), checkpoints = said.checkpoints(folder.url)
        #expect(throws: Stopped.self) {
            try UNetTrain.run(images: images, labels: labels, classes: 5, parameters: p, checkpoints: checkpoints) { epoch, _ in
                if epoch == 1 { throw Stopped() }
            }
        }
        #expect(try #require(checkpoints.load()).buffers.count == 2 * 2 * 3, "two batch norms per level, mean and variance")
        var epochs: [Int] = []
        let resumed = try UNetTrain.run(images: images, labels: labels, classes: 5, parameters: p, checkpoints: checkpoints) { epoch, _ in
            epochs.append(epoch)
        }
        #expect(epochs == [2, 3, 4])
        #expect(Self.drift(resumed.epochLosses, whole.epochLosses) < 1e-3, "\(resumed.epochLosses) vs \(whole.epochLosses)")
        for (name, t) in whole.net.tensors {
            #expect(Self.drift(resumed.net.tensors[name]!.storage, t.storage) < 1e-2, "\(name)")
        }
    }

    @Test func pruningRemovesOnlyOldStates() throws {
        let folder = try TemporaryDirectory()
        let old = folder.url.appendingPathComponent("old.state"), recent = folder.url.appendingPathComponent("recent.state")
        try Data("x".utf8).write(to: old)
        try Data("y".utf8).write(to: recent)
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-20 * 86_400)], ofItemAtPath: old.path)
        var said: [String] = []
        TrainingCheckpoints.prune(folder.url, olderThanDays: 14) { said.append($0) }
        #expect(!FileManager.default.fileExists(atPath: old.path) && FileManager.default.fileExists(atPath: recent.path))
        #expect(said.count == 1 && said[0].contains("old.state") && said[0].contains("20 days ago"), "\(said)")
        TrainingCheckpoints.prune(folder.url.appendingPathComponent("missing"), olderThanDays: 14) { said.append($0) }
        #expect(said.count == 1)
    }
}
