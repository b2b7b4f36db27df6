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
        var out = dy
        for i in 0..<out.count where !(input.storage[i] > low && input.storage[i] < high) { out.storage[i] = 0 }
        return out
    }
}
