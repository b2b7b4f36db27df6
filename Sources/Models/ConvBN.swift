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

    /// Loads `conv.weight` and the batch norm `bn.{weight,bias,running_mean,running_var}`.
    init(_ weights: WeightSet, conv: String, bn: String, in cin: Int, out cout: Int, kernel: Int,
         stride: Int = 1, padding: Int = 0, groups: Int = 1, eps: Float, samePadding: Bool = false) throws {
        let w = try weights.take("\(conv).weight", shape: [cout, cin / groups, kernel, kernel])
        let norm = BatchNormParameters(
            gamma: try weights.take("\(bn).weight", shape: [cout], fill: .constant(1)),
            beta: try weights.take("\(bn).bias", shape: [cout], fill: .constant(0)),
            runningMean: try weights.take("\(bn).running_mean", shape: [cout], fill: .constant(0)),
            runningVar: try weights.take("\(bn).running_var", shape: [cout], fill: .constant(1)),
            eps: eps)
        (weight, bias) = norm.fold(weight: w, bias: nil)
        geometry = Conv2dGeometry(stride: stride, padding: padding, groups: groups)
        self.samePadding = samePadding
    }

    public func callAsFunction(_ x: Tensor, activation: ConvActivation = .identity) -> Tensor {
        var g = geometry
        if samePadding {
            let (_, _, h, w) = x.nchw
            let k = weight.shape[2]
            func pad(_ size: Int, _ stride: Int) -> (Int, Int) {
                let out = (size + stride - 1) / stride
                let total = max((out - 1) * stride + k - size, 0)
                return (total / 2, total - total / 2)
            }
            let (top, bottom) = pad(h, g.strideY), (left, right) = pad(w, g.strideX)
            g = Conv2dGeometry(stride: (g.strideY, g.strideX), padding: (top, left, bottom, right), groups: g.groups)
        }
        return Tensor.conv2d(x, weight: weight, bias: bias, geometry: g, activation: activation)
    }
}
