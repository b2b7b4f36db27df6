import Foundation
import Testing
@testable import Shared

/// The memory estimates against what the stages measurably hold.
@Suite struct StageMemoryTests {
    static func parameters(_ kind: StageKind, size: Int, backbone: String) -> [String: ParameterValue] {
        ["image_size": .int(size), "backbone": .string(backbone), "n_shot": .int(5), "less_normal_fraction": .double(1)]
    }

    /// Peaks measured on bottle_label (120 train, 120 test images, 10 classes,
    /// 256 px, EfficientNet-Lite0; BENCHMARKS.md, "Wall time and peak memory
    /// per stage"), MiB. From patch-features on they include the 250 MiB of
    /// encoder taps the in-process run keeps across stages (a worker's job
    /// does not): each estimate must cover the peak less those, and not be
    /// wildly above the whole peak.
    @Test func estimatesBoundTheMeasuredPeaksAtTheSyntheticDefault() {
        let measured: [StageKind: (peak: Int, held: Int)] = [.preprocess: (87, 0), .segmentTrain: (762, 250), .pseudoLabel: (287, 250),
                                                            .patchFeatures: (546, 250), .bankFit: (325, 250), .evaluate: (310, 250)]
        for (kind, m) in measured {
            let estimate = StageMemory.estimateMiB(kind: kind, parameters: Self.parameters(kind, size: 256, backbone: "efficientnet-lite0"),
                                                   size: .syntheticDefault)
            #expect(estimate >= m.peak - m.held && estimate <= 4 * m.peak, "\(kind): estimate \(estimate) MiB, measured \(m.peak) MiB")
        }
    }

    /// paper.yaml on MVTec LOCO (512 px, Wide-ResNet-101-2 for the
    /// segmenter and PatchCore, ResNet-101 for the banks; 350 train images,
    /// 400 test, 26 classes as in pushpins) fits a 48 GiB worker, and the
    /// stages that cache features per image are as large as the arithmetic says.
    @Test func thePapersSweepAtLocoSizeFitsA48GiBWorker() {
        let loco = CategorySize(train: 350, test: 400, classes: 26)
        let backbones: [StageKind: String] = [.bankFit: "resnet101"]
        var estimates: [StageKind: Int] = [:]
        for kind in StageKind.allCases where kind != .diagnostic {
            let p = Self.parameters(kind, size: 512, backbone: backbones[kind] ?? "wide_resnet101_2")
            estimates[kind] = StageMemory.estimateMiB(kind: kind, parameters: p, size: loco)
            #expect(estimates[kind]! <= 48 << 10, "\(kind): \(estimates[kind]!) MiB")
        }
        // segment-train caches 350 images' taps of 29.4 MB (256 x 128^2 + 512 x 64^2 + 1,024 x 32^2 floats): over 10 GB.
        #expect(estimates[.segmentTrain]! > 350 * 29_360_128 >> 20)
        // patch-features holds the taps (12.6 MB an image) and three copies of the 1,536-d patches (25.2 MB an image).
        #expect(estimates[.patchFeatures]! > (750 * 12_582_912 + 1_100 * 25_165_824) >> 20)
        #expect(StageMemory.estimateMiB(kind: .diagnostic, parameters: [:], size: loco) == 0)
    }

    /// segment-train's cached labelled views: 5 labelled images x 64 views of
    /// Lite0's taps at 256 px ((64^2 x 24 + 32^2 x 40 + 16^2 x 112) floats)
    /// and the view's Int32 mask, 933,888 bytes a view: 285 MiB over fresh views.
    @Test func cachedLabelledViewsAreCounted() {
        func estimate(_ views: Int?) -> Int {
            var p = Self.parameters(.segmentTrain, size: 256, backbone: "efficientnet-lite0")
            if let views { p["views_per_labelled_image"] = .int(views) }
            return StageMemory.estimateMiB(kind: .segmentTrain, parameters: p, size: .syntheticDefault)
        }
        #expect((284...286).contains(estimate(64) - estimate(0)), "\(estimate(64)) - \(estimate(0))")
        #expect(estimate(nil) == estimate(StageSettings.SegmentTrain.defaultViewsPerLabelledImage))
        // Reused fresh views: each labelled image keeps its R most recent (5 x 5 views here).
        var reused = Self.parameters(.segmentTrain, size: 256, backbone: "efficientnet-lite0")
        reused["view_reuse"] = .int(5)
        let ring = StageMemory.estimateMiB(kind: .segmentTrain, parameters: reused, size: .syntheticDefault) - estimate(0)
        #expect((21...23).contains(ring), "\(ring)")
    }

    @Test func moreImagesOrLargerImagesNeverNeedLess() {
        for kind in StageKind.allCases where kind != .diagnostic && kind != .evaluate && kind != .preprocess {
            var last = 0
            for (train, size) in [(50, 128), (120, 256), (350, 256), (350, 512)] {
                let e = StageMemory.estimateMiB(kind: kind, parameters: Self.parameters(kind, size: size, backbone: "wide_resnet50_2"),
                                                size: CategorySize(train: train, test: train, classes: 8))
                #expect(e > last, "\(kind) at \(train) images, \(size) px")
                last = e
            }
        }
    }

    @Test func aCategoryFolderIsCountedWithoutDecoding() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("size-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        for (split, n) in [("train/good", 3), ("test/good", 2), ("test/logical_anomalies", 1), ("validation/good", 4)] {
            let dir = root.appendingPathComponent(split)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            for i in 0..<n { try Data().write(to: dir.appendingPathComponent("\(i).png")) }
        }
        try Data(#"{"classes": [{"id": 0, "name": "background"}, {"id": 1, "name": "pin"}]}"#.utf8)
            .write(to: root.appendingPathComponent("psad-manifest.json"))
        #expect(try CategorySize.count(categoryAt: root) == CategorySize(train: 3, test: 3, classes: 2))
        try FileManager.default.removeItem(at: root.appendingPathComponent("psad-manifest.json"))
        #expect(throws: (any Error).self) { try CategorySize.count(categoryAt: root) }
    }
}
