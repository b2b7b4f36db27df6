/// Direct depthwise convolution: each channel convolved with its own kernel.
/// Parallel over (image, channel) planes.
func depthwiseForward(_ s: ConvShape, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                      _ y: UnsafeMutablePointer<Float>) {
    let g = s.geometry
    let xp = SendablePointer(x), wp = SendablePointer(w), yp = SendableMutablePointer(y)
    Compute.parallelFor(s.n * s.cin) { planes in
        for plane in planes {
            let c = plane % s.cin
            let src = xp.p + plane * s.h * s.w
            let k = wp.p + c * s.kh * s.kw
            let dst = yp.p + plane * s.pixels
            for i in 0..<s.oh {
                let row = dst + i * s.ow
                row.update(repeating: 0, count: s.ow)
                for u in 0..<s.kh {
                    let yy = i * g.strideY - g.padTop + u * g.dilationY
                    if yy < 0 || yy >= s.h { continue }
                    let line = src + yy * s.w
                    for v in 0..<s.kw {
                        let weight = k[u * s.kw + v]
                        let offset = -g.padLeft + v * g.dilationX
                        // Columns j whose source x = j*stride + offset lies inside [0, w).
                        let jStart = offset >= 0 ? 0 : (-offset + g.strideX - 1) / g.strideX
                        let jEnd = min(s.ow, offset >= s.w ? 0 : (s.w - 1 - offset) / g.strideX + 1)
                        if jStart >= jEnd { continue }
                        if g.strideX == 1 {
                            let base = line + offset
                            for j in jStart..<jEnd { row[j] += weight * base[j] }
                        } else {
                            for j in jStart..<jEnd { row[j] += weight * line[j * g.strideX + offset] }
                        }
                    }
                }
            }
        }
    }
}

func depthwiseBackward(_ s: ConvShape, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                       _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
                       _ dw: UnsafeMutablePointer<Float>) {
    let g = s.geometry
    let xp = SendablePointer(x), wp = SendablePointer(w), gp = SendablePointer(dy)
    let gxp = SendableMutablePointer(dx), gwp = SendableMutablePointer(dw)
    // Parallel over channels so that each thread owns its kernel's gradient.
    Compute.parallelFor(s.cin) { channels in
        for c in channels {
            let k = wp.p + c * s.kh * s.kw
            let gk = gwp.p + c * s.kh * s.kw
            for b in 0..<s.n {
                let plane = b * s.cin + c
                let src = xp.p + plane * s.h * s.w
                let gsrc = gxp.p + plane * s.h * s.w
                let grad = gp.p + plane * s.pixels
                for i in 0..<s.oh {
                    let row = grad + i * s.ow
                    for u in 0..<s.kh {
                        let yy = i * g.strideY - g.padTop + u * g.dilationY
                        if yy < 0 || yy >= s.h { continue }
                        for v in 0..<s.kw {
                            let offset = -g.padLeft + v * g.dilationX
                            let jStart = offset >= 0 ? 0 : (-offset + g.strideX - 1) / g.strideX
                            let jEnd = min(s.ow, offset >= s.w ? 0 : (s.w - 1 - offset) / g.strideX + 1)
                            if jStart >= jEnd { continue }
                            let weight = k[u * s.kw + v]
                            var acc: Float = 0
                            for j in jStart..<jEnd {
                                let xi = yy * s.w + j * g.strideX + offset
                                acc += row[j] * src[xi]
                                gsrc[xi] += weight * row[j]
                            }
                            gk[u * s.kw + v] += acc
                        }
                    }
                }
            }
        }
    }
}
