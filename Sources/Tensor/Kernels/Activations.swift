extension Tensor {
    /// max(x, 0).
    public func relu() -> Tensor { clamped(low: 0, high: .infinity) }

    /// min(max(x, 0), 6) (MobileNet / EfficientNet-Lite).
    public func relu6() -> Tensor { clamped(low: 0, high: 6) }

    /// Elementwise clamp to [low, high].
    public func clamped(low: Float, high: Float) -> Tensor {
        var out = self
        out.clamp(low: low, high: high)
        return out
    }

    /// Clamps in place (no copy: for activations after a residual add).
    public mutating func clamp(low: Float, high: Float) {
        withUnsafeMutableBufferPointer { buf in
            let p = SendableMutablePointer(buf.baseAddress!)
            Compute.parallelFor(buf.count, grain: 1 << 15) { range in
                for i in range { p.p[i] = Swift.min(Swift.max(p.p[i], low), high) }
            }
        }
    }

    /// Gradient through a clamp: passes dy where low < x < high, else 0
    /// (PyTorch's convention: zero gradient at the kink).
    public static func clampBackward(_ dy: Tensor, input: Tensor, low: Float, high: Float) -> Tensor {
        precondition(dy.shape == input.shape)
        // Branch-free, sixteen at a time: after a ReLU about half the inputs
        // are at the kink, so a branch per element mispredicts half the time.
        return Tensor(shape: dy.shape) { out in
            dy.withUnsafeBufferPointer { g in
                input.withUnsafeBufferPointer { x in
                    let (g, x, o, n) = (g.baseAddress!, x.baseAddress!, out.baseAddress!, out.count)
                    let lo = SIMD16<Float>(repeating: low), hi = SIMD16<Float>(repeating: high), zero = SIMD16<Float>()
                    var i = 0
                    while i + 16 <= n {
                        let xs = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
                        let gs = UnsafeRawPointer(g + i).loadUnaligned(as: SIMD16<Float>.self)
                        UnsafeMutableRawPointer(o + i).storeBytes(of: zero.replacing(with: gs, where: (xs .> lo) .& (xs .< hi)),
                                                                  as: SIMD16<Float>.self)
                        i += 16
                    }
                    while i < n { o[i] = x[i] > low && x[i] < high ? g[i] : 0; i += 1 }
                }
            }
        }
    }
}
