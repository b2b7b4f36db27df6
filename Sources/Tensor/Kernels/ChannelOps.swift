#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Tensor {
    /// Concatenates NCHW tensors of equal batch and spatial size along channels.
    public static func concatChannels(_ parts: [Tensor]) -> Tensor {
        precondition(!parts.isEmpty, "concat of nothing")
        let (n, _, h, w) = parts[0].nchw
        for p in parts {
            precondition(p.rank == 4 && p.shape[0] == n && p.shape[2] == h && p.shape[3] == w,
                         "concat: shape \(p.shape) does not match \(parts[0].shape) outside channels")
        }
        let channels = parts.map { $0.shape[1] }
        let total = channels.reduce(0, +), plane = h * w
        var out = Tensor(zeros: [n, total, h, w])
        var offset = 0
        for (p, c) in zip(parts, channels) {
            for b in 0..<n {
                let src = b * c * plane, dst = (b * total + offset) * plane
                out.storage.replaceSubrange(dst..<(dst + c * plane), with: p.storage[src..<(src + c * plane)])
            }
            offset += c
        }
        return out
    }

    /// The channels `range` of an NCHW tensor (the adjoint of concat).
    public func channels(_ range: Range<Int>) -> Tensor {
        let (n, c, h, w) = nchw
        precondition(range.lowerBound >= 0 && range.upperBound <= c, "channels \(range) of \(c)")
        let plane = h * w, k = range.count
        var out = Tensor(zeros: [n, k, h, w])
        for b in 0..<n {
            let src = (b * c + range.lowerBound) * plane
            out.storage.replaceSubrange((b * k * plane)..<((b + 1) * k * plane),
                                        with: storage[src..<(src + k * plane)])
        }
        return out
    }

    /// Softmax over channels at every pixel:
    /// p_c = exp(z_c - max z) / sum_k exp(z_k - max z).
    public func softmaxChannels() -> Tensor { channelwiseNormalised(log: false) }

    /// Log-softmax over channels: z_c - max z - log sum_k exp(z_k - max z).
    public func logSoftmaxChannels() -> Tensor { channelwiseNormalised(log: true) }

    private func channelwiseNormalised(log: Bool) -> Tensor {
        let (n, c, h, w) = nchw
        let plane = h * w
        var out = self
        out.withUnsafeMutableBufferPointer { buf in
            let p = SendableMutablePointer(buf.baseAddress!)
            Tensor.forPixelBlocks(batch: n, plane: plane) { image, start, lanes in
                let base = p.p + image * c * plane + start
                if lanes == VectorMath.Lanes.scalarCount {
                    var top = VectorMath.load(base)
                    for k in 1..<max(c, 1) { top = VectorMath.max(top, VectorMath.load(base + k * plane)) }
                    var total = VectorMath.Lanes()
                    for k in 0..<c {
                        let e = VectorMath.exp(VectorMath.load(base + k * plane) - top)
                        total += e
                        if !log { VectorMath.store(e, base + k * plane) }
                    }
                    if log {
                        var shift = VectorMath.Lanes()
                        for j in 0..<lanes { shift[j] = top[j] + logf(total[j]) }
                        for k in 0..<c { VectorMath.store(VectorMath.load(base + k * plane) - shift, base + k * plane) }
                    } else {
                        let inv = 1 / total
                        for k in 0..<c { VectorMath.store(VectorMath.load(base + k * plane) * inv, base + k * plane) }
                    }
                    return
                }
                for j in 0..<lanes {
                    let pixel = base + j
                    var top = -Float.infinity
                    for k in 0..<c { top = max(top, pixel[k * plane]) }
                    var total: Float = 0
                    for k in 0..<c { total += expf(pixel[k * plane] - top) }
                    if log {
                        let shift = top + logf(total)
                        for k in 0..<c { pixel[k * plane] -= shift }
                    } else {
                        let inv = 1 / total
                        for k in 0..<c { pixel[k * plane] = expf(pixel[k * plane] - top) * inv }
                    }
                }
            }
        }
        return out
    }

    /// Gradient through softmax over channels, given p = softmax(z) and dL/dp:
    /// dL/dz_c = p_c * (dL/dp_c - sum_k p_k dL/dp_k).
    public static func softmaxChannelsBackward(_ dp: Tensor, output p: Tensor) -> Tensor {
        let (n, c, h, w) = p.nchw
        let plane = h * w
        var dz = Tensor(zeros: p.shape)
        dz.withUnsafeMutableBufferPointer { out in
            p.withUnsafeBufferPointer { pb in
                dp.withUnsafeBufferPointer { gb in
                    let zp = SendableMutablePointer(out.baseAddress!), pp = SendablePointer(pb.baseAddress!)
                    let gp = SendablePointer(gb.baseAddress!)
                    forPixelBlocks(batch: n, plane: plane) { image, start, lanes in
                        let base = image * c * plane + start
                        if lanes == VectorMath.Lanes.scalarCount {
                            var dot = VectorMath.Lanes()
                            for k in 0..<c { dot += VectorMath.load(pp.p + base + k * plane) * VectorMath.load(gp.p + base + k * plane) }
                            for k in 0..<c {
                                let i = base + k * plane
                                VectorMath.store(VectorMath.load(pp.p + i) * (VectorMath.load(gp.p + i) - dot), zp.p + i)
                            }
                            return
                        }
                        for j in 0..<lanes {
                            var dot: Float = 0
                            for k in 0..<c { dot += pp.p[base + j + k * plane] * gp.p[base + j + k * plane] }
                            for k in 0..<c {
                                let i = base + j + k * plane
                                zp.p[i] = pp.p[i] * (gp.p[i] - dot)
                            }
                        }
                    }
                }
            }
        }
        return dz
    }

    /// Visits every pixel of an [N, C, H, W] layout as blocks of up to 16
    /// consecutive pixels of one image (`body(image, firstPixel, count)`;
    /// only the last block of each plane is shorter), split over the threads.
    static func forPixelBlocks(batch n: Int, plane: Int, _ body: (Int, Int, Int) -> Void) {
        let width = VectorMath.Lanes.scalarCount
        let blocks = (plane + width - 1) / width
        Compute.parallelFor(n * blocks, grain: 16) { range in
            for block in range {
                let image = block / blocks, start = (block % blocks) * width
                body(image, start, min(width, plane - start))
            }
        }
    }

    /// Index of the largest channel at every pixel (the first on ties);
    /// shape [N, H, W] flattened.
    public func argmaxChannels() -> [Int32] {
        let (n, c, h, w) = nchw
        let plane = h * w
        return withUnsafeBufferPointer { values in
            Compute.parallelMap(n * plane) { pixel -> Int32 in
                let base = (pixel / plane) * c * plane + pixel % plane
                var best = 0
                for k in 1..<max(c, 1) where values[base + k * plane] > values[base + best * plane] { best = k }
                return Int32(best)
            }
        }
    }

    /// One-hot encoding of class indices laid out [N, H, W]: [N, classes, H, W].
    /// Every label must lie in 0..<classes.
    public static func oneHot(_ labels: [Int32], batch n: Int, height h: Int, width w: Int, classes: Int) -> Tensor {
        precondition(labels.count == n * h * w, "one-hot: \(labels.count) labels for \(n)x\(h)x\(w)")
        let plane = h * w
        var out = Tensor(zeros: [n, classes, h, w])
        out.withUnsafeMutableBufferPointer { o in
            labels.withUnsafeBufferPointer { l in
                for pixel in 0..<l.count {
                    let label = Int(l[pixel])
                    precondition(label >= 0 && label < classes, "label \(label) outside 0..<\(classes)")
                    o[((pixel / plane) * classes + label) * plane + pixel % plane] = 1
                }
            }
        }
        return out
    }
}
