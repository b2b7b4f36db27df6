import Foundation
import Testing
import TestSupport
@testable import Tensor

/// Small cases whose answers are worked out by hand.
@Suite struct HandComputedTests {
    @Test func splitAcrossThreadsCoversTheItemsInOrderEachPartOnOneThread() {
        let parts = Compute.splitAcrossThreads(7) { range in (range, Compute.threads, Compute.splitAcrossThreads(3) { $0 }) }
        #expect(parts.map(\.0).flatMap { Array($0) } == Array(0..<7))
        #expect(parts.count == min(Compute.threads, 7))
        if parts.count > 1 {
            #expect(parts.allSatisfy { $0.1 == 1 })          // kernels inside a part run on its thread
            #expect(parts.allSatisfy { $0.2 == [0..<3] })    // a nested split runs directly
        }
        #expect(Compute.splitAcrossThreads(1) { $0 } == [0..<1])
    }

    /// A batch split by image over the threads gives each image what it gets
    /// alone, and the weight gradient is the sum of the images' (3x3 stride 2
    /// and 1x1; batches that split and one that does not).
    @Test(arguments: [(4, 3), (4, 1), (8, 3), (3, 3)])
    func convolutionOfABatchEqualsItsImagesOneByOne(batch: Int, kernel: Int) {
        var rng = SeededGenerator(seed: 11)
        let x = Tensor.randomNormal([batch, 6, 9, 10], generator: &rng)
        let w = Tensor.randomNormal([5, 6, kernel, kernel], generator: &rng)
        let g = Conv2dGeometry(stride: kernel == 3 ? 2 : 1, padding: kernel / 2)
        let y = Tensor.conv2d(x, weight: w, geometry: g, activation: .relu)
        let dy = Tensor.randomNormal(y.shape, generator: &rng)
        let whole = Tensor.conv2dBackward(x, weight: w, outputGradient: dy, geometry: g)
        var dwSum = Tensor(zeros: w.shape)
        for b in 0..<batch {
            let xb = x.items(b..<(b + 1))
            #expect(Tensor.conv2d(xb, weight: w, geometry: g, activation: .relu) == y.items(b..<(b + 1)))
            let one = Tensor.conv2dBackward(xb, weight: w, outputGradient: dy.items(b..<(b + 1)), geometry: g)
            #expect(one.input == whole.input.items(b..<(b + 1)))
            dwSum = dwSum + one.weight
        }
        let worst = zip(dwSum.storage, whole.weight.storage).map { abs($0 - $1) / max(1, abs($0)) }.max()!
        #expect(worst < 1e-5, "weight gradient differs by \(worst)")
    }

    @Test func itemsAndConcatItemsAreInverse() {
        let x = Tensor(shape: [3, 2], storage: [1, 2, 3, 4, 5, 6])
        #expect(x.items(1..<3) == Tensor(shape: [2, 2], storage: [3, 4, 5, 6]))
        #expect(Tensor.concatItems([x.items(0..<1), x.items(1..<3)]) == x)
    }

    @Test func matmulOfTwoByTwo() {
        let a = Tensor(shape: [2, 3], storage: [1, 2, 3, 4, 5, 6])
        let b = Tensor(shape: [3, 2], storage: [7, 8, 9, 10, 11, 12])
        #expect(Tensor.matmul(a, b).storage == [58, 64, 139, 154])
        #expect(Tensor.matmul(a, a, transposeB: true).storage == [14, 32, 32, 77])
    }

    @Test func convolutionWithAllOnesKernelSumsTheWindow() {
        // 3x3 input 1..9, 2x2 ones kernel, no padding: window sums.
        let x = Tensor(shape: [1, 1, 3, 3], storage: (1...9).map(Float.init))
        let w = Tensor(zeros: [1, 1, 2, 2], value: 1)
        let y = Tensor.conv2d(x, weight: w, bias: Tensor(shape: [1], storage: [0.5]))
        #expect(y.shape == [1, 1, 2, 2])
        #expect(y.storage == [12.5, 16.5, 24.5, 28.5])
    }

    @Test func depthwiseKeepsChannelsApart() {
        // Channel 0 scaled by 2, channel 1 by -1 (1x1 depthwise kernels).
        let x = Tensor(shape: [1, 2, 1, 2], storage: [1, 2, 3, 4])
        let w = Tensor(shape: [2, 1, 1, 1], storage: [2, -1])
        #expect(Tensor.conv2d(x, weight: w, geometry: Conv2dGeometry(groups: 2)).storage == [2, 4, -3, -4])
    }

