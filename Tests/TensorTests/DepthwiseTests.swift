import Testing
@testable import Tensor

/// The depthwise kernel's paths (3x3 unit stride with the kernel in
/// registers, any kernel with unit stride, strided rows read through column
/// phases, the scalar tail) against a tap-by-tap loop that sums each output's
/// taps in the same order: equal bit for bit, so the paths cannot change a
/// stage's digits.
struct DepthwiseTests {
    static func direct(_ x: Tensor, _ w: Tensor, _ g: Conv2dGeometry) -> Tensor {
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (kh, kw) = (w.shape[2], w.shape[3])
        let (oh, ow) = g.outputSize(height: h, width: wd, kernelHeight: kh, kernelWidth: kw)
        var out = [Float](repeating: 0, count: n * c * oh * ow)
        for plane in 0..<(n * c) {
            for i in 0..<oh {
                for j in 0..<ow {
                    var acc: Float = 0
                    for u in 0..<kh {
                        for v in 0..<kw {
                            let r = i * g.strideY + u * g.dilationY - g.padTop, q = j * g.strideX + v * g.dilationX - g.padLeft
                            let value: Float = (0..<h).contains(r) && (0..<wd).contains(q) ? x.storage[(plane * h + r) * wd + q] : 0
                            acc += w.storage[(plane % c) * kh * kw + u * kw + v] * value
                        }
                    }
                    out[(plane * oh + i) * ow + j] = acc
                }
            }
        }
        return Tensor(shape: [n, c, oh, ow], storage: out)
    }

    @Test(arguments: [(3, 1, 1), (3, 2, 1), (5, 1, 2), (5, 2, 2), (3, 3, 1), (5, 2, 1), (3, 1, 0), (3, 2, 0)])
    func everyPathEqualsTheTapByTapLoop(kernel: Int, stride: Int, padding: Int) {
        var rng = SeededGenerator(seed: UInt64(kernel * 100 + stride * 10 + padding))
        // Widths below, at and past eight outputs, odd and even, so each path and the tail run.
        for (h, w) in [(5, 5), (6, 7), (9, 16), (12, 17), (17, 33), (20, 40)] where h + 2 * padding >= kernel && w + 2 * padding >= kernel {
            let x = Tensor(shape: [2, 3, h, w], storage: (0..<(6 * h * w)).map { _ in rng.nextUniform() * 2 - 1 })
            let weight = Tensor(shape: [3, 1, kernel, kernel], storage: (0..<(3 * kernel * kernel)).map { _ in rng.nextUniform() * 2 - 1 })
            let g = Conv2dGeometry(stride: stride, padding: padding, groups: 3)
            let y = Tensor.conv2d(x, weight: weight, geometry: g), expected = Self.direct(x, weight, g)
            #expect(y.shape == expected.shape, "\(h)x\(w)")
            #expect(y.storage == expected.storage, "\(kernel)x\(kernel) stride \(stride) padding \(padding), \(h)x\(w)")
        }
    }

    /// dL/dx and dL/dw by a tap-by-tap loop in the kernel's order (channel,
    /// image, output row, tap, output column); for dL/dw also the exact sum
    /// (in Double) and the sum of its terms' magnitudes, which bound the
    /// rounding of any order of summation.
    static func directBackward(_ x: Tensor, _ w: Tensor, _ dy: Tensor, _ g: Conv2dGeometry)
        -> (dx: [Float], dw: [Float], dwExact: [Double], dwMagnitude: [Double], dwTerms: Int) {
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (kh, kw, oh, ow) = (w.shape[2], w.shape[3], dy.shape[2], dy.shape[3])
        var dx = [Float](repeating: 0, count: x.storage.count), dw = [Float](repeating: 0, count: w.storage.count)
        var exact = [Double](repeating: 0, count: w.storage.count), magnitude = exact
        for ch in 0..<c {
            for b in 0..<n {
                let plane = b * c + ch
                for i in 0..<oh {
                    for u in 0..<kh {
                        let r = i * g.strideY + u * g.dilationY - g.padTop
                        guard (0..<h).contains(r) else { continue }
                        for v in 0..<kw {
                            var acc: Float = 0
                            for j in 0..<ow {
                                let q = j * g.strideX + v * g.dilationX - g.padLeft
                                guard (0..<wd).contains(q) else { continue }
                                let gy = dy.storage[(plane * oh + i) * ow + j], xi = (plane * h + r) * wd + q
                                acc += gy * x.storage[xi]
                                exact[ch * kh * kw + u * kw + v] += Double(gy) * Double(x.storage[xi])
                                magnitude[ch * kh * kw + u * kw + v] += abs(Double(gy) * Double(x.storage[xi]))
                                dx[xi] += w.storage[ch * kh * kw + u * kw + v] * gy
                            }
                            dw[ch * kh * kw + u * kw + v] += acc
                        }
                    }
                }
            }
        }
        return (dx, dw, exact, magnitude, n * oh * ow)
    }

