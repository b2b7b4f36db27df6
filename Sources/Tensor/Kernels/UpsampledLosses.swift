#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The PSAD losses on logits that live on a coarse grid (the segmentation
/// head's stride-4 output) and are upsampled bilinearly (align_corners) to
/// the image size first — fused, so the full-size logits, probabilities and
/// their gradients are never stored: each output row is interpolated,
/// normalised and reduced in a scratch row, and its gradient is scattered
/// straight back to the coarse grid (the adjoint of the interpolation).
///
/// Equal to `resizeBilinear` followed by the separate losses (tested
/// against that composition); about twice as fast on segment-train's
/// batches, which spent most of their time moving full-size tensors.
extension SegmentationLoss {
    /// ceWeight * L_ce(up(z), labels) + diceWeight * L_dice(softmax(up(z)), onehot(labels)),
    /// and its gradient with respect to the coarse logits z.
    public static func supervisedUpsampled(logits z: Tensor, labels: [Int32], height: Int, width: Int,
                                           ceWeight: Float, diceWeight: Float, eps: Float = 1e-4) -> (value: Float, gradient: Tensor) {
        let rows = UpsampledRows(z, height: height, width: width)
        let (n, c) = (rows.n, rows.c)
        precondition(labels.count == n * height * width, "supervised loss: \(labels.count) labels for \(n)x\(height)x\(width)")
        for label in labels { precondition(label >= 0 && Int(label) < c, "label \(label) outside 0..<\(c)") }
        // Pass 1: cross-entropy and the Dice sums (intersection, prediction and label mass per image and class).
        let stats = rows.reduce(accumulators: 1 + 3 * n * c) { b, i, p, logits, acc in
            let row = labels.withUnsafeBufferPointer { $0.baseAddress! + (b * height + i) * width }
            for j in 0..<width {
                let y = Int(row[j])
                // log p_y from p itself: exact unless p_y underflows (a loss above 87 for that pixel).
                let py: Float = Swift.max(p[y * width + j], Float.leastNormalMagnitude)
                acc[0] -= Double(logf(py))
                acc[1 + (b * c + y) * 3] += Double(p[y * width + j])
                acc[1 + (b * c + y) * 3 + 2] += 1
            }
            for k in 0..<c {
                var s: Float = 0
                for j in 0..<width { s += p[k * width + j] }
                acc[1 + (b * c + k) * 3 + 1] += Double(s)
            }
        }
        let pixels = Double(n * height * width), norm = Float(n * c)
        var diceRatio = 0.0
        var a = [Float](repeating: 0, count: n * c), bias = a
        for bc in 0..<(n * c) {
            let inter = stats[1 + bc * 3], mass = stats[1 + bc * 3 + 1] + stats[1 + bc * 3 + 2]
            let denom = mass + Double(eps)
            diceRatio += 2 * inter / denom
            // dL_dice/dp = -(2 Y / denom - 2 I / denom^2) / (N C)
            let slope: Double = -2 / denom, offset: Double = 2 * inter / (denom * denom)
            a[bc] = Float(slope) / norm * diceWeight
            bias[bc] = Float(offset) / norm * diceWeight
        }
        let meanCE = Float(stats[0] / pixels), dice = Float(1 - diceRatio / Double(n * c))
        let value: Float = ceWeight * meanCE + diceWeight * dice
        // Pass 2: dL/dz_full = ceWeight (p - Y) / pixels + p (g - sum_k p_k g_k), g = dL_dice/dp; scattered to the coarse grid.
        let ce = ceWeight / Float(pixels)
        let gradient = rows.scatter { b, i, p, g in
            let row = labels.withUnsafeBufferPointer { $0.baseAddress! + (b * height + i) * width }
            for j in 0..<width {
                let y = Int(row[j])
                var dot: Float = 0
                for k in 0..<c { dot += p[k * width + j] * (bias[b * c + k] + (k == y ? a[b * c + k] : 0)) }
                for k in 0..<c {
                    let pk = p[k * width + j], hot: Float = k == y ? 1 : 0
                    g[k * width + j] = ce * (pk - hot) + pk * (bias[b * c + k] + hot * a[b * c + k] - dot)
                }
            }
        }
        return (value, gradient)
    }

