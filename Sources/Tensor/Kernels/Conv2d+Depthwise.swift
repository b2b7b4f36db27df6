/// Direct depthwise convolution: each channel convolved with its own kernel.
/// Parallel over (image, channel) planes. Each plane is first copied into a
/// zero-bordered scratch plane, so the inner loops need no bounds checks;
/// they compute sixteen outputs at a time in SIMD registers, then eight
/// (3x3 kernels with unit stride with the kernel held in registers). Each
/// tap's add waits on the previous one; sixteen outputs keep four such
/// chains in flight on baseline x86-64's 4-lane SSE (1.10x on a 3x3 layer). With a horizontal stride
/// s > 1 the scratch plane is also split by column phase (column c goes to
/// phase c mod s at c / s), so a strided row reads s contiguous phase rows.
/// Every output sums its taps in the same order, row by row and left to
/// right from zero, whichever path computes it: the paths agree bit for bit.
/// With an `epilogue`, each plane gets its bias and activation as soon as it
/// is computed, while it is still in cache (the same values as a pass after).
func depthwiseForward(_ s: ConvShape, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                      _ y: UnsafeMutablePointer<Float>, epilogue: Epilogue? = nil) {
    FlopCounter.add(2 * s.kh * s.kw * s.n * s.cout * s.oh * s.ow)
    let g = s.geometry
    let ph = s.h + g.padTop + g.padBottom, pw = s.w + g.padLeft + g.padRight
    let xp = SendablePointer(x), wp = SendablePointer(w), yp = SendableMutablePointer(y)
    let fast3x3 = s.kh == 3 && s.kw == 3 && g.dilationX == 1 && g.dilationY == 1 && g.strideX == 1
    let sx = g.strideX, phased = g.strideX > 1 && g.dilationX == 1
    // Width of a phase plane's rows: enough for the widest phase (phase 0).
    let qw = (pw + sx - 1) / sx
    Compute.parallelFor(s.n * s.cin) { planes in
        let padded = UnsafeMutablePointer<Float>.allocate(capacity: ph * pw)
        padded.initialize(repeating: 0, count: ph * pw)
        let phases = UnsafeMutablePointer<Float>.allocate(capacity: phased ? sx * ph * qw : 0)
        if phased { phases.initialize(repeating: 0, count: sx * ph * qw) }
        defer { padded.deallocate(); phases.deallocate() }
        for plane in planes {
            let src = xp.p + plane * s.h * s.w
            for r in 0..<s.h {
                (padded + (r + g.padTop) * pw + g.padLeft).update(from: src + r * s.w, count: s.w)
            }
            if phased {
                for r in 0..<ph {
                    let row = padded + r &* pw
                    var start = 0
                    if sx == 2 {
                        // Sixteen columns at a time: eight of each phase.
                        let even = UnsafeMutableRawPointer(phases + r &* qw), odd = UnsafeMutableRawPointer(phases + (ph &+ r) &* qw)
                        while start &+ 16 <= pw {
                            let v = UnsafeRawPointer(row + start).loadUnaligned(as: SIMD16<Float>.self)
                            even.storeBytes(of: v.evenHalf, toByteOffset: start &* 2, as: SIMD8<Float>.self)
                            odd.storeBytes(of: v.oddHalf, toByteOffset: start &* 2, as: SIMD8<Float>.self)
                            start &+= 16
                        }
                    }
                    for q in 0..<sx {
                        let out = phases + (q &* ph &+ r) &* qw
                        var c = start &+ q, o = start / sx
                        while c < pw { out[o] = row[c]; c &+= sx; o &+= 1 }
                    }
                }
            }
            let k = wp.p + (plane % s.cin) * s.kh * s.kw
            let dst = yp.p + plane * s.pixels
            for i in 0..<s.oh {
                let row = dst + i * s.ow
                let line = UnsafePointer(padded + i * g.strideY * pw)
                var j = 0
                if fast3x3 {
                    j = depthwise3x3Row(row: row, line: line, width: pw, kernel: k, columns: 0..<s.ow)
                } else if sx == 1 {
                    // Sixteen outputs at a time first: four independent add chains
                    // (each tap's add waits on the last; eight outputs gave two).
                    while j &+ 16 <= s.ow {
                        var acc = SIMD16<Float>(repeating: 0)
                        for u in 0..<s.kh {
                            let base = line + (u &* g.dilationY &* pw &+ j)
                            for v in 0..<s.kw {
                                acc += k[u &* s.kw &+ v] * UnsafeRawPointer(base + v &* g.dilationX).loadUnaligned(as: SIMD16<Float>.self)
                            }
                        }
                        UnsafeMutableRawPointer(row + j).storeBytes(of: acc, as: SIMD16<Float>.self)
                        j &+= 16
                    }
                    while j &+ 8 <= s.ow {
                        var acc = SIMD8<Float>(repeating: 0)
                        for u in 0..<s.kh {
                            let base = line + (u &* g.dilationY &* pw &+ j)
                            for v in 0..<s.kw {
                                acc += k[u &* s.kw &+ v] * UnsafeRawPointer(base + v &* g.dilationX).loadUnaligned(as: SIMD8<Float>.self)
                            }
                        }
                        UnsafeMutableRawPointer(row + j).storeBytes(of: acc, as: SIMD8<Float>.self)
                        j &+= 8
                    }
                } else if phased {
                    // Output column j reads padded column j*s + v: phase v mod s, position j + v / s.
                    let top = i &* g.strideY
                    while j &+ 16 <= s.ow {
                        var acc = SIMD16<Float>(repeating: 0)
                        for u in 0..<s.kh {
                            let r = top &+ u &* g.dilationY
                            for v in 0..<s.kw {
                                let base = phases + (((v % sx) &* ph &+ r) &* qw &+ j &+ v / sx)
                                acc += k[u &* s.kw &+ v] * UnsafeRawPointer(base).loadUnaligned(as: SIMD16<Float>.self)
                            }
                        }
                        UnsafeMutableRawPointer(row + j).storeBytes(of: acc, as: SIMD16<Float>.self)
                        j &+= 16
                    }
                    while j &+ 8 <= s.ow {
                        var acc = SIMD8<Float>(repeating: 0)
                        for u in 0..<s.kh {
                            let r = top &+ u &* g.dilationY
                            for v in 0..<s.kw {
                                let base = phases + (((v % sx) &* ph &+ r) &* qw &+ j &+ v / sx)
                                acc += k[u &* s.kw &+ v] * UnsafeRawPointer(base).loadUnaligned(as: SIMD8<Float>.self)
                            }
                        }
                        UnsafeMutableRawPointer(row + j).storeBytes(of: acc, as: SIMD8<Float>.self)
                        j &+= 8
                    }
                }
                while j < s.ow {
                    var acc: Float = 0
                    for u in 0..<s.kh {
                        let base = line + (u &* g.dilationY &* pw &+ j &* sx)
                        for v in 0..<s.kw { acc += k[u &* s.kw &+ v] * base[v &* g.dilationX] }
                    }
                    row[j] = acc
                    j &+= 1
                }
            }
            epilogue?.apply(plane: dst, channel: plane % s.cout, count: s.pixels)
        }
    }
}

