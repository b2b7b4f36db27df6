import Foundation
import Testing
import TestSupport
@testable import Models
@testable import Tensor

/// Fine-tuning an encoder against one PyTorch training step in train mode
/// (ops/fixtures/torch_finetune.py): the taps with batch statistics, every
/// parameter's gradient, the running statistics afterwards.
@Suite struct FineTuningTests {
    func fixture(_ name: String) throws -> SafetensorsFile {
        try SafetensorsFile(contentsOf: try #require(Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: "safetensors")))
    }

    /// max |ours - theirs| / max |theirs|.
    func relativeError(_ a: Tensor, _ b: Tensor) -> Float {
        precondition(a.shape == b.shape, "\(a.shape) vs \(b.shape)")
        return a.maxAbsDifference(b) / max(b.storage.map(abs).max() ?? 0, 1e-12)
    }

    /// One step: L = sum over taps of sum(tap * r), back-propagated.
    func step(_ encoder: FineTunedEncoder, _ file: SafetensorsFile) throws -> [Int: Tensor] {
        let tape = Tape()
        let taps = encoder(encoder.prefix(try file.tensor("input")), on: tape)
        let r = try Dictionary(uniqueKeysWithValues: [4, 8, 16].map { ($0, try file.tensor("r\($0)")) })
        var total = 0.0
        for (s, t) in taps { for i in 0..<t.value.count { total += Double(t.value.storage[i]) * Double(r[s]!.storage[i]) } }
        let loss = tape.record(Tensor(shape: [1], storage: [Float(total)]), inputs: Array(taps.values)) { g in
            for (s, t) in taps { t.accumulate(r[s]! * g.storage[0]) }
        }
        tape.backward(from: loss)
        return taps.mapValues(\.value)
    }

    /// Compares taps, the gradients and running statistics the fixture has.
    func compare(_ encoder: FineTunedEncoder, _ file: SafetensorsFile, taps: [Int: Tensor], tolerance: Float) throws -> Int {
        for s in [4, 8, 16] {
            let error = relativeError(try #require(taps[s]), try file.tensor("tap\(s)"))
            #expect(error <= tolerance, "train-mode tap \(s): relative error \(error)")
        }
        var compared = 0
        for p in encoder.parameters where file.entries.contains(where: { $0.name == "grad.\(p.name)" }) {
            let error = relativeError(p.gradient, try file.tensor("grad.\(p.name)"))
            #expect(error <= tolerance, "gradient of \(p.name): relative error \(error)")
            compared += 1
        }
        for (name, t) in encoder.tensors where name.contains("running") && file.entries.contains(where: { $0.name == "after.\(name)" }) {
            let error = relativeError(t, try file.tensor("after.\(name)"))
            #expect(error <= 1e-5, "\(name) after the step: relative error \(error)")
            compared += 1
        }
        return compared
    }

    // Tolerance: float32 sums of up to a few thousand terms per gradient
    // element, through a dozen layers of batch-norm backward: a few 1e-5
    // relative; 1e-3 leaves room for other BLAS kernels' summation order.

    @Test func aResNetTrainsAsPyTorchTrainsIt() throws {
        let file = try fixture("finetune_resnet")
        let config = ResNet.Config(name: "narrow", block: .basic, layers: [1, 1, 1, 1], planes: [8, 16, 32, 64])
        let weights = try WeightSet(file: try #require(Bundle.module.url(forResource: "Fixtures/finetune_resnet", withExtension: "safetensors")))
        let encoder = try FineTunedEncoder(try ResNet(config, weights: weights, depth: 3), weights: weights, trainedAfter: nil, taps: [4, 8, 16])
        let taps = try step(encoder, file)
        // Every convolution: its three parameters and two running statistics.
        #expect(try compare(encoder, file, taps: taps, tolerance: 1e-3) == encoder.parameters.count / 3 * 5)
    }

    @Test func efficientNetLite0TrainsAsThePackageTrainsIt() throws {
        let file = try fixture("finetune_lite0")
        let weights = try EfficientNetLite.pretrainedWeights(variant: 0)
        let encoder = try FineTunedEncoder(try EfficientNetLite(variant: 0, weights: weights), weights: weights, trainedAfter: nil, taps: [4, 8, 16])
        let taps = try step(encoder, file)
        #expect(try compare(encoder, file, taps: taps, tolerance: 1e-3) == 8 + 2 * 3)
    }

    /// Before any step, the trained part's inference (its tensors laid over
    /// the weights and folded) is the frozen network; the prefix is the
    /// frozen taps; a step moves only the trained units' tensors.
    @Test func onlyTheUnitsAfterTheFrozenTapTrain() throws {
        let weights = WeightSet(randomSeed: 5)
        let net = try EfficientNetLite(variant: 0, weights: weights)
        let encoder = try FineTunedEncoder(net, weights: WeightSet(randomSeed: 5), trainedAfter: 8, taps: [4, 8, 16])
        let images = Check.random([2, 3, 32, 32], seed: 3)
        let prefix = encoder.prefix(images)
        #expect(prefix.keys.sorted() == [4, 8])
        #expect(prefix[8] == net.features(images, strides: [8])[8])
        // Stride 16 is Lite0's blocks 5...10 (its fourth and fifth stages).
        #expect(Set(encoder.tensors.keys.map { $0.split(separator: ".").prefix(2).joined(separator: ".") })
                == Set((5...10).map { "_blocks.\($0)" }))
        let untouched = try EfficientNetLite(variant: 0, weights: WeightSet(overlay: encoder.tensors, over: WeightSet(randomSeed: 5)))
        #expect(untouched.features(images, strides: [16])[16] == net.features(images, strides: [16])[16])

        let tape = Tape()
        let taps = encoder(prefix, on: tape)
        #expect(taps[4]!.requiresGradient == false && taps[16]!.requiresGradient)
        tape.backward(from: taps[16]!, seed: Check.random(taps[16]!.shape, seed: 4))
        let optimizer = AdamW(parameters: encoder.parameters, learningRate: 1e-2, weightDecay: 0)
        optimizer.update()
        let tuned = try EfficientNetLite(variant: 0, weights: WeightSet(overlay: encoder.tensors, over: WeightSet(randomSeed: 5)))
        #expect(tuned.features(images, strides: [8])[8] == net.features(images, strides: [8])[8])
        #expect(tuned.features(images, strides: [16])[16] != net.features(images, strides: [16])[16])
    }

    /// Recalibration: each trained batch norm's running mean becomes the
    /// mean of its batch means; checked on the first trained convolution,
    /// whose input is the frozen stride-8 tap, by plain sums.
    @Test func recalibrationAveragesTheBatchStatistics() throws {
        let weights = WeightSet(randomSeed: 7)
        let encoder = try FineTunedEncoder(try EfficientNetLite(variant: 0, weights: weights), weights: WeightSet(randomSeed: 7),
                                           trainedAfter: 8, taps: [4, 8, 16])
        let a = encoder.prefix(Check.random([2, 3, 32, 32], seed: 1)), b = encoder.prefix(Check.random([3, 3, 32, 32], seed: 2))
        encoder.recalibrate([a, b])
        let first = encoder.units[0].unit.convs[0]   // block 5's expansion, 1x1
        func channelMeans(_ x: Tensor) -> [Double] {
            let y = Tensor.conv2d(x, weight: first.weight.value, geometry: first.frozen.geometry(for: x))
            let (n, c, h, w) = y.nchw
            return (0..<c).map { ch in
                var total = 0.0
                for i in 0..<n { for p in 0..<(h * w) { total += Double(y.storage[(i * c + ch) * h * w + p]) } }
                return total / Double(n * h * w)
            }
        }
        let expected = zip(channelMeans(a[8]!), channelMeans(b[8]!)).map { Float(($0 + $1) / 2) }
        let running = first.norm.runningMean
        #expect(Check.close(running, Tensor(shape: running.shape, storage: expected), rtol: 1e-4, atol: 1e-5) == nil)
        #expect(first.norm.momentum == EfficientNetLite.momentum)
    }

    @Test func maxPoolSendsEachGradientToTheFirstMaximum() {
        // 1x1x3x3 with a tie: window (3x3, stride 2, padding 1) at the
        // top-left covers rows 0-1, columns 0-1: 5 (0,1) and 5 (1,0) tie.
        let x = Tensor(shape: [1, 1, 3, 3], storage: [1, 5, 2, 5, 0, 3, 4, 1, 9])
        let g = Tensor.maxPool2dBackward(Tensor(shape: [1, 1, 2, 2], storage: [1, 10, 100, 1000]), input: x,
                                         Pool2dGeometry(kernel: 3, stride: 2, padding: 1))
        // Windows: (0,0) rows 0-1 cols 0-1 -> 5 at index 1; (0,1) rows 0-1 cols 1-2 -> 5 at 1;
        // (1,0) rows 1-2 cols 0-1 -> 5 at 3; (1,1) rows 1-2 cols 1-2 -> 9 at 8.
        #expect(g.storage == [0, 11, 0, 100, 0, 0, 0, 0, 1000])
    }
}