    @Test func averagePoolDivisorAtTheBorder() {
        // 2x2 ones, 3x3 window, padding 1: each window covers 4 real pixels of a padded 3x3 area.
        let x = Tensor(zeros: [1, 1, 2, 2], value: 1)
        let g = Pool2dGeometry(kernel: 3, stride: 1, padding: 1)
        let fourNinths: Float = 4.0 / 9.0
        #expect(Tensor.avgPool2d(x, g, countIncludePad: true).storage == [Float](repeating: fourNinths, count: 4))
        #expect(Tensor.avgPool2d(x, g, countIncludePad: false).storage == [1, 1, 1, 1])
    }

    @Test func theStemPoolsSeparablePathEqualsTheWindowByWindowOne() {
        // Every parity of height and width, including the smallest, edges where a neighbour is missing,
        // and widths past one 8-lane block.
        var rng = SeededGenerator(seed: 7)
        for (h, w) in [(2, 2), (2, 3), (3, 2), (3, 3), (4, 5), (5, 4), (7, 9), (16, 17), (17, 34), (33, 40)] {
            let x = Tensor(shape: [2, 3, h, w], storage: (0..<(6 * h * w)).map { _ in rng.nextUniform() * 2 - 1 })
            let g = Pool2dGeometry(kernel: 3, stride: 2, padding: 1)
            #expect(Tensor.maxPool3x3Stride2(x).shape == Tensor.maxPool2dAnyWindow(x, g).shape)
            #expect(Tensor.maxPool3x3Stride2(x).storage == Tensor.maxPool2dAnyWindow(x, g).storage, "\(h)x\(w)")
        }
        // By hand: 3x3, windows centred on (0,0), (0,2), (2,0), (2,2).
        let x = Tensor(shape: [1, 1, 3, 3], storage: [1, 9, 2, 3, 4, 5, 8, 6, 7])
        #expect(Tensor.maxPool2d(x, Pool2dGeometry(kernel: 3, stride: 2, padding: 1)).storage == [9, 9, 8, 7])
    }

    @Test func bilinearAlignCornersKeepsTheEnds() {
        // [0, 3] to 4 samples with align_corners: 0, 1, 2, 3; without: 0, 0.75, 2.25, 3.
        let x = Tensor(shape: [1, 1, 1, 2], storage: [0, 3])
        #expect(Tensor.resizeBilinear(x, height: 1, width: 4, alignCorners: true).storage == [0, 1, 2, 3])
        #expect(Tensor.resizeBilinear(x, height: 1, width: 4, alignCorners: false).storage == [0, 0.75, 2.25, 3])
    }

    /// Up and down, both corner conventions: every output is the scalar
    /// formula's value bit for bit (rows are interpolated once and blended,
    /// in the formula's order of operations).
    @Test(arguments: [(5, 7, 19, 37), (9, 12, 4, 5), (3, 3, 3, 3)])
    func bilinearIsTheScalarFormula(h: Int, w: Int, oh: Int, ow: Int) {
        let x = Check.random([2, 3, h, w], seed: 57)
        for align in [true, false] {
            let ty = LinearTaps(input: h, output: oh, alignCorners: align), tx = LinearTaps(input: w, output: ow, alignCorners: align)
            var want = [Float]()
            for plane in 0..<6 {
                let src = Array(x.storage[(plane * h * w)..<((plane + 1) * h * w)])
                for i in 0..<oh {
                    for j in 0..<ow {
                        let top = tx.w0[j] * src[ty.i0[i] * w + tx.i0[j]] + tx.w1[j] * src[ty.i0[i] * w + tx.i1[j]]
                        let bottom = tx.w0[j] * src[ty.i1[i] * w + tx.i0[j]] + tx.w1[j] * src[ty.i1[i] * w + tx.i1[j]]
                        want.append(ty.w0[i] * top + ty.w1[i] * bottom)
                    }
                }
            }
            #expect(Tensor.resizeBilinear(x, height: oh, width: ow, alignCorners: align).storage == want)
        }
    }

    @Test func argmaxAndOneHotAreInverse() {
        let labels: [Int32] = [2, 0, 1, 1, 0, 2]
        let onehot = Tensor.oneHot(labels, batch: 1, height: 2, width: 3, classes: 3)
        #expect(onehot.argmaxChannels() == labels)
        #expect(onehot.sum() == 6)
    }

    @Test func softmaxOfEqualLogitsIsUniform() {
        let p = Tensor(zeros: [1, 4, 2, 2], value: 7).softmaxChannels()
        #expect(p.storage.allSatisfy { $0 == 0.25 })
    }

    @Test func entropyOfUniformTwoClassesIsHalfLogTwo() {
        // mean over elements of -q log q with q = 1/2 everywhere: (1/2) log 2 (eps aside).
        let q = Tensor(zeros: [1, 2, 2, 2], value: 0.5)
        let value = SegmentationLoss.entropy(probabilities: q, eps: 0).value
        #expect(abs(value - 0.5 * Float(0.6931472)) < 1e-6)
    }

