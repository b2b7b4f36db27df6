import Foundation
import Testing
import TestSupport
import Vision
@testable import Stages

@Suite struct DefectTypeTests {
    /// Worked by hand: good scores 0.1 and 0.4; logical "a" = {0.5, 0.3}
    /// wins 2 + 1 of 4 pairs, "b" = {0.3} 1 of 2; structural "c" = {0.2} 1 of 2.
    @Test func aurocPerTypeCountsAnImageForEachOfItsTypes() {
        let rows = Evaluate.byDefectType(scores: [0.1, 0.4, 0.5, 0.3, 0.2], types: [[], [], ["a"], ["a", "b"], ["c"]], good: 2, logical: 2)
        #expect(rows == [
            .init(split: "logical_anomalies", defectType: "a", images: 2, auroc: 0.75),
            .init(split: "logical_anomalies", defectType: "b", images: 1, auroc: 0.5),
            .init(split: "structural_anomalies", defectType: "c", images: 1, auroc: 0.5)])
    }

    /// PatchCore's maps, computed on its own square input, come back to the
    /// preprocessed (padded) frame: a map rising left to right across the
    /// square rises across each image's content there, the padding stays 0,
    /// and a map already in that frame is returned as it is.
    @Test func mapsFromPatchCoresSquareInputComeBackToThePreprocessedFrame() throws {
        let dir = try TemporaryDirectory()
        try SyntheticBenchmark.write(to: dir.url, seed: 5, size: .small, only: ["snack_box"])
        let input = try CategoryInput(root: dir.url.appendingPathComponent("snack_box"), imageSize: 64)
        let square = input.inFrame(size: 32, fit: .square)
        let rising = (0..<(32 * 32)).map { Float($0 % 32) / 31 }
        let back = try input.maps(Array(repeating: rising, count: input.testSamples.count), from: square)
        let native = try PNG.dimensions(input.testSamples[0].url)
        let (w, h) = input.prep.resizedSize(width: native.width, height: native.height)
        #expect(w == 64 && h < 64, "snack_box is wide: \(w) x \(h)")
        for map in back {
            for y in 0..<64 {
                let row = Array(map[(y * 64)..<(y * 64 + 64)])
                if y >= h { #expect(row.allSatisfy { $0 == 0 }); continue }
                #expect(row[0] < 0.05 && row[w - 1] > 0.95, "row \(y): \(row[0]) ... \(row[w - 1])")
                #expect(zip(row[..<(w - 1)], row[1..<w]).allSatisfy { $0 <= $1 + 1e-6 })
            }
        }
        let same = Array(repeating: (0..<(64 * 64)).map { Float($0) }, count: input.testSamples.count)
        #expect(try input.maps(same, from: input) == same)
    }

    /// The types read back from the ground truth are the generator's: for
    /// every test image of a small cable_pair, the names of its scene's defects.
    @Test func testImagesTypesComeFromTheirGroundTruth() throws {
        let dir = try TemporaryDirectory()
        try SyntheticBenchmark.write(to: dir.url, seed: 5, size: .small, only: ["cable_pair"])
        let category = try #require(SyntheticBenchmark.category(named: "cable_pair"))
        let input = try CategoryInput(root: dir.url.appendingPathComponent("cable_pair"), imageSize: 64)
        let names = Dictionary(uniqueKeysWithValues: category.defectTypes.map { ($0.pixelValue, $0.defectName) })
        var expected: [[String]] = []
        for split in [Split.testGood, .testLogical, .testStructural] {
            for index in 0..<4 {   // `--size small`: 4 images per test split
                let scene = SyntheticBenchmark.render(category, seed: 5, split: split, index: index, size: .small).scene
                expected.append(Set(scene.defects.map { names[Int($0.pixelValue)]! }).sorted())
            }
        }
        let types = try input.testDefectTypes()
        #expect(types == expected)
        #expect(types.prefix(4).allSatisfy(\.isEmpty) && types.dropFirst(4).allSatisfy { !$0.isEmpty })
    }
}
