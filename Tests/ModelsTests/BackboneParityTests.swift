import Foundation
import Testing
import TestSupport
import Tensor
@testable import Models

/// Backbones against PyTorch outputs (ops/fixtures/torch_backbones.py).
@Suite struct BackboneParityTests {
    func fixture(_ name: String) throws -> URL {
        try #require(Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: "safetensors"))
    }

    /// max |ours - theirs| / max |theirs|.
    func relativeError(_ a: Tensor, _ b: Tensor) -> Float {
        precondition(a.shape == b.shape, "\(a.shape) vs \(b.shape)")
        return a.maxAbsDifference(b) / max(b.storage.map(abs).max() ?? 0, 1e-12)
    }

    @Test(arguments: [("resnet_basic", ResNet.Config(name: "narrow18", block: .basic, layers: [2, 2, 2, 2], planes: [8, 16, 32, 64])),
                      ("resnet_wide", ResNet.Config(name: "narrow-wide", block: .bottleneck, layers: [1, 2, 1, 1],
                                                    planes: [8, 16, 32, 64], widthPerGroup: 128))])
    func resNetMatchesTorchAtEveryTap(name: String, config: ResNet.Config) throws {
        let url = try fixture(name)
        let net = try ResNet(config, weights: WeightSet(file: url))
        let file = try SafetensorsFile(contentsOf: url)
        let taps = net.features(try file.tensor("input"), strides: [4, 8, 16, 32])
        for s in [4, 8, 16, 32] {
            let error = relativeError(try #require(taps[s]), try file.tensor("tap\(s)"))
            #expect(error <= 1e-4, "\(name) stride \(s): relative error \(error)")
        }
    }

    @Test func aShallowNetworkStopsAtItsDepth() throws {
        let url = try fixture("resnet_basic")
        let config = ResNet.Config(name: "narrow18", block: .basic, layers: [2, 2, 2, 2], planes: [8, 16, 32, 64])
        let net = try ResNet(config, weights: WeightSet(file: url), depth: 3)
        #expect(net.channels == [4: 8, 8: 16, 16: 32])
        let file = try SafetensorsFile(contentsOf: url)
        let taps = net.features(try file.tensor("input"), strides: [16])
        #expect(taps.keys.sorted() == [16])
        #expect(relativeError(try #require(taps[16]), try file.tensor("tap16")) <= 1e-4)
    }

    @Test(arguments: [("expand_k5_s2", 24, 40, 5, 2, 6), ("plain_k3_s1", 32, 16, 3, 1, 1), ("skip_k3_s1", 24, 24, 3, 1, 6)])
    func mbConvBlocksMatchTheReference(tag: String, cin: Int, cout: Int, kernel: Int, stride: Int, expand: Int) throws {
        let url = try fixture("mbconv")
        let block = try EfficientNetLite.MBConv(WeightSet(file: url), prefix: tag, in: cin, out: cout, kernel: kernel,
                                                stride: stride, expandRatio: expand)
        let file = try SafetensorsFile(contentsOf: url)
        let error = relativeError(block(try file.tensor("\(tag).input")), try file.tensor("\(tag).output"))
        #expect(error <= 1e-4, "\(tag): relative error \(error)")
    }

    /// The real ImageNet weights (installed by ops/weights/install-efficientnet-lite,
    /// which ops/setup runs) against the reference model at every stride.
    @Test(arguments: [(0, [2: 16, 4: 24, 8: 40, 16: 112, 32: 320]), (1, [2: 16, 4: 24, 8: 40, 16: 112, 32: 320]),
                      (2, [2: 16, 4: 24, 8: 48, 16: 120, 32: 352])])
    func pretrainedLiteMatchesTheReferenceAtEveryTap(variant: Int, channels: [Int: Int]) throws {
        let net = try EfficientNetLite.pretrained(variant: variant)
        #expect(net.channels == channels)
        let file = try SafetensorsFile(contentsOf: try fixture("lite\(variant)_taps"))
        let taps = net.features(try file.tensor("input"), strides: [2, 4, 8, 16, 32])
        for s in [2, 4, 8, 16, 32] {
            let error = relativeError(try #require(taps[s]), try file.tensor("tap\(s)"))
            #expect(error <= 1e-4, "stride \(s): relative error \(error)")
        }
    }
}

@Suite struct WeightLoadingTests {
    @Test func aMissingTensorIsNamed() throws {
        let dir = try TemporaryDirectory()
        let url = dir.url.appendingPathComponent("w.safetensors")
        try SafetensorsFile.write(["conv1.weight": Tensor(zeros: [8, 3, 7, 7])], to: url)
        let config = ResNet.Config(name: "n", block: .basic, layers: [1, 1, 1, 1], planes: [8, 16, 32, 64])
        #expect(throws: WeightError.missingTensor(file: url.path, tensor: "bn1.weight")) {
            try ResNet(config, weights: WeightSet(file: url))
        }
    }

    @Test func aWrongShapeIsNamedWithBothShapes() throws {
        let dir = try TemporaryDirectory()
        let url = dir.url.appendingPathComponent("w.safetensors")
        try SafetensorsFile.write(["conv1.weight": Tensor(zeros: [8, 3, 3, 3])], to: url)
        let config = ResNet.Config(name: "n", block: .basic, layers: [1, 1, 1, 1], planes: [8, 16, 32, 64])
        #expect(throws: WeightError.shapeMismatch(file: url.path, tensor: "conv1.weight", expected: [8, 3, 7, 7], found: [8, 3, 3, 3])) {
            try ResNet(config, weights: WeightSet(file: url))
        }
    }

