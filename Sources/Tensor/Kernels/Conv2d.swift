/// Geometry of a 2-D convolution (PyTorch's `Conv2d` conventions).
///
/// Padding is given per side so that even kernels and TensorFlow-style
/// "same" padding (extra row/column at the bottom/right) are expressible.
public struct Conv2dGeometry: Equatable, Sendable {
    public var strideY: Int, strideX: Int
    public var padTop: Int, padLeft: Int, padBottom: Int, padRight: Int
    public var dilationY: Int, dilationX: Int
    public var groups: Int

    public init(stride: Int = 1, padding: Int = 0, dilation: Int = 1, groups: Int = 1) {
        self.init(stride: (stride, stride), padding: (padding, padding, padding, padding),
                  dilation: (dilation, dilation), groups: groups)
    }

    /// - Parameter padding: (top, left, bottom, right).
    public init(stride: (Int, Int), padding: (Int, Int, Int, Int), dilation: (Int, Int) = (1, 1), groups: Int = 1) {
        precondition(stride.0 > 0 && stride.1 > 0 && dilation.0 > 0 && dilation.1 > 0 && groups > 0)
        (strideY, strideX) = stride
        (padTop, padLeft, padBottom, padRight) = padding
        (dilationY, dilationX) = dilation
        self.groups = groups
    }

    /// Output size: (in + padding - dilation * (k - 1) - 1) / stride + 1.
    public func outputSize(height: Int, width: Int, kernelHeight kh: Int, kernelWidth kw: Int) -> (Int, Int) {
        let oh = (height + padTop + padBottom - dilationY * (kh - 1) - 1) / strideY + 1
        let ow = (width + padLeft + padRight - dilationX * (kw - 1) - 1) / strideX + 1
        return (oh, ow)
    }
}

/// An activation applied in the convolution's epilogue, together with the
/// bias, while the output tile is still in cache.
public enum ConvActivation: Sendable {
    case identity, relu, relu6

    var bounds: (Float, Float) {
        switch self {
        case .identity: (-.infinity, .infinity)
        case .relu: (0, .infinity)
        case .relu6: (0, 6)
        }
    }
}

/// Shapes shared by the forward and backward convolution kernels.
struct ConvShape {
    let n, cin, h, w, cout, kh, kw, oh, ow: Int
    let geometry: Conv2dGeometry
    var groups: Int { geometry.groups }
    var cinPerGroup: Int { cin / groups }
    var coutPerGroup: Int { cout / groups }
    /// Rows of the im2col matrix of one group: Cin/g * kh * kw.
    var patch: Int { cinPerGroup * kh * kw }
    var pixels: Int { oh * ow }

    init(input: [Int], weight: [Int], geometry: Conv2dGeometry) {
        precondition(input.count == 4 && weight.count == 4,
                     "conv2d needs NCHW input and [Cout, Cin/groups, kh, kw] weight, got \(input), \(weight)")
        n = input[0]; cin = input[1]; h = input[2]; w = input[3]
        cout = weight[0]; kh = weight[2]; kw = weight[3]
        self.geometry = geometry
        precondition(cin % geometry.groups == 0 && cout % geometry.groups == 0,
                     "channels \(cin)->\(cout) not divisible by groups \(geometry.groups)")
        precondition(weight[1] == cin / geometry.groups,
                     "weight \(weight) expects \(weight[1] * geometry.groups) input channels, input has \(cin)")
        (oh, ow) = geometry.outputSize(height: h, width: w, kernelHeight: kh, kernelWidth: kw)
        precondition(oh > 0 && ow > 0, "conv2d output would be empty for input \(input), weight \(weight)")
    }

    /// A 1x1 kernel with unit stride and no padding: the convolution is a GEMM.
    var isPointwise: Bool {
        kh == 1 && kw == 1 && geometry.strideY == 1 && geometry.strideX == 1
            && geometry.padTop == 0 && geometry.padLeft == 0 && geometry.padBottom == 0 && geometry.padRight == 0
    }

