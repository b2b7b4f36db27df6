/// Batch normalisation over the channels of an NCHW tensor (PyTorch's
/// `BatchNorm2d`): y = gamma * (x - mean) / sqrt(var + eps) + beta.
public struct BatchNormParameters: Equatable, Sendable {
    public var gamma: Tensor
    public var beta: Tensor
    public var runningMean: Tensor
    public var runningVar: Tensor
    public var eps: Float
    public var momentum: Float

    public init(channels: Int, eps: Float = 1e-5, momentum: Float = 0.1) {
        gamma = Tensor(zeros: [channels], value: 1)
        beta = Tensor(zeros: [channels])
        runningMean = Tensor(zeros: [channels])
        runningVar = Tensor(zeros: [channels], value: 1)
        self.eps = eps
        self.momentum = momentum
    }

    public init(gamma: Tensor, beta: Tensor, runningMean: Tensor, runningVar: Tensor,
                eps: Float = 1e-5, momentum: Float = 0.1) {
        let c = gamma.count
        precondition(beta.count == c && runningMean.count == c && runningVar.count == c,
                     "batch norm parameters must all have \(c) values")
        self.gamma = gamma; self.beta = beta
        self.runningMean = runningMean; self.runningVar = runningVar
        self.eps = eps; self.momentum = momentum
    }

    public var channels: Int { gamma.count }
}

/// What the training-mode forward pass keeps for the backward pass.
public struct BatchNormCache: Sendable {
    /// Normalised input (x - mean) / sqrt(var + eps).
    public let normalized: Tensor
    /// 1 / sqrt(var + eps) per channel (batch variance, biased).
    public let inverseStd: [Float]
}

extension Tensor {
    /// Inference: normalises with the running statistics.
    public static func batchNormInference(_ x: Tensor, _ p: BatchNormParameters) -> Tensor {
        let (scale, shift) = p.affine()
        return channelAffine(x, scale: scale, shift: shift)
    }

    /// Training: normalises with the batch statistics (biased variance) and
    /// updates the running statistics in `p` with the unbiased variance, as
    /// PyTorch does: running = (1 - momentum) * running + momentum * batch.
    public static func batchNormTraining(_ x: Tensor, _ p: inout BatchNormParameters) -> (Tensor, BatchNormCache) {
        let (n, c, h, w) = x.nchw
        precondition(c == p.channels, "batch norm has \(p.channels) channels, input has \(c)")
        let plane = h * w, count = n * plane
        precondition(count > 1, "batch norm training needs more than one value per channel")
        // Per channel: mean and biased variance, accumulated in Double (eight lanes, then across them).
        let statistics = x.withUnsafeBufferPointer { xs in
            let xp = SendablePointer(xs.baseAddress!)
            return Compute.parallelMap(c) { ch -> (mean: Float, variance: Float) in
                var total = 0.0
                for b in 0..<n { total += doubleSum(xp.p + (b * c + ch) * plane, count: plane) }
                let m = total / Double(count)
                var sq = 0.0
                for b in 0..<n { sq += doubleSum(xp.p + (b * c + ch) * plane, count: plane, minus: m, squared: true) }
                return (Float(m), Float(sq / Double(count)))
            }
        }
        let mean = statistics.map(\.mean), variance = statistics.map(\.variance)
        let inverseStd = variance.map { 1 / ($0 + p.eps).squareRoot() }
        // The normalised input and the output in one pass (the same values as two affine passes).
        var normalized = Tensor(zeros: [0])
        let gamma = p.gamma.storage, beta = p.beta.storage
        let y = Tensor(shape: x.shape) { ys in
            normalized = Tensor(shape: x.shape) { ns in
                x.withUnsafeBufferPointer { xs in
                    let xp = SendablePointer(xs.baseAddress!), np = SendableMutablePointer(ns.baseAddress!)
                    let yp = SendableMutablePointer(ys.baseAddress!)
                    Compute.parallelFor(n * c) { planes in
                        for pl in planes {
                            let ch = pl % c, a = inverseStd[ch], b = -mean[ch] * inverseStd[ch], gm = gamma[ch], bt = beta[ch]
                            let src = xp.p + pl * plane, xhat = np.p + pl * plane, out = yp.p + pl * plane
                            for i in 0..<plane {
                                let v = src[i] * a + b
                                xhat[i] = v
                                out[i] = v * gm + bt
                            }
                        }
                    }
                }
            }
        }
        let unbiased = Float(count) / Float(count - 1)
        for ch in 0..<c {
            p.runningMean.storage[ch] = (1 - p.momentum) * p.runningMean.storage[ch] + p.momentum * mean[ch]
            p.runningVar.storage[ch] = (1 - p.momentum) * p.runningVar.storage[ch]
                + p.momentum * variance[ch] * unbiased
        }
        return (y, BatchNormCache(normalized: normalized, inverseStd: inverseStd))
    }