    /// entropyWeight * L_H(softmax(up(z))) + histogramWeight * L_hist(softmax(up(z)), fractions)
    /// (the histogram term only when `fractions` is given), and its gradient
    /// with respect to the coarse logits z.
    public static func unsupervisedUpsampled(logits z: Tensor, height: Int, width: Int, entropyWeight: Float,
                                             fractions: Tensor?, histogramClasses: [Int], histogramWeight: Float,
                                             eps: Float = 1e-5) -> (value: Float, gradient: Tensor) {
        let rows = UpsampledRows(z, height: height, width: width)
        let (n, c) = (rows.n, rows.c)
        if let fractions { precondition(fractions.shape == [n, c], "histogram matching: fractions \(fractions.shape), expected [\(n), \(c)]") }
        for k in histogramClasses { precondition(k >= 0 && k < c, "histogram class \(k) outside 0..<\(c)") }
        // Pass 1: the entropy sum and the mean probability of each image and class.
        let stats = rows.reduce(accumulators: 1 + n * c) { b, _, p, _, acc in
            var h = VectorMath.Lanes()
            for k in 0..<c {
                let base = p + k * width
                var j = 0, mass: Float = 0
                while j + 16 <= width {
                    let q = VectorMath.load(base + j)
                    h += q * VectorMath.log(q + VectorMath.Lanes(repeating: eps))
                    mass += q.sum()
                    j += 16
                }
                while j < width {
                    h[0] += base[j] * logf(base[j] + eps)
                    mass += base[j]
                    j += 1
                }
                acc[1 + b * c + k] += Double(mass)
            }
            acc[0] -= Double(h.sum())
        }
        let plane = Float(height * width), count = Float(n * c) * plane
        var value = entropyWeight * Float(stats[0] / Double(count))
        // dL_hist/dq[b, k] = -weight * sign(a - m) / plane for the listed classes.
        var histogram = [Float](repeating: 0, count: n * c)
        if let fractions {
            for b in 0..<n {
                for k in histogramClasses {
                    let diff = Double(fractions.storage[b * c + k]) - stats[1 + b * c + k] / Double(plane)
                    value += histogramWeight * Float(abs(diff))
                    histogram[b * c + k] = -histogramWeight * Float(diff > 0 ? 1 : (diff < 0 ? -1 : 0)) / plane
                }
            }
        }
        let h = entropyWeight / count
        let gradient = rows.scatter { b, _, p, g in
            // g = dL/dq first, then through the softmax: q (g - sum_k q_k g_k).
            var dot = [Float](repeating: 0, count: width)
            for k in 0..<c {
                let q = p + k * width, out = g + k * width, extra = histogram[b * c + k]
                var j = 0
                while j + 16 <= width {
                    let v = VectorMath.load(q + j)
                    let d = -h * (VectorMath.log(v + VectorMath.Lanes(repeating: eps)) + v / (v + VectorMath.Lanes(repeating: eps))) + extra
                    VectorMath.store(d, out + j)
                    j += 16
                }
                while j < width {
                    out[j] = -h * (logf(q[j] + eps) + q[j] / (q[j] + eps)) + extra
                    j += 1
                }
                for j in 0..<width { dot[j] += q[j] * out[j] }
            }
            for k in 0..<c {
                for j in 0..<width { g[k * width + j] = p[k * width + j] * (g[k * width + j] - dot[j]) }
            }
        }
        return (value, gradient)
    }
}

/// Row-by-row access to softmax(resizeBilinear(z, align_corners)) for the
/// fused losses: each row is interpolated and normalised in scratch space,
/// and row gradients are scattered back to the coarse grid. Rows are split
/// over the threads in fixed contiguous ranges; per-range results are
/// combined in range order, so results depend only on the thread count.
struct UpsampledRows {
    let z: Tensor
    let n: Int, c: Int, h: Int, w: Int, height: Int, width: Int
    let ty: LinearTaps, tx: LinearTaps

    init(_ z: Tensor, height: Int, width: Int) {
        self.z = z
        (n, c, h, w) = z.nchw
        self.height = height
        self.width = width
        ty = LinearTaps(input: h, output: height, alignCorners: true)
        tx = LinearTaps(input: w, output: width, alignCorners: true)
    }

    var ranges: [Range<Int>] {
        let total = n * height, parts = max(1, min(Compute.threads, total))
        return (0..<parts).map { (total * $0 / parts)..<(total * ($0 + 1) / parts) }
    }

