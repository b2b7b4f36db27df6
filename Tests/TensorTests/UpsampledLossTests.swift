import Testing
import TestSupport
@testable import Tensor

/// The fused losses equal bilinear upsampling followed by the separate
/// losses (each of which is checked against PyTorch), value and gradient.
@Suite struct UpsampledLossTests {
    static func composed(_ z: Tensor, height: Int, width: Int, _ loss: (Tape, Variable) -> [(Variable, Float)]) -> (Float, Tensor) {
        let tape = Tape()
        let p = Parameter(z)
        let up = tape.resizeBilinear(tape.watch(p), height: height, width: width, alignCorners: true)
        let total = tape.weightedSum(loss(tape, up))
        tape.backward(from: total)
        return (total.value.storage[0], p.gradient)
    }

    // Width 37: two 16-pixel blocks and a tail; logits large enough to matter.
    static let (c, h, w, height, width) = (5, 4, 6, 19, 37)

    /// Batches of 2 and 3: with two threads the second splits its rows
    /// within an image, so a range starts and ends mid-image. 26 classes as
    /// LOCO's most (the class sums run four classes side by side, and a tail).
    @Test(arguments: [(2, 5), (3, 5), (2, 26)]) func supervisedMatchesTheComposition(n: Int, c: Int) {
        var rng = SeededGenerator(seed: 11)
        let z = Tensor.randomNormal([n, c, Self.h, Self.w], std: 3, generator: &rng)
        let labels = (0..<(n * Self.height * Self.width)).map { _ in Int32(rng.int(0...(c - 1))) }
        let onehot = Tensor.oneHot(labels, batch: n, height: Self.height, width: Self.width, classes: c)
        let (want, wantGrad) = Self.composed(z, height: Self.height, width: Self.width) { tape, up in
            [(tape.crossEntropy(logits: up, labels: labels), Float(10)), (tape.dice(probabilities: tape.softmaxChannels(up), target: onehot), Float(1))]
        }
        let (got, grad) = SegmentationLoss.supervisedUpsampled(logits: z, labels: labels, height: Self.height, width: Self.width,
                                                               ceWeight: 10, diceWeight: 1)
        #expect(abs(got - want) <= 1e-5 * abs(want), "\(got) vs \(want)")
        #expect(Check.close(grad, wantGrad, rtol: 1e-4, atol: 1e-7) == nil)
    }

    @Test(arguments: [2, 3]) func unsupervisedMatchesTheComposition(n: Int) {
        var rng = SeededGenerator(seed: 12)
        let z = Tensor.randomNormal([n, Self.c, Self.h, Self.w], std: 2, generator: &rng)
        let fractions = Tensor(shape: [n, Self.c], storage: (0..<(n * Self.c)).map { _ in rng.nextUniform() / Float(Self.c) })
        let classes = [1, 3, 4]
        let (want, wantGrad) = Self.composed(z, height: Self.height, width: Self.width) { tape, up in
            let q = tape.softmaxChannels(up)
            return [(tape.entropy(probabilities: q), Float(10)), (tape.histogramMatching(probabilities: q, targetFractions: fractions, classes: classes), Float(1))]
        }
        let (got, grad) = SegmentationLoss.unsupervisedUpsampled(logits: z, height: Self.height, width: Self.width, entropyWeight: 10,
                                                                 fractions: fractions, histogramClasses: classes, histogramWeight: 1)
        #expect(abs(got - want) <= 1e-5 * abs(want), "\(got) vs \(want)")
        #expect(Check.close(grad, wantGrad, rtol: 1e-4, atol: 1e-7) == nil)
        // Entropy alone.
        let (h, _) = SegmentationLoss.unsupervisedUpsampled(logits: z, height: Self.height, width: Self.width, entropyWeight: 1,
                                                            fractions: nil, histogramClasses: [], histogramWeight: 0)
        let (wantH, _) = Self.composed(z, height: Self.height, width: Self.width) { tape, up in [(tape.entropy(probabilities: tape.softmaxChannels(up)), Float(1))] }
        #expect(abs(h - wantH) <= 1e-5 * wantH)
    }
}