    /// Backward of training-mode batch norm:
    /// dx = invstd / M * (M * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat)), dxhat = dy * gamma;
    /// dgamma = sum(dy * xhat); dbeta = sum(dy).
    public static func batchNormTrainingBackward(_ dy: Tensor, gamma: Tensor, cache: BatchNormCache)
        -> (input: Tensor, gamma: Tensor, beta: Tensor)
    {
        let (n, c, h, w) = dy.nchw
        let plane = h * w, count = Float(n * plane)
        var dx = Tensor(zeros: dy.shape)
        var dgamma = Tensor(zeros: [c]), dbeta = Tensor(zeros: [c])
        let xhat = cache.normalized.storage, g = dy.storage
        let sums = g.withUnsafeBufferPointer { gs in
            xhat.withUnsafeBufferPointer { xs in
                let gp = SendablePointer(gs.baseAddress!), xp = SendablePointer(xs.baseAddress!)
                return Compute.parallelMap(c) { ch -> (dy: Double, dyXhat: Double) in
                    var sumDy = 0.0, sumDyXhat = 0.0
                    for b in 0..<n {
                        let base = (b * c + ch) * plane
                        sumDy += doubleSum(gp.p + base, count: plane)
                        sumDyXhat += doubleProductSum(gp.p + base, xp.p + base, count: plane)
                    }
                    return (sumDy, sumDyXhat)
                }
            }
        }
        dgamma.storage = sums.map { Float($0.dyXhat) }
        dbeta.storage = sums.map { Float($0.dy) }
        dx.withUnsafeMutableBufferPointer { out in
            let dp = SendableMutablePointer(out.baseAddress!)
            Compute.parallelFor(n * c) { planes in
                for pl in planes {
                    let ch = pl % c, base = pl * plane
                    let gm = gamma.storage[ch], inv = cache.inverseStd[ch]
                    let a = Float(sums[ch].dy) * gm, bsum = Float(sums[ch].dyXhat) * gm
                    for i in 0..<plane {
                        dp.p[base + i] = inv / count * (count * g[base + i] * gm - a - xhat[base + i] * bsum)
                    }
                }
            }
        }
        return (dx, dgamma, dbeta)
    }

    /// y[n, c, ...] = x[n, c, ...] * scale[c] + shift[c].
    public static func channelAffine(_ x: Tensor, scale: [Float], shift: [Float]) -> Tensor {
        let (n, c, h, w) = x.nchw
        precondition(scale.count == c && shift.count == c, "per-channel affine needs \(c) values")
        let plane = h * w
        var y = x
        y.withUnsafeMutableBufferPointer { ys in
            let yp = SendableMutablePointer(ys.baseAddress!)
            Compute.parallelFor(n * c) { planes in
                for pl in planes {
                    let a = scale[pl % c], b = shift[pl % c]
                    let base = yp.p + pl * plane
                    for i in 0..<plane { base[i] = base[i] * a + b }
                }
            }
        }
        return y
    }
}

extension BatchNormParameters {
    /// Inference batch norm as y = x * scale + shift per channel.
    public func affine() -> (scale: [Float], shift: [Float]) {
        var scale = [Float](repeating: 0, count: channels), shift = scale
        for c in 0..<channels {
            scale[c] = gamma.storage[c] / (runningVar.storage[c] + eps).squareRoot()
            shift[c] = beta.storage[c] - runningMean.storage[c] * scale[c]
        }
        return (scale, shift)
    }

    /// Folds inference batch norm into the preceding convolution:
    /// w'[o] = w[o] * scale[o], b'[o] = b[o] * scale[o] + shift[o].
    public func fold(weight: Tensor, bias: Tensor?) -> (weight: Tensor, bias: Tensor) {
        precondition(weight.shape[0] == channels, "cannot fold \(channels)-channel batch norm into weight \(weight.shape)")
        let (scale, shift) = affine()
        var w = weight
        let per = weight.count / channels
        for o in 0..<channels { for i in 0..<per { w.storage[o * per + i] *= scale[o] } }
        var b = Tensor(zeros: [channels])
        for o in 0..<channels { b.storage[o] = (bias?.storage[o] ?? 0) * scale[o] + shift[o] }
        return (w, b)
    }
}

/// The sum of Double(x[i]) - shift, squared with `squared`, over `count`
/// floats, in eight Double lanes and then across them (eight add chains
/// instead of one).
@inline(__always)
private func doubleSum(_ x: UnsafePointer<Float>, count: Int, minus shift: Double = 0, squared: Bool = false) -> Double {
    var lanes = SIMD8<Double>(repeating: 0), i = 0
    let m = SIMD8<Double>(repeating: shift)
    while i + 8 <= count {
        let d = SIMD8<Double>(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)) - m
        lanes += squared ? d * d : d
        i += 8
    }
    var total = lanes.sum()
    while i < count {
        let d = Double(x[i]) - shift
        total += squared ? d * d : d
        i += 1
    }
    return total
}

/// The sum of Double(a[i] * b[i]) (the product rounded to Float, as the
/// scalar expression), in eight Double lanes.
@inline(__always)
private func doubleProductSum(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Double {
    var lanes = SIMD8<Double>(repeating: 0), i = 0
    while i + 8 <= count {
        lanes += SIMD8<Double>(UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self) * UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self))
        i += 8
    }
    var total = lanes.sum()
    while i < count { total += Double(a[i] * b[i]); i += 1 }
    return total
}