    @Test func missingWeightFilesSayHowToInstallThem() {
        do {
            _ = try WeightSet.installed("no-such-net.safetensors", install: "ops/weights/install-x")
            Issue.record("found a file that does not exist")
        } catch {
            #expect("\(error)".contains("ops/weights/install-x"))
        }
    }

    /// PSAD_WEIGHTS may list several folders (a shared volume before the image's own).
    @Test func theWeightsPathIsASearchPath() {
        #expect(WeightSet.searchDirectories("/data/weights:/opt/psad/weights").map(\.path) == ["/data/weights", "/opt/psad/weights"])
        #expect(WeightSet.searchDirectories("/w").map(\.path) == ["/w"])
        #expect(WeightSet.searchDirectories("")[0].path.hasSuffix(".local/share/psad/weights"))
        #expect(WeightSet.searchDirectories(nil)[0].path.hasSuffix(".local/share/psad/weights"))
    }

    @Test func everyStandardConfigurationBuildsWithTheRightTapChannels() throws {
        // Random weights: shapes and channel bookkeeping of the full-size networks.
        let r18 = try ResNet(.resnet18, weights: WeightSet(randomSeed: 1))
        #expect(r18.channels == [4: 64, 8: 128, 16: 256, 32: 512])
        let wide = try ResNet(.wideResnet50, weights: WeightSet(randomSeed: 1), depth: 1)
        #expect(wide.channels == [4: 256])
        #expect(wide.stages[0][0].convs[0].weight.shape == [128, 64, 1, 1])  // width = 64 * 128 / 64
        for v in 0...4 { _ = try EfficientNetLite(variant: v, weights: WeightSet(randomSeed: 2)) }
        let lite2 = try EfficientNetLite(variant: 2, weights: WeightSet(randomSeed: 2))
        // round_filters: 320 * 1.1 = 352 -> 352; 24 * 1.1 = 26.4 -> int(26.4 + 4) // 8 * 8 = 24.
        #expect(lite2.channels[32] == 352 && lite2.channels[4] == 24)
    }

    /// Split by image over the threads (each part's GEMMs on one thread), a
    /// batch gives every image the features it gets in the whole-batch call.
    ///
    /// Not bit for bit on every machine: the whole-batch call runs each GEMM
    /// over all threads and a part runs it on one, and whether that changes
    /// the summation order depends on the OpenBLAS kernel (it does not with
    /// SkylakeX's, it does with Haswell's and Zen's). The bound follows from
    /// the arithmetic: a convolution output is a dot product of length
    /// K = C_in / groups * kh * kw, and two Float summation orders of it differ
    /// by at most 2 gamma_K sum|w x| (gamma_K = K u / (1 - K u), u = 2^-24).
    /// Folded batch norm and ReLU do not amplify it, so along the network the
    /// differences add up to at most 2 sum_l gamma_{K_l} relative to the
    /// activations, which are of order 1 here (unit-normal input, variance-
    /// preserving random weights). The sum runs over every convolution up to
    /// the stride-8 tap: ResNet-18 147 (stem) + 4 x 576 (layer1) + 576 + 1152
    /// + 64 + 2 x 1152 (layer2) = 6,547; EfficientNet-Lite0 27 (stem) + 9 + 32
    /// + 16 + 9 + 96 + 24 + 9 + 144 (stride 4) + 24 + 25 + 144 + 40 + 25 + 240
    /// (stride 8) = 864. An image in the wrong place or computed with
    /// another's input is off by order 1 (the last check).
    @Test func featuresSplitByImageEqualTheWholeBatchCall() throws {
        var rng = SeededGenerator(seed: 5)
        let x = Tensor.randomNormal([3, 3, 32, 32], generator: &rng)
        let nets: [(net: any Backbone, reduction: Int)] = [(try ResNet(.resnet18, weights: WeightSet(randomSeed: 1), depth: 2), 6_547),
                                                          (try EfficientNetLite(variant: 0, weights: WeightSet(randomSeed: 2)), 864)]
        let u = Double(Float.ulpOfOne) / 2
        func worst(_ a: Tensor, _ b: Tensor) -> Double {
            Double(zip(a.storage, b.storage).map { abs($0 - $1) / max(1, abs($1)) }.max()!)
        }
        for (net, reduction) in nets {
            let tolerance = 2 * Double(reduction) * u / (1 - Double(reduction) * u)
            let taps: Set<Int> = [4, 8]
            let whole = net.features(x, strides: taps), split = net.featuresSplitByImage(x, strides: taps)
            for s in taps {
                #expect(split[s]!.shape == whole[s]!.shape)
                #expect(worst(split[s]!, whole[s]!) <= tolerance, "\(net.name) stride \(s): \(worst(split[s]!, whole[s]!)) > \(tolerance)")
            }
            // The bound has teeth: the images in another order are far outside it.
            let swapped = net.featuresSplitByImage(Tensor.concatItems([x.items(1..<2), x.items(0..<1), x.items(2..<3)]), strides: [8])
            #expect(worst(swapped[8]!, whole[8]!) > 100 * tolerance)
        }
    }
}
