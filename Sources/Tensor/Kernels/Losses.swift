#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The PSAD segmentation losses (SPEC-PSAD.md, stage 2), each returning its
/// value and its gradient with respect to its input.
public enum SegmentationLoss {
    /// L_ce = mean over pixels of -log softmax(z)[y]; dL/dz = (softmax(z) - onehot(y)) / pixels.
    public static func crossEntropy(logits z: Tensor, labels: [Int32]) -> (value: Float, gradient: Tensor) {
        let (n, c, h, w) = z.nchw
        let plane = h * w, pixels = n * plane
        precondition(labels.count == pixels, "cross-entropy: \(labels.count) labels for \(pixels) pixels")
        let logp = z.logSoftmaxChannels()
        for label in labels { precondition(label >= 0 && Int(label) < c, "label \(label) outside 0..<\(c)") }
        var grad = Tensor(zeros: z.shape)
        let total = grad.withUnsafeMutableBufferPointer { g in
            let gp = SendableMutablePointer(g.baseAddress!)
            return logp.withUnsafeBufferPointer { lp in
                Compute.deterministicSum(pixels) { range in
                    var partial = 0.0
                    for pixel in range {
                        let y = Int(labels[pixel])
                        let base = (pixel / plane) * c * plane + pixel % plane
                        partial -= Double(lp[base + y * plane])
                        for k in 0..<c {
                            let i = base + k * plane
                            gp.p[i] = (expf(lp[i]) - (k == y ? 1 : 0)) / Float(pixels)
                        }
                    }
                    return partial
                }
            }
        }
        return (Float(total / Double(pixels)), grad)
    }

    /// L_dice = 1 - mean over (image, class) of 2 I / (S + eps), with
    /// I = sum_p p*Y and S = sum_p p + sum_p Y.
    /// dL/dp = -(1 / (N C)) * (2 Y / (S + eps) - 2 I / (S + eps)^2).
    public static func dice(probabilities p: Tensor, target y: Tensor, eps: Float = 1e-4)
        -> (value: Float, gradient: Tensor)
    {
        precondition(p.shape == y.shape, "dice: probabilities \(p.shape) vs target \(y.shape)")
        let (n, c, h, w) = p.nchw
        let plane = h * w
        let norm = Float(n * c)
        var grad = Tensor(zeros: p.shape)
        let ratios = grad.withUnsafeMutableBufferPointer { g in
            p.withUnsafeBufferPointer { pb in
                y.withUnsafeBufferPointer { yb in
                    let gp = SendableMutablePointer(g.baseAddress!), pp = SendablePointer(pb.baseAddress!)
                    let yp = SendablePointer(yb.baseAddress!)
                    return Compute.parallelMap(n * c) { nc -> Double in
                        let base = nc * plane
                        var inter: Float = 0, sum: Float = 0
                        for i in 0..<plane {
                            inter += pp.p[base + i] * yp.p[base + i]
                            sum += pp.p[base + i] + yp.p[base + i]
                        }
                        let denom = sum + eps
                        let a = 2 / denom, b = 2 * inter / (denom * denom)
                        for i in 0..<plane { gp.p[base + i] = -(a * yp.p[base + i] - b) / norm }
                        return 2 * Double(inter) / Double(denom)
                    }
                }
            }
        }
        return (Float(1 - ratios.reduce(0, +) / Double(n * c)), grad)
    }

    /// L_H = mean over every element of -q log(q + eps) (classes included in the mean).
    /// dL/dq = -(log(q + eps) + q / (q + eps)) / count.
    public static func entropy(probabilities q: Tensor, eps: Float = 1e-5) -> (value: Float, gradient: Tensor) {
        var grad = Tensor(zeros: q.shape)
        let count = Float(q.count)
        let total = grad.withUnsafeMutableBufferPointer { g in
            let gp = SendableMutablePointer(g.baseAddress!)
            return q.withUnsafeBufferPointer { qb in
                let qp = SendablePointer(qb.baseAddress!)
                return Compute.deterministicSum(q.count) { range in
                var partial = 0.0
                for i in range {
                    let v = qp.p[i]
                    let l = logf(v + eps)
                    partial -= Double(v * l)
                    gp.p[i] = -(l + v / (v + eps)) / count
                }
                return partial
            }
            }
        }
        return (Float(total / Double(q.count)), grad)
    }

    /// L_hist = sum over images n and the listed classes c of
    /// |a[n, c] - mean over pixels of q[n, c]|, where a is the area fraction
    /// of class c in the paired label. dL/dq[n, c, p] = -sign(a - m) / pixels.
    public static func histogramMatching(probabilities q: Tensor, targetFractions a: Tensor, classes: [Int])
        -> (value: Float, gradient: Tensor)
    {
        let (n, c, h, w) = q.nchw
        precondition(a.shape == [n, c], "histogram matching: fractions \(a.shape), expected [\(n), \(c)]")
        let plane = h * w
        var grad = Tensor(zeros: q.shape)
        var total = 0.0
        for b in 0..<n {
            for k in classes {
                precondition(k >= 0 && k < c, "histogram class \(k) outside 0..<\(c)")
                let base = (b * c + k) * plane
                var m = 0.0
                for i in 0..<plane { m += Double(q.storage[base + i]) }
                m /= Double(plane)
                let diff = Double(a.storage[b * c + k]) - m
                total += abs(diff)
                let sign: Float = diff > 0 ? 1 : (diff < 0 ? -1 : 0)
                for i in 0..<plane { grad.storage[base + i] = -sign / Float(plane) }
            }
        }
        return (Float(total), grad)
    }

    /// Area fraction of every class in each label map laid out [N, H, W]: [N, classes].
    public static func areaFractions(_ labels: [Int32], batch n: Int, pixels: Int, classes: Int) -> Tensor {
        precondition(labels.count == n * pixels)
        var out = Tensor(zeros: [n, classes])
        for b in 0..<n {
            for i in 0..<pixels { out.storage[b * classes + Int(labels[b * pixels + i])] += 1 }
            for k in 0..<classes { out.storage[b * classes + k] /= Float(pixels) }
        }
        return out
    }
}
