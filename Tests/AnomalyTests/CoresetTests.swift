import Testing
import TestSupport
@testable import Anomaly
@testable import Tensor

@Suite struct CoresetTests {
    /// On a line, by hand: from 0 the farthest point is 20; then 10 is 10
    /// from both chosen points, farther than anything else.
    @Test func greedyKCenterOnALine() {
        let rows = Tensor(shape: [6, 1], storage: [0, 1, 2, 10, 11, 20])
        #expect(Coreset.greedyKCenter(rows, count: 3, seed: 0, start: 0) == [0, 3, 5])
        #expect(Coreset.greedyKCenter(rows, count: 6, seed: 0) == [0, 1, 2, 3, 4, 5])
        #expect(Coreset.greedyKCenter(rows, count: 9, seed: 0) == [0, 1, 2, 3, 4, 5])
    }

    /// Six tight clusters far apart in 300 dimensions, projected to 128:
    /// a coreset of six takes one point of each cluster.
    @Test func projectedCoresetCoversEveryCluster() {
        var rng = SeededGenerator(seed: 3)
        let (clusters, per, d) = (6, 40, 300)
        let centres = (0..<clusters).map { _ in (0..<d).map { _ in 10 * rng.nextNormal() } }
        var storage: [Float] = []
        for c in 0..<clusters { for _ in 0..<per { storage += centres[c].map { $0 + 0.1 * rng.nextNormal() } } }
        let chosen = Coreset.greedyKCenter(Tensor(shape: [clusters * per, d], storage: storage), count: clusters, seed: 9)
        #expect(Set(chosen.map { $0 / per }).count == clusters, "\(chosen)")
    }

    /// A coreset memory keeps each image's rows contiguous, so leave-one-out
    /// scoring still leaves out exactly that image's patches.
    @Test func coresetMemoryKeepsImagesApart() {
        var rng = SeededGenerator(seed: 5)
        let images = (0..<4).map { _ in Tensor.randomNormal([30, 8], generator: &rng) }
        let memory = PatchMemory(trainPatches: images, coreset: 40, seed: 1)
        #expect(memory.index.count == 40)
        #expect(memory.imageRows.map(\.count).reduce(0, +) == 40)
        for (a, b) in zip(memory.imageRows, memory.imageRows.dropFirst()) { #expect(a.upperBound == b.lowerBound) }
        // A train image scored against the others only: none of its own patches is at distance 0.
        let (_, nearest) = memory.score(images[2], trainImage: 2)
        #expect(nearest.allSatisfy { $0 > 0 })
        // Scored with its own patches in memory, the kept ones are at distance 0.
        #expect(memory.score(images[2]).nearest.contains { $0 < 1e-3 })
    }
}
