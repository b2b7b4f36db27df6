import Foundation
import Testing
import TestSupport
import Tensor
@testable import Anomaly

@Suite struct NearestNeighborTests {
    /// Brute force, written independently: every distance, sorted.
    func bruteForce(_ q: Tensor, _ m: Tensor, k: Int, excluding: Range<Int>? = nil) -> [[(Float, Int)]] {
        let (nq, nm, d) = (q.shape[0], m.shape[0], q.shape[1])
        return (0..<nq).map { i in
            (0..<nm).filter { !(excluding?.contains($0) ?? false) }.map { j -> (Float, Int) in
                var s = 0.0
                for t in 0..<d { let x = Double(q.storage[i * d + t] - m.storage[j * d + t]); s += x * x }
                return (Float(s.squareRoot()), j)
            }.sorted { ($0.0, $0.1) < ($1.0, $1.1) }.prefix(k).map { $0 }
        }
    }

    @Test(arguments: [(37, 5, 3, 1000), (50, 9, 7, 16), (300, 9, 64, 128)])
    func chunkedGEMMSearchEqualsBruteForce(memory m: Int, k: Int, queryChunk: Int, memoryChunk: Int) {
        let memory = Check.random([m, 12], seed: 1), queries = Check.random([23, 12], seed: 2)
        let nn = NearestNeighbors(memory: memory, queryChunk: queryChunk, memoryChunk: memoryChunk)
        let (d, i) = nn.search(queries, k: k)
        let expected = bruteForce(queries, memory, k: k)
        for r in 0..<23 {
            #expect(i[r] == expected[r].map(\.1), "query \(r)")
            for (a, b) in zip(d[r], expected[r].map(\.0)) { #expect(abs(a - b) <= 1e-4 * max(1, b)) }
        }
    }

    /// Every row against the other groups, each pair computed once, equals
    /// searching each group's rows with the group excluded. Small integer
    /// vectors make every dot product exact in Float, so distances, ties and
    /// indices must agree exactly; chunks smaller than the groups, groups
    /// spanning chunks, an empty group and per-group k exercise every path.
    @Test(arguments: [(7, 20), (5, 4), (64, 4096), (16, 16)])
    func searchWithinGroupsEqualsLeaveOneGroupOut(chunk: Int, memoryChunk: Int) {
        var rng = SeededGenerator(seed: 9)
        let sizes = [13, 1, 0, 22, 9, 17, 3, 40]
        let count = sizes.reduce(0, +), d = 7
        let memory = Tensor(shape: [count, d], storage: (0..<(count * d)).map { _ in Float(rng.int(0...8) - 4) })
        var groups: [Range<Int>] = [], start = 0
        for n in sizes { groups.append(start..<(start + n)); start += n }
        let k = groups.map { min($0.count % 2 == 0 ? 9 : 4, count - $0.count) }
        let nn = NearestNeighbors(memory: memory, queryChunk: chunk, memoryChunk: memoryChunk)
        var reported: [Int] = []
        let (d2, i2) = nn.searchWithin(groups: groups, k: k) { reported.append($0) }
        #expect(reported.last == count && reported == reported.sorted())
        for (g, rows) in groups.enumerated() where !rows.isEmpty {
            let queries = Tensor(shape: [rows.count, d], storage: Array(memory.storage[(rows.lowerBound * d)..<(rows.upperBound * d)]))
            let (d1, i1) = nn.search(queries, k: k[g], excluding: rows)
            #expect(Array(i2[rows]) == i1, "group \(g)")
            #expect(Array(d2[rows]) == d1, "group \(g)")
            let expected = bruteForce(queries, memory, k: k[g], excluding: rows)
            #expect(i1 == expected.map { $0.map(\.1) }, "group \(g) against brute force")
        }
    }

    @Test func leaveOneOutSkipsTheExcludedRows() {
        let memory = Check.random([40, 6], seed: 3)
        // Queries equal to memory rows 10..<20: excluding them, none finds itself.
        let queries = Tensor(shape: [10, 6], storage: Array(memory.storage[60..<120]))
        let nn = NearestNeighbors(memory: memory, queryChunk: 4, memoryChunk: 8)
        let (d, i) = nn.search(queries, k: 3, excluding: 10..<20)
        let expected = bruteForce(queries, memory, k: 3, excluding: 10..<20)
        #expect(i == expected.map { $0.map(\.1) })
        #expect(d.allSatisfy { $0[0] > 0 })
        #expect(nn.search(queries, k: 1).distances.allSatisfy { $0[0] < 1e-3 })
    }
}

@Suite struct InvertedListTests {
    let exact = NearestNeighborTests()

