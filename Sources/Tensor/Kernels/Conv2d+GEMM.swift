/// im2col + GEMM convolution for one image and one group.
///
/// The column matrix has `patch = Cin/g * kh * kw` rows and `oh * ow`
/// columns: col[(c * kh + u) * kw + v][i * ow + j] = x[c][i*s - p + u*d][j*s - p + v*d]
/// (zero outside the image).
func im2col(_ s: ConvShape, _ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>) {
    let g = s.geometry
    let xp = SendablePointer(x), cp = SendableMutablePointer(col)
    Compute.parallelFor(s.patch, grain: 4) { rows in
        for row in rows {
            let c = row / (s.kh * s.kw), u = (row / s.kw) % s.kh, v = row % s.kw
            let plane = xp.p + c * s.h * s.w
            let out = cp.p + row * s.pixels
            for i in 0..<s.oh {
                let y = i * g.strideY - g.padTop + u * g.dilationY
                let dst = out + i * s.ow
                if y < 0 || y >= s.h {
                    dst.update(repeating: 0, count: s.ow)
                    continue
                }
                let src = plane + y * s.w
                var x0 = -g.padLeft + v * g.dilationX
                for j in 0..<s.ow {
                    dst[j] = (x0 >= 0 && x0 < s.w) ? src[x0] : 0
                    x0 += g.strideX
                }
            }
        }
    }
}

/// The adjoint of ``im2col``: accumulates column gradients into the image.
/// Parallel over input channels, which own disjoint rows of the column matrix.
func col2im(_ s: ConvShape, _ col: UnsafePointer<Float>, _ x: UnsafeMutablePointer<Float>) {
    let g = s.geometry
    let xp = SendableMutablePointer(x), cp = SendablePointer(col)
    Compute.parallelFor(s.cinPerGroup) { channels in
        for c in channels {
            let plane = xp.p + c * s.h * s.w
            for u in 0..<s.kh {
                for v in 0..<s.kw {
                    let src = cp.p + ((c * s.kh + u) * s.kw + v) * s.pixels
                    for i in 0..<s.oh {
                        let y = i * g.strideY - g.padTop + u * g.dilationY
                        if y < 0 || y >= s.h { continue }
                        let dst = plane + y * s.w
                        var x0 = -g.padLeft + v * g.dilationX
                        for j in 0..<s.ow {
                            if x0 >= 0 && x0 < s.w { dst[x0] += src[i * s.ow + j] }
                            x0 += g.strideX
                        }
                    }
                }
            }
        }
    }
}

func gemmForward(_ s: ConvShape, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                 _ y: UnsafeMutablePointer<Float>) {
    let pointwise = s.isPointwise
    let col = UnsafeMutablePointer<Float>.allocate(capacity: pointwise ? 0 : s.patch * s.pixels)
    defer { col.deallocate() }
    for b in 0..<s.n {
        for grp in 0..<s.groups {
            let xg = x + (b * s.cin + grp * s.cinPerGroup) * s.h * s.w
            let yg = y + (b * s.cout + grp * s.coutPerGroup) * s.pixels
            let wg = w + grp * s.coutPerGroup * s.patch
            let columns: UnsafePointer<Float>
            if pointwise {
                columns = xg
            } else {
                im2col(s, xg, col)
                columns = UnsafePointer(col)
            }
            BLAS.sgemm(m: s.coutPerGroup, n: s.pixels, k: s.patch,
                       a: wg, lda: s.patch, b: columns, ldb: s.pixels, c: yg, ldc: s.pixels)
        }
    }
}

func gemmBackward(_ s: ConvShape, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                  _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
                  _ dw: UnsafeMutablePointer<Float>) {
    let pointwise = s.isPointwise
    let col = UnsafeMutablePointer<Float>.allocate(capacity: pointwise ? 0 : s.patch * s.pixels)
    let dcol = UnsafeMutablePointer<Float>.allocate(capacity: pointwise ? 0 : s.patch * s.pixels)
    defer { col.deallocate(); dcol.deallocate() }
    for b in 0..<s.n {
        for grp in 0..<s.groups {
            let xg = x + (b * s.cin + grp * s.cinPerGroup) * s.h * s.w
            let dxg = dx + (b * s.cin + grp * s.cinPerGroup) * s.h * s.w
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
