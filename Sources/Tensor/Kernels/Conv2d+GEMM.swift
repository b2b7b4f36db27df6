/// im2col + GEMM convolution for one image and one group.
///
/// The column matrix has `patch = Cin/g * kh * kw` rows and `oh * ow`
/// columns: col[(c * kh + u) * kw + v][i * ow + j] = x[c][i*s - p + u*d][j*s - p + v*d]
/// (zero outside the image).
func im2col(_ s: ConvShape, _ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>) {
    im2col(s, x, col, outputRows: 0..<s.oh)
}

/// im2col restricted to the output rows `rows` (a tile of the column
/// matrix, `rows.count * ow` columns wide).
func im2col(_ s: ConvShape, _ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>, outputRows rows: Range<Int>) {
    let g = s.geometry
    let width = rows.count * s.ow
    // Runs on the calling thread: between two OpenBLAS calls, whose threads
    // are still spinning, extra threads here made the convolution up to twice
    // as slow and bimodal (BENCHMARKS.md).
    do {
        for row in 0..<s.patch {
            let c = row / (s.kh * s.kw), u = (row / s.kw) % s.kh, v = row % s.kw
            let plane = x + c * s.h * s.w
            let out = col + row * width
            let (offset, inside) = s.insideColumns(tap: v)
            let jStart = inside.lowerBound, jEnd = inside.upperBound
            for (t, i) in rows.enumerated() {
                let y = i * g.strideY - g.padTop + u * g.dilationY
                let dst = out + t * s.ow
                if y < 0 || y >= s.h {
                    dst.update(repeating: 0, count: s.ow)
                    continue
                }
                let src = plane + y * s.w + offset
                dst.update(repeating: 0, count: jStart)
                if g.strideX == 1 {
                    (dst + jStart).update(from: src + jStart, count: jEnd - jStart)
                } else {
                    for j in jStart..<jEnd { dst[j] = src[j * g.strideX] }
                }
                (dst + jEnd).update(repeating: 0, count: s.ow - jEnd)
            }
        }
    }
}

/// The adjoint of ``im2col``: accumulates column gradients into the image.
/// Parallel over input channels, which own disjoint rows of the column matrix.
/// Each row adds only the output columns whose source lies inside the
/// image (``ConvShape/insideColumns(tap:)``, as ``im2col``), so a unit-stride row is one
/// branch-free run of adds, in the same order as an element-by-element check.
func col2im(_ s: ConvShape, _ col: UnsafePointer<Float>, _ x: UnsafeMutablePointer<Float>) {
    let g = s.geometry
    let xp = SendableMutablePointer(x), cp = SendablePointer(col)
    Compute.parallelFor(s.cinPerGroup) { channels in
        for c in channels {
            let plane = xp.p + c * s.h * s.w
            for u in 0..<s.kh {
                for v in 0..<s.kw {
                    let src = cp.p + ((c * s.kh + u) * s.kw + v) * s.pixels
                    let (offset, inside) = s.insideColumns(tap: v)
                    for i in 0..<s.oh {
                        let y = i * g.strideY - g.padTop + u * g.dilationY
                        if y < 0 || y >= s.h { continue }
                        let dst = plane + y * s.w + offset, row = src + i * s.ow
                        if g.strideX == 1 {
                            for j in inside { dst[j] += row[j] }
                        } else {
                            for j in inside { dst[j * g.strideX] += row[j] }
                        }
                    }
                }
            }
        }
    }
}

extension ConvShape {
    /// For the kernel column `tap`: the source column of output column 0
    /// (x = j * stride + offset for output column j) and the output columns
    /// whose source lies inside the image.
    func insideColumns(tap v: Int) -> (offset: Int, columns: Range<Int>) {
        let g = geometry
        let offset = -g.padLeft + v * g.dilationX
        let start = min(ow, offset >= 0 ? 0 : (-offset + g.strideX - 1) / g.strideX)
        let end = max(start, min(ow, offset >= w ? 0 : (w - 1 - offset) / g.strideX + 1))
        return (offset, start..<end)
    }
}

/// Output rows per im2col tile: enough columns for an efficient GEMM while
/// the tile of the column matrix stays in cache.
func tileRows(_ s: ConvShape) -> Int { max(1, min(s.oh, tilePixels / max(s.ow, 1))) }

let tilePixels = 1024

/// Whether a batch of `n` images runs split by image over the threads
/// (``Compute/splitAcrossThreads(_:_:)``: one single-threaded GEMM per core
/// instead of each GEMM over all cores), which pays when the parts are even.
func splitsByImage(_ n: Int) -> Bool {
    let t = Compute.threads
    return Compute.splitByImage && t > 1 && n >= t && (n % t == 0 || n >= 4 * t)
}

func gemmForward(_ s: ConvShape, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                 _ y: UnsafeMutablePointer<Float>, epilogue: Epilogue) {
    guard splitsByImage(s.n) else { return gemmForward(s, x, w, y, epilogue: epilogue, images: 0..<s.n) }
    // Each image's output is written by the part that holds it; nothing is shared but the inputs.
    _ = Compute.splitAcrossThreads(s.n) { images in gemmForward(s, x, w, y, epilogue: epilogue, images: images) }
}