    @Test func diceOfAPerfectPredictionIsNearZero() {
        let labels: [Int32] = [0, 1, 1, 0]
        let y = Tensor.oneHot(labels, batch: 1, height: 2, width: 2, classes: 2)
        // Each class: 2I/(S + eps) = 4 / (4 + 1e-4).
        let value = SegmentationLoss.dice(probabilities: y, target: y).value
        #expect(abs(value - (1 - 4 / (4 + 1e-4))) < 1e-6)
    }

    @Test func histogramMatchingIsAnL1OfAreas() {
        // Class 1 predicted on half the pixels, label says a quarter: |0.25 - 0.5| = 0.25.
        let q = Tensor(shape: [1, 2, 2, 2], storage: [0, 0, 1, 1, 1, 1, 0, 0])
        let a = Tensor(shape: [1, 2], storage: [0.75, 0.25])
        #expect(SegmentationLoss.histogramMatching(probabilities: q, targetFractions: a, classes: [1]).value == 0.25)
    }

    @Test func foldedBatchNormEqualsConvolutionThenBatchNorm() {
        let x = Check.random([2, 3, 5, 5], seed: 30)
        let w = Check.random([4, 3, 3, 3], seed: 31), b = Check.random([4], seed: 32)
        let bn = BatchNormParameters(gamma: Check.random([4], seed: 33), beta: Check.random([4], seed: 34),
                                     runningMean: Check.random([4], seed: 35),
                                     runningVar: Tensor(shape: [4], storage: [0.5, 1, 2, 4]))
        let geometry = Conv2dGeometry(stride: 1, padding: 1)
        let reference = Tensor.batchNormInference(Tensor.conv2d(x, weight: w, bias: b, geometry: geometry), bn)
        let folded = bn.fold(weight: w, bias: b)
        let y = Tensor.conv2d(x, weight: folded.weight, bias: folded.bias, geometry: geometry)
        #expect(Check.close(y, reference, rtol: 1e-4, atol: 1e-4) == nil)
    }

    /// The gradient passes strictly inside (low, high) only: zero at both
    /// kinks, outside, and for NaN; a positive zero where it is cut. 37
    /// elements, so the sixteen-wide loop and its tail both run.
    @Test func clampBackwardPassesStrictlyInside() {
        let pattern: [Float] = [-1, 0, 0.5, 6, 7, .nan, 3, -0.0]
        let x = Tensor(shape: [37], storage: (0..<37).map { pattern[$0 % pattern.count] })
        let dy = Tensor(shape: [37], storage: (0..<37).map { -Float($0) - 1 })
        let got = Tensor.clampBackward(dy, input: x, low: 0, high: 6)
        let want: [Float] = (0..<37).map { i in [2, 6].contains(i % pattern.count) ? -Float(i) - 1 : 0 }
        #expect(got.storage == want)
        #expect(got.storage.allSatisfy { $0 != 0 || $0.sign == .plus })
    }

    @Test func reluAndRelu6() {
        let x = Tensor(shape: [4], storage: [-1, 0.5, 6.5, 3])
        #expect(x.relu().storage == [0, 0.5, 6.5, 3])
        #expect(x.relu6().storage == [0, 0.5, 6, 3])
    }

    @Test func trainingReducesALossOnATinyHead() {
        // A 1x1 head fitted to separable pixels: AdamW must drive CE down.
        let x = Check.random([1, 2, 4, 4], seed: 40)
        let labels = (0..<16).map { Int32(x.storage[$0] > 0 ? 1 : 0) }
        let w = Parameter(Check.random([2, 2, 1, 1], seed: 41, std: 0.1)), b = Parameter(Tensor(zeros: [2]))
        let opt = AdamW(parameters: [w, b], learningRate: 0.1)
        func step() -> Float {
            let tape = Tape()
            let loss = tape.crossEntropy(logits: tape.conv2d(tape.constant(x), weight: tape.watch(w), bias: tape.watch(b)),
                                         labels: labels)
            tape.backward(from: loss)
            opt.update()
            return loss.value.storage[0]
        }
        let first = step()
        var last = first
        for _ in 0..<50 { last = step() }
        #expect(last < first * 0.3)
    }
}

