/// Source coordinates of bilinear interpolation along one axis (PyTorch's
/// `upsample_bilinear2d` without an explicit scale factor).
///
/// align_corners: src = dst * (in - 1) / (out - 1);
/// otherwise:     src = max((dst + 0.5) * in / out - 0.5, 0).
/// Each output index gets (i0, i1, weight of i0, weight of i1).
struct LinearTaps {
    let i0: [Int], i1: [Int], w0: [Float], w1: [Float]

    init(input: Int, output: Int, alignCorners: Bool) {
        var i0 = [Int](repeating: 0, count: output), i1 = i0
        var w0 = [Float](repeating: 0, count: output), w1 = w0
        let scale: Float = alignCorners
            ? (output > 1 ? Float(input - 1) / Float(output - 1) : 0)
            : Float(input) / Float(output)
        for d in 0..<output {
            let src = alignCorners ? scale * Float(d) : max(scale * (Float(d) + 0.5) - 0.5, 0)
            let lo = min(Int(src), input - 1)
            let frac = src - Float(lo)
            i0[d] = lo
            i1[d] = lo + (lo < input - 1 ? 1 : 0)
            w1[d] = frac
            w0[d] = 1 - frac
        }
        self.i0 = i0; self.i1 = i1; self.w0 = w0; self.w1 = w1
    }
}

extension Tensor {
    /// Bilinear resize of every plane to `height x width` (no antialiasing;
    /// PyTorch's `F.interpolate(mode="bilinear")`).
    public static func resizeBilinear(_ x: Tensor, height oh: Int, width ow: Int, alignCorners: Bool) -> Tensor {
        var out = Tensor(shape: [x.shape[0], x.shape[1], oh, ow]) { _ in }
        resizeBilinear(x, into: &out, adding: false, alignCorners: alignCorners)
        return out
    }

    /// `out += resizeBilinear(x)` to `out`'s size, without the resized
    /// tensor (the same bits as resizing, then adding).
    public static func resizeBilinear(_ x: Tensor, addingInto out: inout Tensor, alignCorners: Bool) {
        precondition(out.rank == 4 && Array(out.shape.prefix(2)) == Array(x.shape.prefix(2)),
                     "resize into \(out.shape) from \(x.shape)")
        resizeBilinear(x, into: &out, adding: true, alignCorners: alignCorners)
    }

    private static func resizeBilinear(_ x: Tensor, into out: inout Tensor, adding: Bool, alignCorners: Bool) {
        let (_, _, h, w) = x.nchw, (oh, ow) = (out.shape[2], out.shape[3])
        let ty = LinearTaps(input: h, output: oh, alignCorners: alignCorners)
        let tx = LinearTaps(input: w, output: ow, alignCorners: alignCorners)
        // Each source row is interpolated along its length once (two held
        // at a time), then each output row blends its two (every output written).
        poolPlanes(x, &out) { src, dst in
            var rows = CoarseRowPair(size: ow)
            defer { rows.deallocate() }
            for i in 0..<oh {
                let (r0, r1) = rows.pair(ty.i0[i], ty.i1[i]) { row, out in tx.interpolate(src + row * w, into: out) }
                blendRows(ty.w0[i], UnsafePointer(r0), ty.w1[i], UnsafePointer(r1), into: dst + i * ow, count: ow, adding: adding)
            }
        }
    }

    /// The adjoint of ``resizeBilinear(_:height:width:alignCorners:)``:
    /// each output gradient goes back to its four source pixels. Output
    /// rows are added, scaled, into the two source rows they came from, held
    /// at output width (sixteen lanes at a time), and each source row is
    /// spread along its length once it is complete (rows come in order, so
    /// two held rows suffice: ``CoarseRowPair``).
    public static func resizeBilinearBackward(_ dy: Tensor, inputHeight h: Int, inputWidth w: Int,
                                              alignCorners: Bool) -> Tensor {
        let (n, c, oh, ow) = dy.nchw
        let ty = LinearTaps(input: h, output: oh, alignCorners: alignCorners)
        let tx = LinearTaps(input: w, output: ow, alignCorners: alignCorners)
        var dx = Tensor(zeros: [n, c, h, w])
        dy.withUnsafeBufferPointer { gs in
            dx.withUnsafeMutableBufferPointer { xs in
                let gp = SendablePointer(gs.baseAddress!), xp = SendableMutablePointer(xs.baseAddress!)
                Compute.parallelFor(n * c) { planes in
                    var sums = CoarseRowPair(size: ow, zeroed: true)
                    defer { sums.deallocate() }
                    for pl in planes {
                        let g = gp.p + pl * oh * ow, d = xp.p + pl * h * w
                        let spread = { (row: Int, sum: UnsafeMutablePointer<Float>) in
                            tx.scatter(sum, onto: d + row * w)
                            sum.update(repeating: 0, count: ow)
                        }
                        for i in 0..<oh {
                            let (s0, s1) = sums.pair(ty.i0[i], ty.i1[i], evicting: spread)
                            addScaled(ty.w0[i], g + i * ow, into: s0, count: ow)
                            addScaled(ty.w1[i], g + i * ow, into: s1, count: ow)
                        }
                        sums.flush(spread)
                    }
                }
            }
        }
        return dx
    }

    /// Nearest-neighbour resize (PyTorch's `mode="nearest"`):
    /// src = min(floor(dst * in / out), in - 1).
    public static func resizeNearest(_ x: Tensor, height oh: Int, width ow: Int) -> Tensor {
        let (n, c, h, w) = x.nchw
        let ys = nearestIndices(input: h, output: oh), xs = nearestIndices(input: w, output: ow)
        var out = Tensor(zeros: [n, c, oh, ow])
        poolPlanes(x, &out) { src, dst in
            for i in 0..<oh {
                let row = src + ys[i] * w
                for j in 0..<ow { dst[i * ow + j] = row[xs[j]] }
            }
        }
        return out
    }

    static func nearestIndices(input: Int, output: Int) -> [Int] {
        let scale = Float(input) / Float(output)
        return (0..<output).map { min(Int((Float($0) * scale).rounded(.down)), input - 1) }
    }
}