    /// `count` tight clusters of `size` rows each around well separated centres.
    func clustered(count: Int, size: Int, d: Int, seed: UInt64) -> Tensor {
        let centres = Check.random([count, d], seed: seed, std: 10), noise = Check.random([count * size, d], seed: seed + 1, std: 0.3)
        var rows = noise.storage
        for i in rows.indices {
            let centre: Int = i / (d * size)
            rows[i] += centres.storage[centre * d + i % d]
        }
        return Tensor(shape: [count * size, d], storage: rows)
    }

    @Test func everyListProbedIsExactSearch() {
        let memory = Check.random([300, 12], seed: 4), queries = Check.random([23, 12], seed: 5)
        let index = InvertedLists(memory: memory, lists: 7, iterations: 5, samplePerList: 16, seed: 1)
        #expect(index.lists == 7 && index.members.sorted() == Array(0..<300))
        let (d, i) = index.search(queries, k: 5, probes: 7)
        let expected = exact.bruteForce(queries, memory, k: 5)
        #expect(i == expected.map { $0.map(\.1) })
        for (a, b) in zip(d.joined(), expected.joined().map(\.0)) { #expect(abs(a - b) <= 1e-4 * max(1, b)) }
    }

    @Test func aFewProbesFindTheNearestInClusteredData() {
        // 20 clusters of 15: k-means recovers them, so the 9 nearest of a
        // query near a cluster's member all sit in its list (or the next).
        let memory = clustered(count: 20, size: 15, d: 16, seed: 6)
        var near = [Float]()
        for c in 0..<20 { for t in 0..<16 { near.append(memory.storage[(c * 15 + 3) * 16 + t] + 0.05) } }
        let queries = Tensor(shape: [20, 16], storage: near)
        let index = InvertedLists(memory: memory, lists: 20, seed: 2)
        let (_, i) = index.search(queries, k: 9, probes: 2)
        #expect(i == exact.bruteForce(queries, memory, k: 9).map { $0.map(\.1) })
    }

    @Test func leaveOneOutAndShortListsFallBackToEveryList() {
        // Queries are memory rows 30..<45, each excluding its own "image"
        // (rows 30..<45): with one probe their own list is mostly excluded,
        // so too few rows remain there and the search widens to every list.
        let memory = clustered(count: 4, size: 15, d: 8, seed: 8)
        let queries = Tensor(shape: [15, 8], storage: Array(memory.storage[(30 * 8)..<(45 * 8)]))
        let index = InvertedLists(memory: memory, lists: 4, seed: 3)
        let (d, i) = index.search(queries, k: 9, probes: 1) { _ in 30..<45 }
        #expect(i == exact.bruteForce(queries, memory, k: 9, excluding: 30..<45).map { $0.map(\.1) })
        #expect(d.allSatisfy { $0[0] > 1 })
    }
}

@Suite struct PatchScoreTests {
    @Test func worstPatchReweightedBySoftmaxOfItsNeighbours() {
        // Patch 1 has the largest nearest distance (20). s = [2, 3, 4];
        // w = 1 - e^4 / (e^2 + e^3 + e^4); score = w * 2.
        let d: [[Float]] = [[10, 11, 12], [20, 30, 40], [5, 6, 7]]
        let e2 = exp(2.0), e3 = exp(3.0), e4 = exp(4.0)
        let expected = (1 - e4 / (e2 + e3 + e4)) * 2
        #expect(abs(Double(PatchScore.imageScore(neighbourDistances: d)) - expected) < 1e-6)
    }