    /// Interpolates row `i` of image `b` into `logits` ([c, width]) and writes its softmax into `p`.
    func row(_ b: Int, _ i: Int, logits: UnsafeMutablePointer<Float>, p: UnsafeMutablePointer<Float>, zp: UnsafePointer<Float>) {
        let (a0, a1) = (ty.w0[i], ty.w1[i])
        for k in 0..<c {
            let plane = zp + (b * c + k) * h * w
            let r0 = plane + ty.i0[i] * w, r1 = plane + ty.i1[i] * w
            let out = logits + k * width
            for j in 0..<width {
                let top = tx.w0[j] * r0[tx.i0[j]] + tx.w1[j] * r0[tx.i1[j]]
                let bottom = tx.w0[j] * r1[tx.i0[j]] + tx.w1[j] * r1[tx.i1[j]]
                out[j] = a0 * top + a1 * bottom
            }
        }
        var j = 0
        while j + 16 <= width {
            var top = VectorMath.load(logits + j)
            for k in 1..<max(c, 1) { top = VectorMath.max(top, VectorMath.load(logits + k * width + j)) }
            var total = VectorMath.Lanes()
            for k in 0..<c {
                let e = VectorMath.exp(VectorMath.load(logits + k * width + j) - top)
                total += e
                VectorMath.store(e, p + k * width + j)
            }
            let inv = 1 / total
            for k in 0..<c { VectorMath.store(VectorMath.load(p + k * width + j) * inv, p + k * width + j) }
            j += 16
        }
        while j < width {
            var top = -Float.infinity
            for k in 0..<c { top = Swift.max(top, logits[k * width + j]) }
            var total: Float = 0
            for k in 0..<c { let e = expf(logits[k * width + j] - top); p[k * width + j] = e; total += e }
            for k in 0..<c { p[k * width + j] /= total }
            j += 1
        }
    }

    /// Sums `body`'s accumulators over every row: body(image, row, p, logits, accumulators).
    func reduce(accumulators count: Int,
                _ body: (Int, Int, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, inout [Double]) -> Void) -> [Double] {
        let parts = z.withUnsafeBufferPointer { zb in
            let zp = SendablePointer(zb.baseAddress!)
            let ranges = self.ranges
            return Compute.parallelMap(ranges.count) { part -> [Double] in
                var acc = [Double](repeating: 0, count: count)
                let logits = UnsafeMutablePointer<Float>.allocate(capacity: c * width), p = UnsafeMutablePointer<Float>.allocate(capacity: c * width)
                defer { logits.deallocate(); p.deallocate() }
                for r in ranges[part] {
                    row(r / height, r % height, logits: logits, p: p, zp: zp.p)
                    body(r / height, r % height, p, logits, &acc)
                }
                return acc
            }
        }
        var total = [Double](repeating: 0, count: count)
        for part in parts { for i in 0..<count { total[i] += part[i] } }
        return total
    }

    /// The gradient with respect to z: `body(image, row, p, g)` fills g
    /// ([c, width]) with dL/d(upsampled logits) of the row, which is
    /// scattered back through the interpolation.
    func scatter(_ body: (Int, Int, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) -> Void) -> Tensor {
        let parts = z.withUnsafeBufferPointer { zb in
            let zp = SendablePointer(zb.baseAddress!)
            let ranges = self.ranges
            return Compute.parallelMap(ranges.count) { part -> [Float] in
                var dz = [Float](repeating: 0, count: n * c * h * w)
                let logits = UnsafeMutablePointer<Float>.allocate(capacity: c * width), p = UnsafeMutablePointer<Float>.allocate(capacity: c * width)
                let g = UnsafeMutablePointer<Float>.allocate(capacity: c * width)
                defer { logits.deallocate(); p.deallocate(); g.deallocate() }
                dz.withUnsafeMutableBufferPointer { out in
                    for r in ranges[part] {
                        let (b, i) = (r / height, r % height)
                        row(b, i, logits: logits, p: p, zp: zp.p)
                        body(b, i, p, g)
                        let (a0, a1) = (ty.w0[i], ty.w1[i])
                        for k in 0..<c {
                            let plane = out.baseAddress! + (b * c + k) * h * w
                            let r0 = plane + ty.i0[i] * w, r1 = plane + ty.i1[i] * w
                            let gk = g + k * width
                            for j in 0..<width {
                                let v = gk[j], v0 = tx.w0[j] * v, v1 = tx.w1[j] * v
                                r0[tx.i0[j]] += a0 * v0
                                r0[tx.i1[j]] += a0 * v1
                                r1[tx.i0[j]] += a1 * v0
                                r1[tx.i1[j]] += a1 * v1
                            }
                        }
                    }
                }
                return dz
            }
        }
        var total = Tensor(zeros: z.shape)
        for part in parts { for i in 0..<total.count { total.storage[i] += part[i] } }
        return total
    }
}
