import Foundation
import Testing
import TestSupport
@testable import Tensor

/// The SIMD paths against double-precision libm, on sizes that exercise
/// both the 16-pixel blocks and the scalar tail.
@Suite struct VectorMathTests {
    /// Squared distances against a double-precision sum, across the 16-lane blocks and their remainder.
    @Test(arguments: [0, 1, 15, 16, 17, 128, 131])
    func squaredDistanceMatchesADoubleSum(_ count: Int) {
        var rng = SeededGenerator(seed: UInt64(count))
        let a = (0..<count).map { _ in Float(rng.nextUniform() * 4 - 2) }, b = (0..<count).map { _ in Float(rng.nextUniform() * 4 - 2) }
        let reference = zip(a, b).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
        let got = a.withUnsafeBufferPointer { x in b.withUnsafeBufferPointer { y in
            VectorMath.squaredDistance(x.baseAddress ?? UnsafePointer(bitPattern: 16)!, y.baseAddress ?? UnsafePointer(bitPattern: 16)!, count: count)
        } }
        #expect(abs(Double(got) - reference) <= 1e-6 * max(1, reference), "\(got) vs \(reference)")
    }

    @Test func expIsWithinTwoUlpOfDoublePrecision() {
        var worst = 0.0
        for x in stride(from: Float(-87), through: 88, by: 0.0137) {
            let lanes = VectorMath.Lanes((0..<16).map { x + Float($0) * 1e-3 })
            let got = VectorMath.exp(lanes)
            for j in 0..<16 {
                let want = Foundation.exp(Double(lanes[j]))
                worst = max(worst, abs(Double(got[j]) - want) / want)
            }
        }
        #expect(worst < 2.4e-7, "largest relative error \(worst)")
        // Far below the range: tiny and finite, never negative, NaN or garbage from the exponent bits.
        let low = VectorMath.exp(VectorMath.Lanes(repeating: -1000))
        #expect(low[0] >= 0 && low[0] < 1e-37)
        #expect(VectorMath.exp(VectorMath.Lanes(repeating: 0))[5] == 1)
    }

    /// Softmax, log-softmax and the softmax backward over a 37-pixel plane
    /// (two blocks of 16 and a tail of 5), with logits up to +-80.
    @Test func softmaxBlocksAndTailMatchDoublePrecision() {
        let (n, c, h, w) = (2, 5, 1, 37)
        var rng = SeededGenerator(seed: 4)
        let z = Tensor(shape: [n, c, h, w], storage: (0..<(n * c * h * w)).map { _ in (2 * rng.nextUniform() - 1) * 80 })
        let g = Tensor(shape: z.shape, storage: (0..<z.count).map { _ in 2 * rng.nextUniform() - 1 })
        let plane = h * w
        var p = [Double](repeating: 0, count: z.count), logp = p, dz = p
        for b in 0..<n {
            for i in 0..<plane {
                let idx = (0..<c).map { (b * c + $0) * plane + i }
                let top = idx.map { Double(z.storage[$0]) }.max()!
                let total = idx.map { Foundation.exp(Double(z.storage[$0]) - top) }.reduce(0, +)
                for k in idx {
                    p[k] = Foundation.exp(Double(z.storage[k]) - top) / total
                    logp[k] = Double(z.storage[k]) - top - Foundation.log(total)
                }
                let dot = idx.map { p[$0] * Double(g.storage[$0]) }.reduce(0, +)
                for k in idx { dz[k] = p[k] * (Double(g.storage[k]) - dot) }
            }
        }
        let softmax = z.softmaxChannels()
        #expect(Check.close(softmax, Tensor(shape: z.shape, storage: p.map(Float.init)), rtol: 1e-5, atol: 1e-7) == nil)
        #expect(Check.close(z.logSoftmaxChannels(), Tensor(shape: z.shape, storage: logp.map(Float.init)), rtol: 1e-5, atol: 1e-5) == nil)
        #expect(Check.close(Tensor.softmaxChannelsBackward(g, output: softmax), Tensor(shape: z.shape, storage: dz.map(Float.init)),
                            rtol: 1e-4, atol: 1e-6) == nil)
    }
}

extension VectorMathTests {
    @Test func logIsWithinTwoUlpOfDoublePrecision() {
        var worst = 0.0
        var x: Float = 1e-30
        while x < 1e30 {
            let lanes = VectorMath.Lanes((0..<16).map { x * (1 + Float($0) * 0.013) })
            let got = VectorMath.log(lanes)
            for j in 0..<16 {
                let want = Foundation.log(Double(lanes[j]))
                worst = max(worst, abs(Double(got[j]) - want) / max(abs(want), 1e-3))
            }
            x *= 1.37
        }
        #expect(worst < 3e-7, "largest relative error \(worst)")
        #expect(VectorMath.log(VectorMath.Lanes(repeating: 1))[0] == 0)
        #expect(abs(VectorMath.log(VectorMath.Lanes(repeating: 1e-5))[0] - Float(Foundation.log(1e-5))) < 1e-5)
    }
}
