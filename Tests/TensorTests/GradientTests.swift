import Testing
import TestSupport
@testable import Tensor

/// Every gradient the tape computes against central finite differences.
///
/// Each op's output is reduced to a scalar with fixed random weights R,
/// L = sum(op(x) * R), so dL/d(op) = R seeds the backward pass.
@Suite struct GradientTests {
    /// Analytic gradients of `op` with respect to each input, by the tape.
    func tapeGradients(_ inputs: [Tensor], weights: Tensor, _ op: (Tape, [Variable]) -> Variable) -> [Tensor] {
        let tape = Tape()
        let vars = inputs.map { tape.variable($0) }
        let out = op(tape, vars)
        tape.backward(from: out, seed: weights)
        return vars.map { $0.gradient ?? Tensor(zeros: $0.shape) }
    }

    /// Checks the tape against finite differences for every input.
    func check(_ inputs: [Tensor], rtol: Float = 2e-2, atol: Float = 2e-3, step: Float = 1e-2,
               _ op: @escaping (Tape, [Variable]) -> Variable) {
        let probe = Tape()
        let outShape = op(probe, inputs.map { probe.variable($0) }).shape
        let weights = Check.random(outShape, seed: 99)
        let analytic = tapeGradients(inputs, weights: weights, op)
        for k in inputs.indices {
            let numeric = Check.numericalGradient(of: { x in
                var args = inputs
                args[k] = x
                let tape = Tape()
                return Check.weightedSum(op(tape, args.map { tape.variable($0) }).value, weights)
            }, at: inputs[k], step: step)
            #expect(Check.close(analytic[k], numeric, rtol: rtol, atol: atol) == nil, "input \(k)")
        }
    }

    @Test(arguments: [
        Conv2dGeometry(stride: 1, padding: 1),
        Conv2dGeometry(stride: 2, padding: 1),
        Conv2dGeometry(stride: 1, padding: 2, dilation: 2),
        Conv2dGeometry(stride: 1, padding: 1, groups: 2),
        Conv2dGeometry(stride: (1, 1), padding: (0, 1, 1, 0)),
    ])
    func conv2d(geometry: Conv2dGeometry) {
        let cin = 4, cout = 4
        let x = Check.random([2, cin, 5, 6], seed: 1)
        let w = Check.random([cout, cin / geometry.groups, 3, 3], seed: 2, std: 0.5)
        let b = Check.random([cout], seed: 3)
        check([x, w, b]) { tape, v in tape.conv2d(v[0], weight: v[1], bias: v[2], geometry: geometry) }
    }

    @Test func depthwiseAndPointwiseConv() {
        let x = Check.random([2, 3, 6, 5], seed: 4)
        check([x, Check.random([3, 1, 3, 3], seed: 5), Check.random([3], seed: 6)]) { tape, v in
            tape.conv2d(v[0], weight: v[1], bias: v[2], geometry: Conv2dGeometry(stride: 2, padding: 1, groups: 3))
        }
        check([x, Check.random([4, 3, 1, 1], seed: 7), Check.random([4], seed: 8)]) { tape, v in
            tape.conv2d(v[0], weight: v[1], bias: v[2])
        }
    }

    @Test func batchNormTraining() {
        let x = Check.random([3, 2, 3, 4], seed: 10, std: 2)
        let gamma = Check.random([2], seed: 11), beta = Check.random([2], seed: 12)
        check([x, gamma, beta], rtol: 3e-2, atol: 3e-3, step: 5e-3) { tape, v in
            var p = BatchNormParameters(channels: 2)
            return tape.batchNorm(v[0], gamma: v[1], beta: v[2], parameters: &p)
        }
    }

    @Test func reluAwayFromTheKink() {
        var x = Check.random([1, 2, 4, 4], seed: 13)
        for i in 0..<x.count where abs(x.storage[i]) < 0.05 { x.storage[i] = 0.3 }
        check([x]) { tape, v in tape.relu(v[0]) }
    }

    @Test(arguments: [true, false])
    func bilinearUpsampling(alignCorners: Bool) {
        let x = Check.random([1, 2, 3, 4], seed: 14)
        check([x]) { tape, v in tape.resizeBilinear(v[0], height: 7, width: 9, alignCorners: alignCorners) }
        check([x]) { tape, v in tape.resizeBilinear(v[0], height: 2, width: 3, alignCorners: alignCorners) }
    }