    @Test func equalNeighbourDistancesGiveWeightOneMinusOneOverK() {
        let d: [[Float]] = [[10, 10, 10, 10]]
        #expect(abs(PatchScore.imageScore(neighbourDistances: d) - 0.75 * 1) < 1e-6)
    }
}

@Suite struct ROCTests {
    struct Case: Decodable { let name: String; let scores: [Float]; let labels: [Int]; let auroc: Double; let fpr: [Double]; let tpr: [Double] }
    struct File: Decodable { let cases: [Case] }

    @Test func aurocAndCurveMatchScikitLearn() throws {
        let url = try #require(Bundle.module.url(forResource: "Fixtures/roc", withExtension: "json"))
        let file = try JSONDecoder().decode(File.self, from: Data(contentsOf: url))
        #expect(file.cases.count == 3)
        for c in file.cases {
            let roc = ROC(scores: c.scores, labels: c.labels.map { $0 == 1 })
            #expect(abs(roc.area - c.auroc) < 1e-9, "\(c.name): \(roc.area) vs \(c.auroc)")
            #expect(roc.falsePositiveRates.count == c.fpr.count, "\(c.name)")
            for (a, b) in zip(roc.falsePositiveRates, c.fpr) { #expect(abs(a - b) < 1e-12) }
            for (a, b) in zip(roc.truePositiveRates, c.tpr) { #expect(abs(a - b) < 1e-12) }
        }
    }

    @Test func perfectSeparationAndTotalTies() {
        #expect(ROC.auroc(normal: [0.1, 0.2], anomalous: [0.5, 0.9]) == 1)
        #expect(ROC.auroc(normal: [0.5, 0.5], anomalous: [0.5]) == 0.5)
        #expect(ROC.auroc(normal: [0.9], anomalous: [0.1]) == 0)
    }
}

@Suite struct MemoryBankTests {
    @Test func standardisationUsesTheUnbiasedStd() {
        // Dimension 0: values 1, 3 -> mean 2, unbiased std sqrt(2); dimension 1 constant.
        let s = Standardizer(train: [[1, 5], [3, 5]], epsilon: 0)
        #expect(s.mean == [2, 5])
        #expect(abs(s.std[0] - 2.0.squareRoot()) < 1e-12 && s.std[1] == 0)
        let reference = Standardizer(train: [[1, 5], [3, 5]])
        // A constant dimension blows a test deviation up by 1e10 (the reference's quirk).
        #expect(abs(reference([2, 6])[1] - 1e10) < 1)
        #expect(abs(Standardizer(train: [[1, 5], [3, 5]], epsilon: Standardizer.safeEpsilon)([2, 6])[1] - 1e6) < 1)
    }

    @Test func nearestDistanceAndLeaveOneOutStatistics() {
        // Train points on a line at 0, 1, 3, 7.
        let bank = MemoryBank(train: [[0], [1], [3], [7]])
        #expect(bank.nearestDistance([2.5]) == 0.5)
        #expect(bank.trainStatistics(.leaveOneOut) == [1, 1, 2, 4])
    }

    @Test func theReferenceStatisticTakesTheRankOfSampleOne() {
        // Row 0: distances [0, 1, 3, 7]; order [0, 1, 2, 3]; sample #1 at rank 1 -> d[1] = 1.
        // Row 1: distances [1, 0, 2, 6]; order [1, 0, 2, 3]; sample #1 at rank 0 -> d[0] = 1.
        // Row 2: distances [3, 2, 0, 4]; order [2, 1, 0, 3]; sample #1 at rank 1 -> d[1] = 2.
        // Row 3: distances [7, 6, 4, 0]; order [3, 2, 1, 0]; sample #1 at rank 2 -> d[2] = 4.
        let bank = MemoryBank(train: [[0], [1], [3], [7]])
        #expect(bank.trainStatistics(.reference) == [1, 1, 2, 4])
    }

    @Test func scalingByMaxStdOrNothing() {
        let stats: [Double] = [1, 2, 3]
        #expect(BankScaler(trainStatistics: stats, type: .max)(6) == 2)
        #expect(BankScaler(trainStatistics: stats, type: .std)(4) == 2)  // mean 2, unbiased std 1
        #expect(BankScaler(trainStatistics: stats, type: .none)(4) == 4)
    }

    @Test func memoryTypesParseFromLetters() {
        #expect(MemoryType("hcp") == [.histogram, .composition, .patch])
        #expect(MemoryType("p") == .patch)
        #expect(MemoryType("hx") == nil && MemoryType("") == nil)
        #expect(MemoryType("ch")?.description == "hc")
        #expect(MemoryType("nph")?.description == "hpn" && MemoryType("hcpn")?.contains(.instances) == true)
        #expect(MemoryType("gnph")?.description == "hpng" && MemoryType("g")?.contains(.geometry) == true && MemoryType("hcpn")?.contains(.geometry) == false)
    }

    /// Worked by hand on a 4 x 4 mask, pixel centres at 0.125, 0.375, 0.625
    /// and 0.875. Class 1: (x, y) = (0, 0) and (1, 0): centroid (0.25,
    /// 0.125), xx = (0.125² + 0.125²) / 2 = 0.015625, no spread in y. Class 2:
    /// the diagonal (1, 1), (2, 2), (3, 3): centroid (0.625, 0.625), each
    /// offset -0.25, 0, 0.25, so xx = yy = xy = 0.125 / 3. Class 3: absent,
    /// zeros. The 9 is beyond the classes and not counted.
    @Test func partGeometryIsEachClasssCentroidAndSecondMoments() {
        let labels: [Int32] = [
            1, 1, 0, 9,
            0, 2, 0, 0,
            0, 0, 2, 0,
            0, 0, 0, 2,
        ]
        let g = PartGeometry.vector(labels: labels, height: 4, width: 4, classes: 4)
        let expected = [0.25, 0.125, 0.015625, 0, 0,
                        0.625, 0.625, 0.125 / 3, 0.125 / 3, 0.125 / 3,
                        0, 0, 0, 0, 0]
        #expect(g.count == 15 && zip(g, expected).allSatisfy { abs($0 - $1) <= 1e-15 }, "\(g)")
        // Width and height are each their own unit: one pixel at x = 1 of a 2 x 1 mask lies at (0.75, 0.5).
        #expect(PartGeometry.vector(labels: [0, 1], height: 1, width: 2, classes: 2) == [0.75, 0.5, 0, 0, 0])
        // An anti-diagonal has negative xy.
        let anti = PartGeometry.vector(labels: [0, 1, 1, 0], height: 2, width: 2, classes: 2)
        #expect(abs(anti[4] + 0.0625) <= 1e-15 && abs(anti[2] - 0.0625) <= 1e-15, "\(anti)")
    }

    /// Worked by hand. Class 1: the pair at (0,0)-(1,1) touches only
    /// diagonally, so it is one piece; (0,4) and (3,0)-(3,1) are two more.
    /// Class 2: an L of three pixels and a lone pixel not touching it.
    /// Class 3: absent. The 7 is beyond the classes and not counted.
    @Test func partInstancesAreEightConnectedPiecesPerClass() {
        let labels: [Int32] = [
            1, 0, 0, 0, 1,
            0, 1, 2, 2, 0,
            0, 0, 2, 0, 7,
            1, 1, 0, 0, 2,
        ]
        #expect(PartInstances.counts(labels: labels, height: 4, width: 5, classes: 4) == [3, 2, 0])
        // One class filling the image is one piece; a checkerboard of it is one piece too (diagonal neighbours).
        #expect(PartInstances.counts(labels: [Int32](repeating: 1, count: 12), height: 3, width: 4, classes: 2) == [1])
        #expect(PartInstances.counts(labels: [1, 0, 1, 0, 1, 0, 1, 0, 1], height: 3, width: 3, classes: 2) == [1])
        // A one-pixel-wide column and a row.
        #expect(PartInstances.counts(labels: [1, 0, 1, 0, 1, 0], height: 6, width: 1, classes: 2) == [3])
        #expect(PartInstances.counts(labels: [1, 1, 0, 1], height: 1, width: 4, classes: 2) == [2])
    }

    /// A floor on the divisor: train statistics all 0 (every train image's
    /// counts matched by another) divide by the floor, not by 1e-12.
    @Test func aScalerNeverDividesByLessThanItsFloor() {
        #expect(BankScaler(trainStatistics: [0, 0, 0], type: .max, floor: 1)(2) == 2)
        #expect(BankScaler(trainStatistics: [0, 0, 0], type: .std, floor: 1)(2) == 2)
        #expect(BankScaler(trainStatistics: [0, 3], type: .max, floor: 1)(3) == 1)
        #expect(BankScaler(trainStatistics: [0, 0.5], type: .max, floor: 1)(2) == 2)
    }
}

@Suite struct SPROTests {
    @Test func saturationCapsEachRegion() {
        // Region of 4 pixels saturating at 2 (relative 0.5): two pixels at >= t give 1.
        let r = SPRO.Region(values: [0.9, 0.8, 0.1, 0.1], saturationThreshold: 0.5, relative: true)
        let spro = SPRO(regions: [r], normalValues: [0.0, 0.2])
        #expect(spro.spro(threshold: 0.85) == 0.5)
        #expect(spro.spro(threshold: 0.5) == 1)
        #expect(SPRO.Region(values: [1, 1, 1], saturationThreshold: 500, relative: false).saturation == 3)
    }

    @Test func areaOfAPerfectMapIsOne() {
        // Every region value above every anomaly-free value: sPRO is 1 at FPR 0.
        let regions = [SPRO.Region(values: [5, 6, 7], saturationThreshold: 1, relative: true)]
        let spro = SPRO(regions: regions, normalValues: (0..<100).map { Float($0) / 100 })
        #expect(abs(spro.area(fprLimit: 0.05) - 1) < 1e-12)
    }

    @Test func areaByHandWithALinearRamp() {
        // 100 anomaly-free values 0.00 ... 0.99; one region of 10 values 0.9525, 0.9575, ..., 0.9975.
        // Thresholds: just above 0.99 (FPR 0) -> 2 region values, 0.99 (FPR .01) -> 2, 0.98 -> 4,
        // 0.97 -> 6, 0.96 -> 8, 0.95 (FPR .05) -> 10; saturation is the whole region (10).
        let normal = (0..<100).map { Float($0) / 100 }
        let region = (1...10).map { 0.95 + 0.005 * Float($0) - 0.0025 }
        let spro = SPRO(regions: [SPRO.Region(values: region, saturationThreshold: 1, relative: true)], normalValues: normal)
        // Trapezoids over (0, .2), (.01, .2), (.02, .4), (.03, .6), (.04, .8), (.05, 1), divided by the limit.
        let expected = 0.01 * ((0.2 + 0.2) + (0.2 + 0.4) + (0.4 + 0.6) + (0.6 + 0.8) + (0.8 + 1.0)) / 2 / 0.05
        #expect(abs(spro.area(fprLimit: 0.05) - expected) < 1e-9, "\(spro.area(fprLimit: 0.05)) vs \(expected)")
    }
}

@Suite struct PartFeatureTests {
    /// The definition computed the long way: features pooled, upsampled to
    /// full size and concatenated, then averaged under each class mask.
    @Test func adjointShortcutEqualsFullResolutionFeatures() {
        let (h, w, classes) = (24, 20, 4)
        let stages = [Check.random([1, 3, 6, 5], seed: 80), Check.random([1, 2, 3, 3], seed: 81)]
        var g = SeededGenerator(seed: 82)
        var labels = (0..<(h * w)).map { _ in Int32(g.next() % 3) }  // class 3 absent
        labels[5] = 1
        let (hist, comp) = PartFeatures.vectors(features: stages, labels: labels, height: h, width: w, classes: classes)
        let full = Tensor.concatChannels(stages.map {
            Tensor.resizeBilinear(Tensor.avgPool2d($0, Pool2dGeometry(kernel: 5, stride: 1, padding: 2), countIncludePad: true),
                                  height: h, width: w, alignCorners: false)
        })
        var expected: [Double] = []
        for c in 1..<classes {
            let area = Double(labels.filter { $0 == Int32(c) }.count)
            for k in 0..<5 {
                var s = 0.0
                for p in 0..<(h * w) where labels[p] == Int32(c) { s += Double(full.storage[k * h * w + p]) }
                expected.append(s / (area + 1))
            }
        }
        let counts: [Double] = (0..<classes).map { c in Double(labels.filter { $0 == Int32(c) }.count) }
        #expect(hist == counts && counts[3] == 0)
        #expect(comp.count == expected.count)
        for (a, b) in zip(comp, expected) { #expect(abs(a - b) < 1e-4 * max(1, abs(b)), "\(a) vs \(b)") }
        #expect(comp.suffix(5).allSatisfy { $0 == 0 })  // an absent class gives zeros
    }
}

@Suite struct PatchCoreTests {
    struct BlurCase: Decodable { let sigma: Double; let height: Int; let width: Int; let input: [Double]; let output: [Double] }
    struct BlurFile: Decodable { let cases: [BlurCase] }

    @Test func gaussianBlurMatchesSciPy() throws {
        let url = try #require(Bundle.module.url(forResource: "Fixtures/blur", withExtension: "json"))
        for c in try JSONDecoder().decode(BlurFile.self, from: Data(contentsOf: url)).cases {
            let x = Tensor(shape: [1, 1, c.height, c.width], storage: c.input.map(Float.init))
            let y = AnomalyMap.gaussianBlur(x, sigma: c.sigma)
            for (a, b) in zip(y.storage, c.output) { #expect(abs(Double(a) - b) < 1e-5, "sigma \(c.sigma)") }
        }
    }

    @Test func patchEmbeddingPoolsUpsamplesAndConcatenates() {
        let a = Check.random([2, 3, 4, 4], seed: 90), b = Check.random([2, 2, 2, 2], seed: 91)
        let patches = PatchFeatures.embed(stride8: a, stride16: b)
        #expect(patches.count == 2 && patches[0].shape == [16, 5])
        // Patch (1, 2) of image 1, channel 0: the 3x3 mean (zero padded) around it.
        var s: Float = 0
        for y in 0...2 { for x in 1...3 { s += a[1, 0, y, x] } }
        #expect(abs(patches[1].storage[(1 * 4 + 2) * 5 + 0] - s / 9) < 1e-6)
        // Channel 3 comes from the stride-16 map cell (0, 1): pooled over its 2x2 neighbourhood / 9.
        var t: Float = 0
        for y in 0...1 { for x in 0...1 { t += b[1, 0, y, x] } }
        #expect(abs(patches[1].storage[(1 * 4 + 2) * 5 + 3] - t / 9) < 1e-6)
    }

    @Test func invertedListsProbingEveryListScoreAsTheExactSearch() {
        let train = (0..<5).map { Check.random([12, 8], seed: 120 + UInt64($0)) }
        let test = (0..<3).map { Check.random([12, 8], seed: 130 + UInt64($0)) }
        let exact = PatchMemory(trainPatches: train), approximate = PatchMemory(trainPatches: train, probes: 6, lists: 6)
        #expect(approximate.lists?.lists == 6)
        let pairs = [(exact.score(train, trainImages: 0..<5), approximate.score(train, trainImages: 0..<5)),
                     (exact.score(test), approximate.score(test))]
        for (a, b) in pairs {
            #expect(a.count == b.count)
            for (x, y) in zip(a, b) {
                #expect(abs(x.score - y.score) <= 1e-4 * max(1, x.score))
                for (u, v) in zip(x.nearest, y.nearest) { #expect(abs(u - v) <= 1e-4 * max(1, u)) }
            }
        }
        // Leave-one-out: batched, each train image is still scored without its own patches.
        #expect(approximate.score(train, trainImages: 0..<5).allSatisfy { $0.nearest.allSatisfy { $0 > 0.1 } })
    }

    /// Train images scored together (each pair of patches once) as each
    /// scored alone, leave-one-out. The two differ only in how the GEMM
    /// rounds each dot product (within gamma_D |x||y|, gamma_8 about 5e-7,
    /// each way): about 1e-6 of these distances, checked at 1e-5.
    @Test func trainImagesScoredTogetherAsEachAlone() throws {
        let train = (0..<6).map { Check.random([10 + $0, 8], seed: 140 + UInt64($0)) }
        let memory = PatchMemory(trainPatches: train, queryChunk: 8, memoryChunk: 24)
        guard let together = try memory.scoreTrainImages() else { Issue.record("no joint scoring for a memory of every patch"); return }
        let alone = memory.score(train, trainImages: 0..<6)
        for (a, b) in zip(together, alone) {
            #expect(abs(a.score - b.score) <= 1e-5 * max(1, b.score))
            for (u, v) in zip(a.nearest, b.nearest) { #expect(abs(u - v) <= 1e-5 * max(1, v)) }
        }
        // Not for a coreset or inverted lists (their queries are not the memory's rows).
        #expect(try PatchMemory(trainPatches: train, coreset: 20).scoreTrainImages() == nil)
        #expect(try PatchMemory(trainPatches: train, probes: 2, lists: 4).scoreTrainImages() == nil)
    }

    @Test func leaveOneOutScoresATrainImageAgainstTheOthers() {
        let train = (0..<4).map { Check.random([6, 8], seed: 100 + UInt64($0)) }
        let memory = PatchMemory(trainPatches: train)
        // Without exclusion a train image finds itself. The distance is
        // |a|^2 + |a|^2 - 2 a.a in Float, each term a sum of D = 8 products
        // whose order depends on the BLAS kernel, so it is 0 only up to
        // rounding: each sum is within gamma_D |a|^2 (gamma_D = D u / (1 - D u),
        // u = 2^-24) and the two subtractions add 3 u |a|^2, so the squared
        // distance is at most (4 gamma_D + 3 u) |a|^2 and the distance its
        // square root (about 1.5e-3 |a| here, against about 4 to any other row).
        let d = train[2].shape[1], u = Double(Float.ulpOfOne) / 2
        let gamma = Double(d) * u / (1 - Double(d) * u)
        let nearest = memory.score(train[2]).nearest
        for (row, distance) in nearest.enumerated() {
            let norm2 = (0..<d).reduce(0.0) { $0 + Double(train[2].storage[row * d + $1]) * Double(train[2].storage[row * d + $1]) }
            let bound = ((4 * gamma + 3 * u) * norm2).squareRoot()
            #expect(Double(distance) <= bound, "row \(row): self-distance \(distance) above the rounding bound \(bound)")
        }
        // Which row is nearest does not depend on rounding: itself, by far.
        let (_, indices) = memory.index.search(train[2], k: 1)
        #expect(indices.map { $0[0] } == Array(memory.imageRows[2]))
        let (score, others) = memory.score(train[2], trainImage: 2)
        #expect(others.allSatisfy { $0 > 0.1 } && score > 0)
        #expect(memory.imageRows[2] == 12..<18)
    }
}