/// Unit-stride 3x3 taps over `columns`, eight at a time, with the kernel
/// held in registers. `line` points at the first of the three (padded)
/// source rows. Returns the first column not done (fewer than 8 remain).
@inline(__always)
private func depthwise3x3Row(row: UnsafeMutablePointer<Float>, line: UnsafePointer<Float>, width: Int,
                                  kernel k: UnsafePointer<Float>, columns: Range<Int>) -> Int {
    typealias V = SIMD8<Float>
    let w0 = V(repeating: k[0]), w1 = V(repeating: k[1]), w2 = V(repeating: k[2])
    let w3 = V(repeating: k[3]), w4 = V(repeating: k[4]), w5 = V(repeating: k[5])
    let w6 = V(repeating: k[6]), w7 = V(repeating: k[7]), w8 = V(repeating: k[8])
    let r0 = UnsafeRawPointer(line), r1 = UnsafeRawPointer(line + width), r2 = UnsafeRawPointer(line + 2 * width)
    let out = UnsafeMutableRawPointer(row)
    var j = columns.lowerBound
    // Sixteen at a time first (four independent add chains), then eight.
    typealias W = SIMD16<Float>
    let u0 = W(repeating: k[0]), u1 = W(repeating: k[1]), u2 = W(repeating: k[2])
    let u3 = W(repeating: k[3]), u4 = W(repeating: k[4]), u5 = W(repeating: k[5])
    let u6 = W(repeating: k[6]), u7 = W(repeating: k[7]), u8 = W(repeating: k[8])
    while j &+ 16 <= columns.upperBound {
        let o = j &* 4
        var acc = u0 * r0.loadUnaligned(fromByteOffset: o, as: W.self)
        acc += u1 * r0.loadUnaligned(fromByteOffset: o &+ 4, as: W.self)
        acc += u2 * r0.loadUnaligned(fromByteOffset: o &+ 8, as: W.self)
        acc += u3 * r1.loadUnaligned(fromByteOffset: o, as: W.self)
        acc += u4 * r1.loadUnaligned(fromByteOffset: o &+ 4, as: W.self)
        acc += u5 * r1.loadUnaligned(fromByteOffset: o &+ 8, as: W.self)
        acc += u6 * r2.loadUnaligned(fromByteOffset: o, as: W.self)
        acc += u7 * r2.loadUnaligned(fromByteOffset: o &+ 4, as: W.self)
        acc += u8 * r2.loadUnaligned(fromByteOffset: o &+ 8, as: W.self)
        out.storeBytes(of: acc, toByteOffset: o, as: W.self)
        j &+= 16
    }
    while j &+ 8 <= columns.upperBound {
        let o = j &* 4
        var acc = w0 * r0.loadUnaligned(fromByteOffset: o, as: V.self)
        acc += w1 * r0.loadUnaligned(fromByteOffset: o &+ 4, as: V.self)
        acc += w2 * r0.loadUnaligned(fromByteOffset: o &+ 8, as: V.self)
        acc += w3 * r1.loadUnaligned(fromByteOffset: o, as: V.self)
        acc += w4 * r1.loadUnaligned(fromByteOffset: o &+ 4, as: V.self)
        acc += w5 * r1.loadUnaligned(fromByteOffset: o &+ 8, as: V.self)
        acc += w6 * r2.loadUnaligned(fromByteOffset: o, as: V.self)
        acc += w7 * r2.loadUnaligned(fromByteOffset: o &+ 4, as: V.self)
        acc += w8 * r2.loadUnaligned(fromByteOffset: o &+ 8, as: V.self)
        out.storeBytes(of: acc, toByteOffset: o, as: V.self)
        j &+= 8
    }
    return j
}