/// The same inputs and thread count give bit-identical outputs.
@Suite struct DeterminismTests {
    @Test func kernelsAreBitIdenticalAcrossRuns() {
        let x = Check.random([2, 8, 17, 13], seed: 50)
        let w = Check.random([8, 8, 3, 3], seed: 51), dw = Check.random([8, 1, 3, 3], seed: 52)
        func run() -> [Tensor] {
            let y = Tensor.conv2d(x, weight: w, geometry: Conv2dGeometry(stride: 1, padding: 1))
            let d = Tensor.conv2d(x, weight: dw, geometry: Conv2dGeometry(stride: 1, padding: 1, groups: 8))
            let back = Tensor.conv2dBackward(x, weight: w, outputGradient: y, geometry: Conv2dGeometry(stride: 1, padding: 1))
            return [y, d, back.input, back.weight, Tensor.resizeBilinear(y, height: 30, width: 20, alignCorners: false),
                    y.softmaxChannels()]
        }
        #expect(run() == run())
    }

    /// OpenBLAS's digits follow its thread count, and the count is
    /// process-wide: a GEMM outside any split (all threads) and the GEMMs
    /// inside a split on another thread (one thread each) keep their own
    /// digits while both run (``BLASThreads``). Before the regimes were kept
    /// apart, a split ending reset the count under the other thread's GEMMs.
    @Test(.enabled(if: Compute.threads > 1, "needs two threads"))
    func gemmsKeepTheirDigitsWhileAnotherThreadSplits() {
        // Big enough for OpenBLAS to thread it (M N K above its threshold).
        let a = Check.random([480, 80], seed: 53), b = Check.random([80, 64], seed: 54)
        let full = Tensor.matmul(a, b)
        let single = Compute.onOneThread { Tensor.matmul(a, b) }
        let state = SplitLoop()
        let other = Thread {
            while !state.stopped {
                let parts = Compute.splitAcrossThreads(2) { _ in Tensor.matmul(a, b) }
                state.record(parts.allSatisfy { $0 == single })
            }
            state.finish()
        }
        other.start()
        var outside = 0
        for _ in 0..<400 where Tensor.matmul(a, b) != full { outside += 1 }
        state.stop()
        #expect(outside == 0, "\(outside) of 400 GEMMs outside the splits changed digits")
        #expect(state.wrongSplits == 0, "\(state.wrongSplits) of \(state.splits) splits changed digits")
    }

    @Test func seededGeneratorRepeats() {
        var a = SeededGenerator(seed: 7), b = SeededGenerator(seed: 7), c = SeededGenerator(seed: 8)
        let xs = (0..<5).map { _ in a.next() }
        #expect(xs == (0..<5).map { _ in b.next() })
        #expect(xs != (0..<5).map { _ in c.next() })
    }
}

/// The convolution epilogue (bias + activation per output tile) equals a
/// separate activation pass, bit for bit: both run the same GEMMs and add
/// the bias in the same place, and the GEMMs keep their digits while other
/// tests run (``DeterminismTests/gemmsKeepTheirDigitsWhileAnotherThreadSplits()``).
@Suite struct ConvEpilogueTests {
    @Test(arguments: [Conv2dGeometry(stride: 1, padding: 1), Conv2dGeometry(), Conv2dGeometry(stride: 2, padding: 1, groups: 6)])
    func fusedActivationEqualsSeparatePass(geometry: Conv2dGeometry) {
        let x = Check.random([2, 6, 40, 37], seed: 60)
        let w = Check.random([6, 6 / geometry.groups, geometry.padTop == 0 ? 1 : 3, geometry.padTop == 0 ? 1 : 3], seed: 61)
        let b = Check.random([6], seed: 62)
        let plain = Tensor.conv2d(x, weight: w, bias: b, geometry: geometry)
        #expect(Tensor.conv2d(x, weight: w, bias: b, geometry: geometry, activation: .relu) == plain.relu())
        #expect(Tensor.conv2d(x, weight: w, bias: b, geometry: geometry, activation: .relu6) == plain.relu6())
        #expect(Tensor.conv2d(x, weight: w, geometry: geometry, activation: .relu) == Tensor.conv2d(x, weight: w, geometry: geometry).relu())
        // A fused result that forgot the bias is another tensor.
        #expect(Tensor.conv2d(x, weight: w, geometry: geometry, activation: .relu) != plain.relu())
    }
}

/// The stop flag and the tallies of ``DeterminismTests/gemmsKeepTheirDigitsWhileAnotherThreadSplits()``'s
/// splitting thread.
private final class SplitLoop: @unchecked Sendable {
    private let condition = NSCondition()
    private var stopRequested = false, done = false
    private(set) var splits = 0, wrongSplits = 0

    var stopped: Bool { condition.lock(); defer { condition.unlock() }; return stopRequested }

    func record(_ right: Bool) {
        condition.lock(); defer { condition.unlock() }
        splits += 1
        if !right { wrongSplits += 1 }
    }

    func finish() { condition.lock(); done = true; condition.broadcast(); condition.unlock() }

    /// Asks the loop to stop and waits until it has.
    func stop() {
        condition.lock(); defer { condition.unlock() }
        stopRequested = true
        while !done { condition.wait() }
    }
}