    @Test(arguments: [(3, 1, 1), (3, 2, 1), (5, 1, 2), (5, 2, 2), (3, 1, 0)])
    func theBackwardPassEqualsTheTapByTapLoop(kernel: Int, stride: Int, padding: Int) {
        var rng = SeededGenerator(seed: UInt64(kernel * 1000 + stride * 10 + padding))
        for (h, w) in [(5, 5), (6, 7), (9, 16), (12, 17), (17, 33)] where h + 2 * padding >= kernel && w + 2 * padding >= kernel {
            let x = Tensor(shape: [2, 3, h, w], storage: (0..<(6 * h * w)).map { _ in rng.nextUniform() * 2 - 1 })
            let weight = Tensor(shape: [3, 1, kernel, kernel], storage: (0..<(3 * kernel * kernel)).map { _ in rng.nextUniform() * 2 - 1 })
            let g = Conv2dGeometry(stride: stride, padding: padding, groups: 3)
            let y = Tensor.conv2d(x, weight: weight, geometry: g)
            let dy = Tensor(shape: y.shape, storage: (0..<y.storage.count).map { _ in rng.nextUniform() * 2 - 1 })
            let got = Tensor.conv2dBackward(x, weight: weight, outputGradient: dy, geometry: g), expected = Self.directBackward(x, weight, dy, g)
            #expect(got.input.storage == expected.dx, "dx, \(kernel)x\(kernel) stride \(stride) padding \(padding), \(h)x\(w)")
            // dL/dw sums its n terms in lanes: any order is within n u sum|terms| of the exact sum
            // (u = 2^-24, each product's own rounding included), and no further from the scalar order's.
            let u = Double(Float.ulpOfOne) / 2, bound = Double(expected.dwTerms + 1) * u
            for (i, value) in got.weight.storage.enumerated() {
                #expect(abs(Double(value) - expected.dwExact[i]) <= bound * expected.dwMagnitude[i],
                        "dw[\(i)] \(value) against \(expected.dwExact[i]), \(kernel)x\(kernel) stride \(stride) padding \(padding), \(h)x\(w)")
            }
        }
    }

    @Test func asymmetricPaddingAndDilation() {
        var rng = SeededGenerator(seed: 5)
        let x = Tensor(shape: [1, 2, 11, 19], storage: (0..<(2 * 11 * 19)).map { _ in rng.nextUniform() * 2 - 1 })
        let weight = Tensor(shape: [2, 1, 3, 3], storage: (0..<18).map { _ in rng.nextUniform() * 2 - 1 })
        for g in [Conv2dGeometry(stride: (2, 2), padding: (0, 0, 1, 1), groups: 2),
                  Conv2dGeometry(stride: (1, 2), padding: (1, 2, 1, 0), groups: 2),
                  Conv2dGeometry(stride: (1, 1), padding: (2, 2, 2, 2), dilation: (2, 2), groups: 2),
                  Conv2dGeometry(stride: (2, 2), padding: (2, 2, 2, 2), dilation: (2, 2), groups: 2)] {
            #expect(Tensor.conv2d(x, weight: weight, geometry: g).storage == Self.direct(x, weight, g).storage, "\(g)")
        }
    }
}
