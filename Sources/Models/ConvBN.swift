import Tensor

/// A convolution followed by inference batch norm, folded into one
/// convolution with bias: w' = w * gamma / sqrt(var + eps),
/// b' = beta - mean * gamma / sqrt(var + eps).
public struct ConvBN: Sendable {
    public let weight: Tensor
    public let bias: Tensor
    public let geometry: Conv2dGeometry
    /// TensorFlow "SAME" padding, computed from each input's size (EfficientNet).
    public let samePadding: Bool
    /// Where the unfolded parameters live (PyTorch names), and the batch
    /// norm's eps and momentum: what ``TrainableConvBN`` reads to train it.
    public let convName: String, bnName: String
    public let eps: Float, momentum: Float

    /// Loads `conv.weight` and the batch norm `bn.{weight,bias,running_mean,running_var}`.
    init(_ weights: WeightSet, conv: String, bn: String, in cin: Int, out cout: Int, kernel: Int,
         stride: Int = 1, padding: Int = 0, groups: Int = 1, eps: Float, momentum: Float = 0.1, samePadding: Bool = false) throws {
        let w = try weights.take("\(conv).weight", shape: [cout, cin / groups, kernel, kernel])
        (weight, bias) = try Self.norm(weights, bn: bn, channels: cout, eps: eps, momentum: momentum).fold(weight: w, bias: nil)
        geometry = Conv2dGeometry(stride: stride, padding: padding, groups: groups)
        self.samePadding = samePadding
        convName = conv; bnName = bn
        self.eps = eps; self.momentum = momentum
    }

    /// The batch norm named `bn`: weight, bias, running mean and variance.
    static func norm(_ weights: WeightSet, bn: String, channels c: Int, eps: Float, momentum: Float) throws -> BatchNormParameters {
        BatchNormParameters(gamma: try weights.take("\(bn).weight", shape: [c], fill: .constant(1)),
                            beta: try weights.take("\(bn).bias", shape: [c], fill: .constant(0)),
                            runningMean: try weights.take("\(bn).running_mean", shape: [c], fill: .constant(0)),
                            runningVar: try weights.take("\(bn).running_var", shape: [c], fill: .constant(1)),
                            eps: eps, momentum: momentum)
    }

    /// The geometry for an input of `x`'s size (SAME padding depends on it).
    func geometry(for x: Tensor) -> Conv2dGeometry {
        guard samePadding else { return geometry }
        let (_, _, h, w) = x.nchw
        let k = weight.shape[2]
        func pad(_ size: Int, _ stride: Int) -> (Int, Int) {
            let out = (size + stride - 1) / stride
            let total = max((out - 1) * stride + k - size, 0)
            return (total / 2, total - total / 2)
        }
        let (top, bottom) = pad(h, geometry.strideY), (left, right) = pad(w, geometry.strideX)
        return Conv2dGeometry(stride: (geometry.strideY, geometry.strideX), padding: (top, left, bottom, right), groups: geometry.groups)
    }

    public func callAsFunction(_ x: Tensor, activation: ConvActivation = .identity) -> Tensor {
        Tensor.conv2d(x, weight: weight, bias: bias, geometry: geometry(for: x), activation: activation)
    }
}