func depthwiseBackward(_ s: ConvShape, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                       _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
                       _ dw: UnsafeMutablePointer<Float>) {
    FlopCounter.add(4 * s.kh * s.kw * s.n * s.cout * s.oh * s.ow)
    let g = s.geometry
    let xp = SendablePointer(x), wp = SendablePointer(w), gp = SendablePointer(dy)
    let gxp = SendableMutablePointer(dx), gwp = SendableMutablePointer(dw)
    // Each tap column's output columns whose source lies inside the image (and where it starts).
    let inside = (0..<s.kw).map { s.insideColumns(tap: $0) }
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
                            let (offset, columns) = inside[v]
                            let jStart = columns.lowerBound, jEnd = columns.upperBound
                            if jStart >= jEnd { continue }
                            let weight = k[u * s.kw + v]
                            let base = yy &* s.w &+ offset
                            var acc: Float = 0, j = jStart
                            // Eight at a time: dL/dx in SIMD, each element updated as in the scalar
                            // loop; the kernel's products summed in eight lanes, then across them
                            // (one add chain per lane instead of one for the row: other rounding
                            // than the scalar order, within the bound DepthwiseTests checks).
                            let wv = SIMD8<Float>(repeating: weight)
                            var lanes = SIMD8<Float>(repeating: 0)
                            if g.strideX == 1 {
                                while j &+ 8 <= jEnd {
                                    let r = UnsafeRawPointer(row + j).loadUnaligned(as: SIMD8<Float>.self)
                                    let xs = UnsafeRawPointer(src + (base &+ j)).loadUnaligned(as: SIMD8<Float>.self)
                                    let gx = UnsafeMutableRawPointer(gsrc + (base &+ j))
                                    gx.storeBytes(of: gx.loadUnaligned(as: SIMD8<Float>.self) + wv * r, as: SIMD8<Float>.self)
                                    lanes += r * xs
                                    j &+= 8
                                }
                                // Then four (rows of 16-32 outputs at strides 8 and 16 leave up to seven).
                                if j &+ 4 <= jEnd {
                                    let r = UnsafeRawPointer(row + j).loadUnaligned(as: SIMD4<Float>.self)
                                    let xs = UnsafeRawPointer(src + (base &+ j)).loadUnaligned(as: SIMD4<Float>.self)
                                    let gx = UnsafeMutableRawPointer(gsrc + (base &+ j))
                                    gx.storeBytes(of: gx.loadUnaligned(as: SIMD4<Float>.self) + SIMD4(repeating: weight) * r, as: SIMD4<Float>.self)
                                    lanes.lowHalf += r * xs
                                    j &+= 4
                                }
                            } else if g.strideX == 2 {
                                // Sixteen source columns hold eight outputs' sources (the even
                                // ones); the odd ones are written back unchanged. Strictly before
                                // jEnd, so the sixteenth column is still inside the row.
                                while j &+ 8 < jEnd {
                                    let r = UnsafeRawPointer(row + j).loadUnaligned(as: SIMD8<Float>.self)
                                    let at = base &+ 2 &* j
                                    let xs = UnsafeRawPointer(src + at).loadUnaligned(as: SIMD16<Float>.self).evenHalf
                                    let gx = UnsafeMutableRawPointer(gsrc + at)
                                    var both = gx.loadUnaligned(as: SIMD16<Float>.self)
                                    both.evenHalf += wv * r
                                    gx.storeBytes(of: both, as: SIMD16<Float>.self)
                                    lanes += r * xs
                                    j &+= 8
                                }
                            }
                            acc = lanes.sum()
                            while j < jEnd {
                                let xi = base &+ j &* g.strideX
                                acc += row[j] * src[xi]
                                gsrc[xi] += weight * row[j]
                                j &+= 1
                            }
                            gk[u * s.kw + v] += acc
                        }
                    }
                }
            }
        }
    }
}
