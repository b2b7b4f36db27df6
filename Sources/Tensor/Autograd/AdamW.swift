/// AdamW (Loshchilov & Hutter), exactly as PyTorch's `torch.optim.AdamW`:
///
///     p  <- p * (1 - lr * weight_decay)
///     m  <- beta1 * m + (1 - beta1) * g
///     v  <- beta2 * v + (1 - beta2) * g^2
///     p  <- p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
public final class AdamW {
    public var learningRate: Float
    public let beta1: Float, beta2: Float, eps: Float, weightDecay: Float
    public let parameters: [Parameter]
    private var m: [[Float]], v: [[Float]]
    public private(set) var step = 0

    public init(parameters: [Parameter], learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
                eps: Float = 1e-8, weightDecay: Float = 0.01) {
        self.parameters = parameters
        self.learningRate = learningRate
        self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
        m = parameters.map { [Float](repeating: 0, count: $0.value.count) }
        v = m
    }

    /// Applies one update from the parameters' gradients, then zeroes them.
    public func update() {
        step += 1
        let t = Float(step)
        let correction1 = 1 - powf(beta1, t)
        let correction2Sqrt = (1 - powf(beta2, t)).squareRoot()
        let stepSize = learningRate / correction1
        for (index, p) in parameters.enumerated() {
            let g = p.gradient.storage
            p.value.withUnsafeMutableBufferPointer { w in
                for i in 0..<w.count {
                    w[i] *= 1 - learningRate * weightDecay
                    m[index][i] = beta1 * m[index][i] + (1 - beta1) * g[i]
                    v[index][i] = beta2 * v[index][i] + (1 - beta2) * g[i] * g[i]
                    w[i] -= stepSize * m[index][i] / (v[index][i].squareRoot() / correction2Sqrt + eps)
                }
            }
            p.zeroGradient()
        }
    }

    /// The moments and step count: with the parameters' values, what a
    /// training run resumed from a checkpoint needs to continue as it would have.
    public struct State: Equatable, Sendable {
        public var step: Int
        /// Per parameter, in ``parameters``' order.
        public var m: [[Float]], v: [[Float]]
        public init(step: Int, m: [[Float]], v: [[Float]]) { self.step = step; self.m = m; self.v = v }
    }

    public var state: State { State(step: step, m: m, v: v) }

    /// Takes `state` over; false (nothing changed) unless it has a moment of
    /// each parameter's size and a step count that is not negative.
    @discardableResult
    public func restore(_ state: State) -> Bool {
        guard state.step >= 0, state.m.map(\.count) == m.map(\.count), state.v.map(\.count) == v.map(\.count) else { return false }
        step = state.step; m = state.m; v = state.v
        return true
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