    /// One input and one output channel per group.
    var isDepthwise: Bool { groups == cin && groups == cout && groups > 1 }
}

extension Tensor {
    /// 2-D convolution (cross-correlation, as PyTorch):
    /// y[n, o, i, j] = b[o] + sum_{c, u, v} w[o, c, u, v] * x[n, g*Cin/G + c, i*s - p + u*d, j*s - p + v*d].
    ///
    /// Ordinary convolutions run as im2col + `cblas_sgemm`, 1x1 convolutions as
    /// a plain GEMM, depthwise convolutions as a direct loop.
    ///
    /// `activation` is applied with the bias in one pass over each output
    /// tile (y = act(conv + b)).
    public static func conv2d(_ input: Tensor, weight: Tensor, bias: Tensor? = nil,
                              geometry: Conv2dGeometry = Conv2dGeometry(),
                              activation: ConvActivation = .identity) -> Tensor {
        let s = ConvShape(input: input.shape, weight: weight.shape, geometry: geometry)
        if let bias { precondition(bias.shape == [s.cout], "bias shape \(bias.shape), expected [\(s.cout)]") }
        let epilogue = Epilogue(bias: bias?.storage, bounds: activation.bounds)
        // Both kernels write every output element.
        return Tensor(shape: [s.n, s.cout, s.oh, s.ow]) { y in
            input.withUnsafeBufferPointer { x in
                weight.withUnsafeBufferPointer { wt in
                    if s.isDepthwise {
                        depthwiseForward(s, x.baseAddress!, wt.baseAddress!, y.baseAddress!, epilogue: epilogue)
                    } else {
                        gemmForward(s, x.baseAddress!, wt.baseAddress!, y.baseAddress!, epilogue: epilogue)
                    }
                }
            }
        }
    }

    /// Gradients of ``conv2d(_:weight:bias:geometry:)`` given dL/dy.
    /// Returns dL/dx, dL/dw and dL/db.
    /// With `inputGradient` false, dL/dx is not computed (an empty tensor is
    /// returned; a depthwise convolution computes it anyway): the input is a
    /// constant, such as cached features. With `biasGradient` false (a
    /// convolution without bias), dL/db is not summed (zeros).
    public static func conv2dBackward(_ input: Tensor, weight: Tensor, outputGradient dy: Tensor,
                                      geometry: Conv2dGeometry = Conv2dGeometry(), inputGradient: Bool = true,
                                      biasGradient: Bool = true)
        -> (input: Tensor, weight: Tensor, bias: Tensor)
    {
        let s = ConvShape(input: input.shape, weight: weight.shape, geometry: geometry)
        precondition(dy.shape == [s.n, s.cout, s.oh, s.ow], "conv2d gradient shape \(dy.shape)")
        let withInput = inputGradient || s.isDepthwise
        var dx = Tensor(zeros: withInput ? input.shape : [0])
        var dw = Tensor(zeros: weight.shape)
        var db = Tensor(zeros: [s.cout])
        input.withUnsafeBufferPointer { x in
            weight.withUnsafeBufferPointer { wt in
                dy.withUnsafeBufferPointer { g in
                    dx.withUnsafeMutableBufferPointer { gx in
                        dw.withUnsafeMutableBufferPointer { gw in
                            if s.isDepthwise {
                                depthwiseBackward(s, x.baseAddress!, wt.baseAddress!, g.baseAddress!,
                                                  gx.baseAddress!, gw.baseAddress!)
                            } else {
                                gemmBackward(s, x.baseAddress!, wt.baseAddress!, g.baseAddress!,
                                             withInput ? gx.baseAddress! : nil, gw.baseAddress!)
                            }
                        }
                    }
                    guard biasGradient else { return }
                    db.withUnsafeMutableBufferPointer { gb in
                        let gp = SendablePointer(g.baseAddress!), bp = SendableMutablePointer(gb.baseAddress!)
                        Compute.parallelFor(s.cout) { range in
                            for o in range {
                                // Sixteen running sums (four adds in flight on 4-lane SSE), then the tail.
                                var lanes = VectorMath.Lanes(repeating: 0), tail: Float = 0
                                for b in 0..<s.n {
                                    let base = gp.p + (b * s.cout + o) * s.pixels
                                    var i = 0
                                    while i + 16 <= s.pixels { lanes += VectorMath.load(base + i); i += 16 }
                                    while i < s.pixels { tail += base[i]; i += 1 }
                                }
                                bp.p[o] = lanes.sum() + tail
                            }
                        }
                    }
                }
            }
        }
        return (dx, dw, db)
    }
}

