/// Window geometry of a 2-D pooling (PyTorch's `MaxPool2d` / `AvgPool2d`,
/// `ceil_mode=False`).
public struct Pool2dGeometry: Equatable, Sendable {
    public var kernel: Int, stride: Int, padding: Int

    public init(kernel: Int, stride: Int? = nil, padding: Int = 0) {
        precondition(kernel > 0 && padding >= 0 && padding * 2 <= kernel,
                     "pool padding \(padding) must be at most half the kernel \(kernel)")
        self.kernel = kernel
        self.stride = stride ?? kernel
        self.padding = padding
    }

    func outputSize(_ size: Int) -> Int { (size + 2 * padding - kernel) / stride + 1 }
}

extension Tensor {
    /// Max pooling; padded positions never win (they are -infinity).
    public static func maxPool2d(_ x: Tensor, _ g: Pool2dGeometry) -> Tensor {
        let (_, _, h, w) = x.nchw
        if g == Pool2dGeometry(kernel: 3, stride: 2, padding: 1) && h >= 2 && w >= 2 { return maxPool3x3Stride2(x) }
        return maxPool2dAnyWindow(x, g)
    }

    /// Any window, one output at a time with clipped bounds.
    static func maxPool2dAnyWindow(_ x: Tensor, _ g: Pool2dGeometry) -> Tensor {
        let (n, c, h, w) = x.nchw
        let oh = g.outputSize(h), ow = g.outputSize(w)
        var out = Tensor(zeros: [n, c, oh, ow])
        poolPlanes(x, &out) { src, dst in
            for i in 0..<oh {
                let y0 = i * g.stride - g.padding
                for j in 0..<ow {
                    let x0 = j * g.stride - g.padding
                    var best = -Float.infinity
                    for y in max(y0, 0)..<min(y0 + g.kernel, h) {
                        for xx in max(x0, 0)..<min(x0 + g.kernel, w) { best = max(best, src[y * w + xx]) }
                    }
                    dst[i * ow + j] = best
                }
            }
        }
        return out
    }