func gemmForward(_ s: ConvShape, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                 _ y: UnsafeMutablePointer<Float>, epilogue: Epilogue, images: Range<Int>) {
    let pointwise = s.isPointwise
    let rowsPerTile = tileRows(s)
    let col = UnsafeMutablePointer<Float>.allocate(capacity: pointwise ? 0 : s.patch * rowsPerTile * s.ow)
    defer { col.deallocate() }
    for b in images {
        for grp in 0..<s.groups {
            let xg = x + (b * s.cin + grp * s.cinPerGroup) * s.h * s.w
            let yg = y + (b * s.cout + grp * s.coutPerGroup) * s.pixels
            let wg = w + grp * s.coutPerGroup * s.patch
            let planes = (grp * s.coutPerGroup)..<((grp + 1) * s.coutPerGroup), image = y + b * s.cout * s.pixels
            if pointwise {
                let biased = epilogue.prefill(image, channels: planes, channelCount: s.cout, columns: 0..<s.pixels, stride: s.pixels)
                BLAS.sgemm(m: s.coutPerGroup, n: s.pixels, k: s.patch,
                           a: wg, lda: s.patch, b: xg, ldb: s.pixels, beta: biased ? 1 : 0, c: yg, ldc: s.pixels)
                epilogue.apply(image, channels: planes, channelCount: s.cout, columns: 0..<s.pixels, stride: s.pixels, withBias: false)
                continue
            }
            // y[:, tile] = W_g * im2col(tile), one tile of output rows at a time.
            for first in stride(from: 0, to: s.oh, by: rowsPerTile) {
                let rows = first..<min(first + rowsPerTile, s.oh)
                let width = rows.count * s.ow
                im2col(s, xg, col, outputRows: rows)
                let columns = (first * s.ow)..<(first * s.ow + width)
                let biased = epilogue.prefill(image, channels: planes, channelCount: s.cout, columns: columns, stride: s.pixels)
                BLAS.sgemm(m: s.coutPerGroup, n: width, k: s.patch,
                           a: wg, lda: s.patch, b: col, ldb: width, beta: biased ? 1 : 0, c: yg + first * s.ow, ldc: s.pixels)
                epilogue.apply(image, channels: planes, channelCount: s.cout, columns: columns, stride: s.pixels, withBias: false)
            }
        }
    }
}

func gemmBackward(_ s: ConvShape, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                  _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>?,
                  _ dw: UnsafeMutablePointer<Float>) {
    guard splitsByImage(s.n) else { return gemmBackward(s, x, w, dy, dx, dw, images: 0..<s.n) }
    // dX per image belongs to one part; dW is summed over images: each part
    // accumulates its own, and the parts are added in order afterwards
    // (a fixed order for a fixed thread count).
    let count = s.cout * s.patch
    let partials = Compute.splitAcrossThreads(s.n) { images -> [Float] in
        var part = [Float](repeating: 0, count: count)
        part.withUnsafeMutableBufferPointer { gemmBackward(s, x, w, dy, dx, $0.baseAddress!, images: images) }
        return part
    }
    for part in partials {
        for i in 0..<count { dw[i] += part[i] }
    }
}

func gemmBackward(_ s: ConvShape, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                  _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>?,
                  _ dw: UnsafeMutablePointer<Float>, images: Range<Int>) {
    let pointwise = s.isPointwise
    let col = UnsafeMutablePointer<Float>.allocate(capacity: pointwise ? 0 : s.patch * s.pixels)
    let dcol = UnsafeMutablePointer<Float>.allocate(capacity: pointwise ? 0 : s.patch * s.pixels)
    defer { col.deallocate(); dcol.deallocate() }
    for b in images {
        for grp in 0..<s.groups {
            let xg = x + (b * s.cin + grp * s.cinPerGroup) * s.h * s.w

            let gy = dy + (b * s.cout + grp * s.coutPerGroup) * s.pixels
            let wg = w + grp * s.coutPerGroup * s.patch
            let dwg = dw + grp * s.coutPerGroup * s.patch
            let columns: UnsafePointer<Float>
            if pointwise {
                columns = xg
            } else {
                im2col(s, xg, col)
                columns = UnsafePointer(col)
            }
            // dW_g += dY_g [Cout/g, L] * col^T [L, K]
            BLAS.sgemm(transB: true, m: s.coutPerGroup, n: s.patch, k: s.pixels,
                       a: gy, lda: s.pixels, b: columns, ldb: s.pixels, beta: 1, c: dwg, ldc: s.patch)
            // dcol = W_g^T [K, Cout/g] * dY_g [Cout/g, L]
            guard let dx else { continue }
            let dxg = dx + (b * s.cin + grp * s.cinPerGroup) * s.h * s.w
            if pointwise {
                BLAS.sgemm(transA: true, m: s.patch, n: s.pixels, k: s.coutPerGroup,
                           a: wg, lda: s.patch, b: gy, ldb: s.pixels, beta: 1, c: dxg, ldc: s.pixels)
            } else {
                BLAS.sgemm(transA: true, m: s.patch, n: s.pixels, k: s.coutPerGroup,
                           a: wg, lda: s.patch, b: gy, ldb: s.pixels, c: dcol, ldc: s.pixels)
                col2im(s, dcol, dxg)
            }
        }
    }
}
