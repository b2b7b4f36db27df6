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
        defer { rows.release() }
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
            // Each class's row sum in pixel order, four classes side by side (independent add chains).
            var k = 0
            while k + 4 <= c {
                let (p0, p1, p2, p3) = (p + k * width, p + (k + 1) * width, p + (k + 2) * width, p + (k + 3) * width)
                var (s0, s1, s2, s3): (Float, Float, Float, Float) = (0, 0, 0, 0)
                for j in 0..<width { s0 += p0[j]; s1 += p1[j]; s2 += p2[j]; s3 += p3[j] }
                acc[1 + (b * c + k) * 3 + 1] += Double(s0)
                acc[1 + (b * c + k + 1) * 3 + 1] += Double(s1)
                acc[1 + (b * c + k + 2) * 3 + 1] += Double(s2)
                acc[1 + (b * c + k + 3) * 3 + 1] += Double(s3)
                k += 4
            }
            while k < c {
                var s: Float = 0
                for j in 0..<width { s += p[k * width + j] }
                acc[1 + (b * c + k) * 3 + 1] += Double(s)
                k += 1
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
            // Sixteen pixels at a time, each lane the scalar expression below (the same
            // rounding). g holds the one-hot labels until a block's gradient replaces them.
            g.update(repeating: 0, count: c * width)
            for j in 0..<width { g[Int(row[j]) * width + j] = 1 }
            var start = 0
            while start + 16 <= width {
                var dot = VectorMath.Lanes()
                for k in 0..<c {
                    let hot = VectorMath.load(g + k * width + start)
                    dot += VectorMath.load(p + k * width + start) * (VectorMath.Lanes(repeating: bias[b * c + k]) + hot * a[b * c + k])
                }
                for k in 0..<c {
                    let pk = VectorMath.load(p + k * width + start), hot = VectorMath.load(g + k * width + start)
                    VectorMath.store(ce * (pk - hot) + pk * (VectorMath.Lanes(repeating: bias[b * c + k]) + hot * a[b * c + k] - dot), g + k * width + start)
                }
                start += 16
            }
            for j in start..<width {
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
        // The logarithms of pass 1 are kept for pass 2 (another n x c x height x width floats).
        let rows = UpsampledRows(z, height: height, width: width, keepingRowPlanes: true)
        defer { rows.release() }
        let (n, c) = (rows.n, rows.c)
        if let fractions { precondition(fractions.shape == [n, c], "histogram matching: fractions \(fractions.shape), expected [\(n), \(c)]") }
        for k in histogramClasses { precondition(k >= 0 && k < c, "histogram class \(k) outside 0..<\(c)") }
        // Pass 1: the entropy sum and the mean probability of each image and class.
        // log(q + eps) replaces the row's logits in its kept plane.
        let stats = rows.reduce(accumulators: 1 + n * c) { b, _, p, logs, acc in
            var h = VectorMath.Lanes()
            for k in 0..<c {
                let base = p + k * width, logBase = logs + k * width
                var j = 0, mass: Float = 0
                while j + 16 <= width {
                    let q = VectorMath.load(base + j), l = VectorMath.log(q + VectorMath.Lanes(repeating: eps))
                    VectorMath.store(l, logBase + j)
                    h += q * l
                    mass += q.sum()
                    j += 16
                }
                while j < width {
                    logBase[j] = logf(base[j] + eps)
                    h[0] += base[j] * logBase[j]
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
        let gradient = rows.scatter { b, i, p, g in
            let logs = rows.keptPlane(b, i)
            // g = dL/dq first, then through the softmax: q (g - sum_k q_k g_k).
            let dot = UnsafeMutablePointer<Float>.allocate(capacity: width)
            defer { dot.deallocate() }
            dot.initialize(repeating: 0, count: width)
            for k in 0..<c {
                let q = p + k * width, l = logs + k * width, out = g + k * width, extra = histogram[b * c + k]
                var j = 0
                while j + 16 <= width {
                    let v = VectorMath.load(q + j)
                    let d = -h * (VectorMath.load(l + j) + v / (v + VectorMath.Lanes(repeating: eps))) + extra
                    VectorMath.store(d, out + j)
                    j += 16
                }
                while j < width {
                    out[j] = -h * (l[j] + q[j] / (q[j] + eps)) + extra
                    j += 1
                }
                addProducts(q, out, into: dot, count: width)
            }
            for k in 0..<c {
                let q = p + k * width, out = g + k * width
                var j = 0
                while j + 16 <= width {
                    VectorMath.store(VectorMath.load(q + j) * (VectorMath.load(out + j) - VectorMath.load(dot + j)), out + j)
                    j += 16
                }
                while j < width { out[j] = q[j] * (out[j] - dot[j]); j += 1 }
            }
        }
        return (value, gradient)
    }
}

/// Row-by-row access to softmax(resizeBilinear(z, align_corners)) for the
/// fused losses: each row is interpolated and normalised, and row gradients
/// are scattered back to the coarse grid. The probabilities the reducing
/// pass computes are kept for the gradient pass (n x c x height x width
/// floats, 34 MB for segment-train's 5 views of 256 x 256 with 26 classes),
/// so each row's interpolation and softmax run once; the full-size logits
/// and gradients are never stored. Rows are split over the threads in fixed
/// contiguous ranges; per-range results are combined in range order, so
/// results depend only on the thread count.
struct UpsampledRows {
    let z: Tensor
    let n: Int, c: Int, h: Int, w: Int, height: Int, width: Int
    let ty: LinearTaps, tx: LinearTaps
    /// Row r's probabilities at `probabilities + r * c * width`, written by ``reduce(accumulators:_:)``.
    let probabilities: UnsafeMutablePointer<Float>
    /// With `keepingRowPlanes`, a second [c, width] plane per row: the reducing
    /// body gets it (after the row's logits were interpolated into it) and
    /// may leave values there for the gradient body (``keptPlane(_:_:)``).
    let kept: UnsafeMutablePointer<Float>?

    init(_ z: Tensor, height: Int, width: Int, keepingRowPlanes: Bool = false) {
        self.z = z
        (n, c, h, w) = z.nchw
        self.height = height
        self.width = width
        ty = LinearTaps(input: h, output: height, alignCorners: true)
        tx = LinearTaps(input: w, output: width, alignCorners: true)
        probabilities = .allocate(capacity: n * height * c * width)
        kept = keepingRowPlanes ? .allocate(capacity: n * height * c * width) : nil
    }

    func release() { probabilities.deallocate(); kept?.deallocate() }

    /// Row `i` of image `b`'s kept plane.
    func keptPlane(_ b: Int, _ i: Int) -> UnsafeMutablePointer<Float> {
        guard let kept else { preconditionFailure("rows not kept") }
        return kept + (b * height + i) * c * width
    }

    var ranges: [Range<Int>] {
        let total = n * height, parts = max(1, min(Compute.threads, total))
        return (0..<parts).map { (total * $0 / parts)..<(total * ($0 + 1) / parts) }
    }

    /// Interpolates row `i` of image `b` into `logits` ([c, width]) and writes its softmax into `p`.
    /// The two coarse rows it blends come interpolated horizontally from `rows`.
    func row(_ b: Int, _ i: Int, logits: UnsafeMutablePointer<Float>, p: UnsafeMutablePointer<Float>, zp: UnsafePointer<Float>,
             rows: inout CoarseRowPair) {
        let (r0, r1) = rows.pair(b * h + ty.i0[i], b * h + ty.i1[i]) { key, out in
            let (b, ci) = key.quotientAndRemainder(dividingBy: h)
            for k in 0..<c { tx.interpolate(zp + ((b * c + k) * h + ci) * w, into: out + k * width) }
        }
        blendRows(ty.w0[i], UnsafePointer(r0), ty.w1[i], UnsafePointer(r1), into: logits, count: c * width)
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

    /// Sums `body`'s accumulators over every row: body(image, row, p, logits, accumulators), where p (kept
    /// for scatter(_:)) is the row's probabilities and logits its interpolated logits (in its kept plane when
    /// rows keep planes, which the body may overwrite for the gradient body).
    func reduce(accumulators count: Int,
                _ body: (Int, Int, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, inout [Double]) -> Void) -> [Double] {
        let parts = z.withUnsafeBufferPointer { zb in
            let zp = SendablePointer(zb.baseAddress!)
            let ranges = self.ranges
            return Compute.parallelMap(ranges.count) { part -> [Double] in
                var acc = [Double](repeating: 0, count: count)
                let logits = UnsafeMutablePointer<Float>.allocate(capacity: c * width)
                var rows = CoarseRowPair(size: c * width)
                defer { logits.deallocate(); rows.deallocate() }
                for r in ranges[part] {
                    let p = probabilities + r * c * width, scratch = kept.map { $0 + r * c * width } ?? logits
                    row(r / height, r % height, logits: scratch, p: p, zp: zp.p, rows: &rows)
                    body(r / height, r % height, p, scratch, &acc)
                }
                return acc
            }
        }
        var total = [Double](repeating: 0, count: count)
        for part in parts { for i in 0..<count { total[i] += part[i] } }
        return total
    }

    /// The gradient with respect to z (after ``reduce(accumulators:_:)``, whose probabilities it reads): `body(image, row, p, g)` fills g
    /// ([c, width]) with dL/d(upsampled logits) of the row, which is
    /// scattered back through the interpolation: vertically into the two
    /// coarse rows' full-width accumulators, and each accumulated coarse
    /// row horizontally onto the grid once it is no longer needed (rows come
    /// in order, so each coarse row is spread once per range).
    func scatter(_ body: (Int, Int, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) -> Void) -> Tensor {
        let ranges = self.ranges
        let parts = Compute.parallelMap(ranges.count) { part -> [Float] in
            var dz = [Float](repeating: 0, count: n * c * h * w)
            let g = UnsafeMutablePointer<Float>.allocate(capacity: c * width)
            var sums = CoarseRowPair(size: c * width, zeroed: true)
            defer { g.deallocate(); sums.deallocate() }
            dz.withUnsafeMutableBufferPointer { out in
                let dzp = out.baseAddress!
                // Spreads an accumulated coarse row over the grid, then clears it for reuse.
                let spread = { (key: Int, sum: UnsafeMutablePointer<Float>) in
                    let (b, ci) = key.quotientAndRemainder(dividingBy: h)
                    for k in 0..<c { tx.scatter(sum + k * width, onto: dzp + ((b * c + k) * h + ci) * w) }
                    sum.update(repeating: 0, count: c * width)
                }
                for r in ranges[part] {
                    let (b, i) = (r / height, r % height)
                    body(b, i, probabilities + r * c * width, g)
                    let (s0, s1) = sums.pair(b * h + ty.i0[i], b * h + ty.i1[i], evicting: spread)
                    addScaled(ty.w0[i], UnsafePointer(g), into: s0, count: c * width)
                    addScaled(ty.w1[i], UnsafePointer(g), into: s1, count: c * width)
                }
                sums.flush(spread)
            }
            return dz
        }
        var total = Tensor(zeros: z.shape)
        for part in parts { for i in 0..<total.count { total.storage[i] += part[i] } }
        return total
    }
}

/// Two full-width rows of coarse-grid data (all classes of one coarse row
/// each), keyed by image x coarse row. Output rows taken in order need
/// coarse rows i0 <= i1 that never go back, so two slots hold every row
/// while it is needed: each is interpolated (or, for gradients, spread)
/// once per range of output rows, not once per output row.
struct CoarseRowPair {
    private let slots: UnsafeMutablePointer<Float>
    private let size: Int
    private var keys = (-1, -1)

    init(size: Int, zeroed: Bool = false) {
        self.size = size
        slots = .allocate(capacity: 2 * size)
        if zeroed { slots.initialize(repeating: 0, count: 2 * size) }
    }

    func deallocate() { slots.deallocate() }

    private func slot(_ index: Int) -> UnsafeMutablePointer<Float> { slots + index * size }

    private func key(_ index: Int) -> Int { index == 0 ? keys.0 : keys.1 }

    private mutating func setKey(_ index: Int, _ key: Int) { if index == 0 { keys.0 = key } else { keys.1 = key } }

    /// The slots holding rows `k0` and `k1` (one slot when equal). A row not
    /// held takes a slot not needed now: `fill(key, slot)` writes it, or, for
    /// accumulators, `evicting(oldKey, slot)` hands on the row it replaces.
    mutating func pair(_ k0: Int, _ k1: Int, fill: (Int, UnsafeMutablePointer<Float>) -> Void = { _, _ in },
                       evicting: (Int, UnsafeMutablePointer<Float>) -> Void = { _, _ in })
        -> (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) {
        func place(_ k: Int, avoiding other: Int?) -> Int {
            if key(0) == k { return 0 }
            if key(1) == k { return 1 }
            let index = other == 0 || (other == nil && key(0) == k1 && k1 != k) ? 1 : 0
            if key(index) >= 0 { evicting(key(index), slot(index)) }
            setKey(index, k)
            fill(k, slot(index))
            return index
        }
        let first = place(k0, avoiding: nil)
        let second = k1 == k0 ? first : place(k1, avoiding: first)
        return (slot(first), slot(second))
    }

    /// Hands on the rows still held (accumulators at the end of a range).
    mutating func flush(_ evicting: (Int, UnsafeMutablePointer<Float>) -> Void) {
        for index in 0..<2 where key(index) >= 0 {
            evicting(key(index), slot(index))
            setKey(index, -1)
        }
    }
}

/// out = a0 * r0 + a1 * r1, or with `adding` out += (a0 * r0 + a1 * r1),
/// elementwise, sixteen lanes at a time (each element rounds as the scalar
/// expression does).
@inline(__always)
func blendRows(_ a0: Float, _ r0: UnsafePointer<Float>, _ a1: Float, _ r1: UnsafePointer<Float>,
               into out: UnsafeMutablePointer<Float>, count: Int, adding: Bool = false) {
    let v0 = VectorMath.Lanes(repeating: a0), v1 = VectorMath.Lanes(repeating: a1)
    var j = 0
    if adding {
        while j + 16 <= count {
            VectorMath.store(VectorMath.load(out + j) + (v0 * VectorMath.load(r0 + j) + v1 * VectorMath.load(r1 + j)), out + j)
            j += 16
        }
        while j < count { out[j] += a0 * r0[j] + a1 * r1[j]; j += 1 }
        return
    }
    while j + 16 <= count {
        VectorMath.store(v0 * VectorMath.load(r0 + j) + v1 * VectorMath.load(r1 + j), out + j)
        j += 16
    }
    while j < count { out[j] = a0 * r0[j] + a1 * r1[j]; j += 1 }
}

/// y += a * b, elementwise, sixteen lanes at a time (each element rounds as the scalar expression does).
func addProducts(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
    var j = 0
    while j + 16 <= count {
        VectorMath.store(VectorMath.load(y + j) + VectorMath.load(a + j) * VectorMath.load(b + j), y + j)
        j += 16
    }
    while j < count { y[j] += a[j] * b[j]; j += 1 }
}

/// y += a * x, elementwise, sixteen lanes at a time.
@inline(__always)
func addScaled(_ a: Float, _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
    let v = VectorMath.Lanes(repeating: a)
    var j = 0
    while j + 16 <= count {
        VectorMath.store(VectorMath.load(y + j) + v * VectorMath.load(x + j), y + j)
        j += 16
    }
    while j < count { y[j] += a * x[j]; j += 1 }
}

extension LinearTaps {
    /// One row interpolated along its length: out[d] = w0[d] x[i0[d]] + w1[d] x[i1[d]].
    @inline(__always)
    func interpolate(_ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        i0.withUnsafeBufferPointer { i0 in i1.withUnsafeBufferPointer { i1 in
            w0.withUnsafeBufferPointer { w0 in w1.withUnsafeBufferPointer { w1 in
                for d in 0..<i0.count { out[d] = w0[d] * x[i0[d]] + w1[d] * x[i1[d]] }
            } }
        } }
    }

    /// The adjoint of ``interpolate(_:into:)``: x[i0[d]] += w0[d] g[d], x[i1[d]] += w1[d] g[d].
    @inline(__always)
    func scatter(_ g: UnsafePointer<Float>, onto x: UnsafeMutablePointer<Float>) {
        i0.withUnsafeBufferPointer { i0 in i1.withUnsafeBufferPointer { i1 in
            w0.withUnsafeBufferPointer { w0 in w1.withUnsafeBufferPointer { w1 in
                for d in 0..<i0.count {
                    x[i0[d]] += w0[d] * g[d]
                    x[i1[d]] += w1[d] * g[d]
                }
            } }
        } }
    }
}