    /// ResNet's stem pool (3x3, stride 2, padding 1) as two separable
    /// passes: each row's maxima of columns 2j-1, 2j, 2j+1, then the maxima
    /// of rows 2i-1, 2i, 2i+1 of those, 8 columns at a time. Six
    /// comparisons an output instead of nine, no bounds inside the loops.
    static func maxPool3x3Stride2(_ x: Tensor) -> Tensor {
        let (n, c, h, w) = x.nchw
        let oh = (h - 1) / 2 + 1, ow = (w - 1) / 2 + 1
        var out = Tensor(zeros: [n, c, oh, ow])
        poolPlanes(x, &out) { src, dst in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: h * ow) { rows in
                let r = rows.baseAddress!
                // Horizontal: column 2j-1 exists for j >= 1, column 2j+1 for 2j+1 < w.
                let full = (w - 2) / 2   // j in 1...full have all three columns
                for y in 0..<h {
                    let a = src + y * w, o = r + y * ow
                    o[0] = max(a[0], a[1])
                    if full >= 1 { for j in 1...full { o[j] = max(max(a[2 * j - 1], a[2 * j]), a[2 * j + 1]) } }
                    for j in (full + 1)..<ow where j >= 1 {
                        var m = max(a[2 * j - 1], a[2 * j])
                        if 2 * j + 1 < w { m = max(m, a[2 * j + 1]) }
                        o[j] = m
                    }
                }
                // Vertical, over the row maxima; a missing neighbour row is replaced by the middle one
                // (max is idempotent).
                for i in 0..<oh {
                    let y = 2 * i
                    let up = UnsafePointer(r + max(y - 1, 0) * ow), mid = UnsafePointer(r + y * ow)
                    let down = UnsafePointer(r + min(y + 1, h - 1) * ow), o = dst + i * ow
                    var j = 0
                    while j + 8 <= ow {
                        func load(_ p: UnsafePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p + j).loadUnaligned(as: SIMD8<Float>.self) }
                        UnsafeMutableRawPointer(o + j).storeBytes(of: pointwiseMax(pointwiseMax(load(up), load(mid)), load(down)), as: SIMD8<Float>.self)
                        j += 8
                    }
                    while j < ow {
                        o[j] = max(max(up[j], mid[j]), down[j])
                        j += 1
                    }
                }
            }
        }
        return out
    }

    /// Gradient of ``maxPool2d(_:_:)``: each output's gradient goes to the
    /// first maximum of its window in row-major order (PyTorch's choice on ties).
    public static func maxPool2dBackward(_ dy: Tensor, input x: Tensor, _ g: Pool2dGeometry) -> Tensor {
        let (n, c, h, w) = x.nchw
        let oh = g.outputSize(h), ow = g.outputSize(w)
        precondition(dy.shape == [n, c, oh, ow], "max pool gradient \(dy.shape) for input \(x.shape)")
        var dx = Tensor(zeros: x.shape)
        for plane in 0..<(n * c) {
            let src = plane * h * w, out = plane * oh * ow
            for i in 0..<oh {
                let y0 = i * g.stride - g.padding
                for j in 0..<ow {
                    let x0 = j * g.stride - g.padding
                    var best = -Float.infinity, at = -1
                    for y in max(y0, 0)..<min(y0 + g.kernel, h) {
                        for xx in max(x0, 0)..<min(x0 + g.kernel, w) where x.storage[src + y * w + xx] > best || at < 0 {
                            best = x.storage[src + y * w + xx]; at = y * w + xx
                        }
                    }
                    dx.storage[src + at] += dy.storage[out + i * ow + j]
                }
            }
        }
        return dx
    }

    /// Average pooling. With `countIncludePad` the divisor is the window
    /// clipped to the padded image (PyTorch's default, used by PatchCore and
    /// PSAD); without it, the number of real pixels in the window.
    public static func avgPool2d(_ x: Tensor, _ g: Pool2dGeometry, countIncludePad: Bool = true) -> Tensor {
        let (n, c, h, w) = x.nchw
        let oh = g.outputSize(h), ow = g.outputSize(w)
        var out = Tensor(zeros: [n, c, oh, ow])
        poolPlanes(x, &out) { src, dst in
            for i in 0..<oh {
                let y0 = i * g.stride - g.padding
                let y1 = min(y0 + g.kernel, h + g.padding)
                let ys = max(y0, 0), ye = min(y1, h)
                for j in 0..<ow {
                    let x0 = j * g.stride - g.padding
                    let x1 = min(x0 + g.kernel, w + g.padding)
                    let xs = max(x0, 0), xe = min(x1, w)
                    var total: Float = 0
                    for y in ys..<ye { for xx in xs..<xe { total += src[y * w + xx] } }
                    let divisor = countIncludePad ? (y1 - y0) * (x1 - x0) : (ye - ys) * (xe - xs)
                    dst[i * ow + j] = total / Float(divisor)
                }
            }
        }
        return out
    }

    /// Adaptive average pooling to `height x width`: output cell i averages
    /// input rows floor(i * H / h) ..< ceil((i + 1) * H / h), and likewise columns.
    public static func adaptiveAvgPool2d(_ x: Tensor, height oh: Int, width ow: Int) -> Tensor {
        let (n, c, h, w) = x.nchw
        var out = Tensor(zeros: [n, c, oh, ow])
        poolPlanes(x, &out) { src, dst in
            for i in 0..<oh {
                let ys = i * h / oh, ye = ((i + 1) * h + oh - 1) / oh
                for j in 0..<ow {
                    let xs = j * w / ow, xe = ((j + 1) * w + ow - 1) / ow
                    var total: Float = 0
                    for y in ys..<ye { for xx in xs..<xe { total += src[y * w + xx] } }
                    dst[i * ow + j] = total / Float((ye - ys) * (xe - xs))
                }
            }
        }
        return out
    }

    /// Runs `body(inputPlane, outputPlane)` for every (n, c) plane in parallel.
    static func poolPlanes(_ x: Tensor, _ out: inout Tensor,
                           _ body: (UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void) {
        let (n, c, h, w) = x.nchw
        let inPlane = h * w, outPlane = out.shape[2] * out.shape[3]
        x.withUnsafeBufferPointer { xs in
            out.withUnsafeMutableBufferPointer { ys in
                let xp = SendablePointer(xs.baseAddress!), yp = SendableMutablePointer(ys.baseAddress!)
                Compute.parallelFor(n * c) { planes in
                    for pl in planes { body(xp.p + pl * inPlane, yp.p + pl * outPlane) }
                }
            }
        }
    }
}
