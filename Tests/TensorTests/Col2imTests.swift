import Testing
@testable import Tensor

/// ``col2im`` (the adjoint of im2col in a convolution's input gradient)
/// against an element-by-element loop that checks every output column's
/// source and adds in the same order: equal bit for bit, including rows and
/// columns wholly in the padding, horizontal strides and dilation.
struct Col2imTests {
    static func direct(_ s: ConvShape, _ col: [Float]) -> [Float] {
        let g = s.geometry
        var x = [Float](repeating: 0, count: s.cinPerGroup * s.h * s.w)
        for c in 0..<s.cinPerGroup {
            for u in 0..<s.kh {
                for v in 0..<s.kw {
                    for i in 0..<s.oh {
                        for j in 0..<s.ow {
                            let y = i * g.strideY - g.padTop + u * g.dilationY, q = j * g.strideX - g.padLeft + v * g.dilationX
                            guard (0..<s.h).contains(y), (0..<s.w).contains(q) else { continue }
                            x[(c * s.h + y) * s.w + q] += col[((c * s.kh + u) * s.kw + v) * s.pixels + i * s.ow + j]
                        }
                    }
                }
            }
        }
        return x
    }

    @Test(arguments: [
        Conv2dGeometry(stride: 1, padding: 1),
        Conv2dGeometry(stride: (2, 2), padding: (0, 0, 1, 1)),
        Conv2dGeometry(stride: (1, 2), padding: (1, 2, 1, 0)),
        Conv2dGeometry(stride: (2, 3), padding: (4, 5, 4, 5)),
        Conv2dGeometry(stride: 1, padding: 2, dilation: 2),
        Conv2dGeometry(stride: (2, 2), padding: (3, 3, 3, 3), dilation: (2, 3)),
    ])
    func equalsTheElementByElementAdjoint(geometry: Conv2dGeometry) {
        let s = ConvShape(input: [1, 3, 7, 11], weight: [2, 3, 3, 3], geometry: geometry)
        var rng = SeededGenerator(seed: 9)
        let col = (0..<(s.patch * s.pixels)).map { _ in rng.nextUniform() * 2 - 1 }
        var x = [Float](repeating: 0, count: 3 * 7 * 11)
        col.withUnsafeBufferPointer { c in x.withUnsafeMutableBufferPointer { col2im(s, c.baseAddress!, $0.baseAddress!) } }
        #expect(x == Self.direct(s, col), "\(geometry)")
    }
}