/// A pointer that may cross into `Compute.parallelFor` bodies, which read
/// shared data or write disjoint ranges. Valid only inside the
/// `withUnsafe...` scope that produced it. Visible to this package's
/// kernels (Anomaly's coreset too), not part of any module's public API.
package struct SendablePointer: @unchecked Sendable {
    package let p: UnsafePointer<Float>
    package init(_ p: UnsafePointer<Float>) { self.p = p }
}

/// The mutable counterpart of ``SendablePointer``.
package struct SendableMutablePointer: @unchecked Sendable {
    package let p: UnsafeMutablePointer<Float>
    package init(_ p: UnsafeMutablePointer<Float>) { self.p = p }
}

/// Bias and activation applied to output planes: after a depthwise
/// convolution both in one pass over each plane as it is computed; around a GEMM the bias is written first
/// (``prefill``) and the GEMM adds its product to it (beta 1: OpenBLAS then
/// skips its own pass that zeroes the output), so only the activation is
/// left for ``apply``.
struct Epilogue {
    let bias: [Float]?
    let bounds: (Float, Float)

    var clamps: Bool { bounds.0 > -.infinity || bounds.1 < .infinity }

    /// For each plane p in `channels` (channel p % channelCount), columns
    /// `columns` of the plane starting at y + p * stride: the bias (with
    /// `withBias`) and the activation.
    func apply(_ y: UnsafeMutablePointer<Float>, channels: Range<Int>, channelCount: Int, columns: Range<Int>, stride: Int,
               withBias: Bool = true) {
        guard (withBias && bias != nil) || clamps else { return }
        let yp = SendableMutablePointer(y)
        Compute.parallelFor(channels.count, grain: max(1, 4096 / max(columns.count, 1))) { range in
            for k in range {
                let plane = channels.lowerBound + k
                apply(plane: yp.p + plane * stride + columns.lowerBound, channel: plane % channelCount, count: columns.count, withBias: withBias)
            }
        }
    }

    /// The bias (with `withBias`) and activation over `count` values of channel `channel`.
    func apply(plane: UnsafeMutablePointer<Float>, channel: Int, count: Int, withBias: Bool = true) {
        let b = withBias ? bias?[channel] : nil
        guard b != nil || clamps else { return }
        let (low, high, add) = (bounds.0, bounds.1, b ?? 0)
        for i in 0..<count { plane[i] = Swift.min(Swift.max(plane[i] + add, low), high) }
    }

    /// Writes the bias into the same planes and columns before a GEMM adds to
    /// them; false (nothing written) without a bias.
    func prefill(_ y: UnsafeMutablePointer<Float>, channels: Range<Int>, channelCount: Int, columns: Range<Int>, stride: Int) -> Bool {
        guard let bias else { return false }
        let yp = SendableMutablePointer(y)
        Compute.parallelFor(channels.count, grain: max(1, 4096 / max(columns.count, 1))) { range in
            for k in range {
                let plane = channels.lowerBound + k
                (yp.p + plane * stride + columns.lowerBound).update(repeating: bias[plane % channelCount], count: columns.count)
            }
        }
        return true
    }
}