    /// The backward pass is the transpose of the resize at the sizes the
    /// segmentation head meets (16 -> 64 and 32 -> 64 along rows past
    /// sixteen lanes), odd ratios and downsampling: <up(x), g> = <x, up^T(g)>,
    /// both sides summed in Double, within the rounding of the Float
    /// products (each term of up^T(g) is a sum of at most 4 ceil(out/in)^2 products).
    @Test(arguments: [true, false])
    func bilinearBackwardIsTheTransposeOfTheResize(alignCorners: Bool) {
        for (h, w, oh, ow) in [(16, 16, 64, 64), (32, 32, 64, 64), (5, 37, 13, 70), (9, 40, 4, 17)] {
            let x = Check.random([2, 3, h, w], seed: 40), g = Check.random([2, 3, oh, ow], seed: 41)
            let up = Tensor.resizeBilinear(x, height: oh, width: ow, alignCorners: alignCorners)
            let back = Tensor.resizeBilinearBackward(g, inputHeight: h, inputWidth: w, alignCorners: alignCorners)
            // Both sides' rounding is within `terms` u of sum |x| up^T(|g|).
            let magnitudes = Tensor.resizeBilinearBackward(Tensor(shape: g.shape, storage: g.storage.map(abs)), inputHeight: h, inputWidth: w,
                                                           alignCorners: alignCorners)
            var lhs = 0.0, rhs = 0.0, scale = 0.0
            for i in 0..<up.count { lhs += Double(up.storage[i]) * Double(g.storage[i]) }
            for i in 0..<x.count {
                rhs += Double(x.storage[i]) * Double(back.storage[i])
                scale += abs(Double(x.storage[i])) * Double(magnitudes.storage[i])
            }
            let terms = 4 * Double((oh + h - 1) / h * ((ow + w - 1) / w)) + 4
            #expect(abs(lhs - rhs) <= 2 * terms * 0x1p-24 * scale, "\(h)x\(w) -> \(oh)x\(ow): \(lhs) vs \(rhs)")
        }
    }

    /// Adding resized maps into a tensor is resizing, then adding, to the
    /// bit (rows past sixteen lanes and the tail), and its gradient is the
    /// finite differences'.
    @Test func addingResizedMapsIsResizingThenAdding() {
        let a = Check.random([2, 3, 6, 21], seed: 42), x8 = Check.random([2, 3, 3, 11], seed: 43), x16 = Check.random([2, 3, 2, 6], seed: 44)
        var fused = a
        for x in [x8, x16] { Tensor.resizeBilinear(x, addingInto: &fused, alignCorners: true) }
        let separate = a + Tensor.resizeBilinear(x8, height: 6, width: 21, alignCorners: true)
            + Tensor.resizeBilinear(x16, height: 6, width: 21, alignCorners: true)
        #expect(fused == separate)
        check([Check.random([1, 2, 4, 5], seed: 45), Check.random([1, 2, 2, 3], seed: 46), Check.random([1, 2, 1, 2], seed: 47)]) { tape, v in
            tape.addResized(v[0], [v[1], v[2]], alignCorners: true)
        }
    }

    @Test func channelsOfAVariable() {
        check([Check.random([2, 5, 2, 3], seed: 48)]) { tape, v in tape.channels(v[0], 1..<4) }
    }

    @Test func concatAddScaleAndSoftmax() {
        let a = Check.random([2, 2, 3, 3], seed: 15), b = Check.random([2, 3, 3, 3], seed: 16)
        check([a, b]) { tape, v in tape.concatChannels(v) }
        check([a, Check.random([2, 2, 3, 3], seed: 17)]) { tape, v in tape.add(v[0], tape.scale(v[1], by: 3)) }
        check([b]) { tape, v in tape.softmaxChannels(v[0]) }
    }

    @Test func psadLosses() {
        let z = Check.random([2, 3, 4, 4], seed: 18)
        var g = SeededGenerator(seed: 19)
        let labels = (0..<32).map { _ in Int32(g.next() % 3) }
        let target = Tensor.oneHot(labels, batch: 2, height: 4, width: 4, classes: 3)
        let fractions = SegmentationLoss.areaFractions(labels.reversed(), batch: 2, pixels: 16, classes: 3)
        check([z], rtol: 3e-2, atol: 1e-4, step: 1e-2) { tape, v in tape.crossEntropy(logits: v[0], labels: labels) }
        check([z], rtol: 3e-2, atol: 1e-4) { tape, v in tape.dice(probabilities: tape.softmaxChannels(v[0]), target: target) }
        check([z], rtol: 3e-2, atol: 1e-4) { tape, v in tape.entropy(probabilities: tape.softmaxChannels(v[0])) }
        check([z], rtol: 3e-2, atol: 1e-4, step: 1e-3) { tape, v in
            tape.histogramMatching(probabilities: tape.softmaxChannels(v[0]), targetFractions: fractions, classes: [1, 2])
        }
    }

    @Test func weightedSumOfLosses() {
        let z = Check.random([1, 3, 3, 3], seed: 20)
        let labels: [Int32] = [0, 1, 2, 2, 1, 0, 0, 0, 1]
        check([z], rtol: 3e-2, atol: 1e-4) { tape, v in
            let p = tape.softmaxChannels(v[0])
            return tape.weightedSum([(tape.crossEntropy(logits: v[0], labels: labels), 10),
                                     (tape.entropy(probabilities: p), 10)])
        }
    }
}
