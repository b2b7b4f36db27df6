import Anomaly
import Models
import Tensor
import Vision

/// SPEC-PSAD stage 4 (patch-features): PatchCore on every image. Train
/// images are scored leave-one-out (their own patches removed): those
/// scores are the patch bank's train statistics.
public enum PatchStage {
    public struct Result: Sendable {
        public let trainScores: [Float]
        public let testScores: [Float]
        /// Per test image: each stride-8 patch's nearest distance, [gridHeight * gridWidth].
        public let testPatchDistances: [[Float]]
        public let gridHeight: Int, gridWidth: Int

        /// Each test image's anomaly map at `size` x `size`: patch distances
        /// upsampled bilinearly and blurred (SPEC-PSAD stage 4).
        public func testMaps(size: Int) -> [[Float]] {
            testPatchDistances.map {
                AnomalyMap.from(patchDistances: $0, gridHeight: gridHeight, gridWidth: gridWidth, height: size, width: size).storage
            }
        }
    }

    /// Images are resized to `size` x `size` (256 in the reference) and normalised.
    public static func run(train: [Image], test: [Image], backbone: any Backbone, size: Int = 256,
                           normalization: ImageNormalization = .imagenet) -> Result {
        func patches(_ image: Image) -> Tensor {
            let x = normalization(image.resizedSmooth(width: size, height: size).tensor())
            let taps = backbone.features(x, strides: [8, 16])
            return PatchFeatures.embed(stride8: taps[8]!, stride16: taps[16]!)[0]
        }
        return run(trainPatches: Compute.mapAcrossThreads(train.count) { patches(train[$0]) },
                   testPatches: Compute.mapAcrossThreads(test.count) { patches(test[$0]) }, grid: (size + 7) / 8, scored: { _ in })
    }

    /// From encoder taps (strides 8 and 16) already computed on `size`-square images.
    /// `coresetFraction` < 1 keeps that share of the patches (greedy k-center coreset);
    /// `probes` searches approximately (inverted lists, ``PatchMemory``), nil exactly.
    /// `scored` is told after each image is scored (train images first, then test).
    public static func run(trainTaps: [[Int: Tensor]], testTaps: [[Int: Tensor]], coresetFraction: Double = 1, probes: Int? = nil,
                           seed: UInt64 = 0, scored: (Int) throws -> Void = { _ in }) rethrows -> Result {
        return try run(trainPatches: trainTaps.map(patches), testPatches: testTaps.map(patches), grid: trainTaps[0][8]!.shape[2],
                   coresetFraction: coresetFraction, probes: probes, seed: seed, scored: scored)
    }

    /// PatchCore's memory of the train patches, `coresetFraction` of them kept (at least one more than the neighbours searched).
    public static func memory(_ trainPatches: [Tensor], coresetFraction: Double, probes: Int?, seed: UInt64) -> PatchMemory {
        let total = trainPatches.reduce(0) { $0 + $1.shape[0] }
        let keep = coresetFraction < 1 ? max(PatchMemory.neighbours + 1, Int((Double(total) * coresetFraction).rounded())) : nil
        return PatchMemory(trainPatches: trainPatches, coreset: keep, probes: probes, seed: seed)
    }

    /// An image's patch vectors from its encoder taps (strides 8 and 16).
    public static func patches(_ taps: [Int: Tensor]) -> Tensor { PatchFeatures.embed(stride8: taps[8]!, stride16: taps[16]!)[0] }

    /// Images scored per search with inverted lists (one at a time when exact).
    static let batch = 16

    static func run(trainPatches: [Tensor], testPatches: [Tensor], grid: Int, coresetFraction: Double = 1, probes: Int? = nil,
                    seed: UInt64 = 0, scored: (Int) throws -> Void = { _ in }) rethrows -> Result {
        let memory = self.memory(trainPatches, coresetFraction: coresetFraction, probes: probes, seed: seed)
        let step = probes == nil ? 1 : batch
        var trainScores: [Float] = [], scores: [Float] = [], distances: [[Float]] = []
        if let train = try memory.scoreTrainImages(scored: scored) {
            trainScores = train.map(\.score)
        }
        for start in stride(from: trainScores.count, to: trainPatches.count, by: step) {
            let part = start..<min(start + step, trainPatches.count)
            trainScores += memory.score(Array(trainPatches[part]), trainImages: part).map(\.score)
            try scored(part.upperBound)
        }
        for start in stride(from: 0, to: testPatches.count, by: step) {
            let part = start..<min(start + step, testPatches.count)
            for (s, nearest) in memory.score(Array(testPatches[part])) {
                scores.append(s)
                distances.append(nearest)
            }
            try scored(trainPatches.count + part.upperBound)
        }
        return Result(trainScores: trainScores, testScores: scores, testPatchDistances: distances, gridHeight: grid, gridWidth: grid)
    }
}
