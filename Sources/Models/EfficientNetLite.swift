import Foundation
import Tensor

/// EfficientNet-Lite0...4 with the parameter names of the
/// `efficientnet-lite-pytorch` package (`_conv_stem`, `_bn0`,
/// `_blocks.N._expand_conv`, ...): MBConv blocks without squeeze-excitation,
/// ReLU6, TensorFlow "SAME" padding, batch norm eps 1e-3.
public struct EfficientNetLite: Backbone {
    /// (repeats, kernel, stride, expand ratio, input filters, output filters) of Lite0.
    static let stages = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                         (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
    /// The package's batch norm: eps 1e-3, momentum 0.01 (TensorFlow's 0.99).
    static let eps: Float = 1e-3, momentum: Float = 0.01
    /// (width, depth) coefficients of Lite0...Lite4.
    static let coefficients: [(Double, Double)] = [(1.0, 1.0), (1.0, 1.1), (1.1, 1.2), (1.2, 1.4), (1.4, 1.8)]

    struct MBConv: Sendable {
        let expand: ConvBN?
        let depthwise: ConvBN
        let project: ConvBN
        let skip: Bool

        /// Loads the block whose parameters are named `prefix._expand_conv.weight`, ...
        init(_ weights: WeightSet, prefix: String, in cin: Int, out cout: Int, kernel: Int, stride: Int, expandRatio: Int) throws {
            let mid = cin * expandRatio, eps = EfficientNetLite.eps, momentum = EfficientNetLite.momentum
            let p = prefix.isEmpty ? "" : prefix + "."
            expand = expandRatio == 1 ? nil
                : try ConvBN(weights, conv: "\(p)_expand_conv", bn: "\(p)_bn0", in: cin, out: mid, kernel: 1,
                             eps: eps, momentum: momentum, samePadding: true)
            depthwise = try ConvBN(weights, conv: "\(p)_depthwise_conv", bn: "\(p)_bn1", in: mid, out: mid, kernel: kernel,
                                   stride: stride, groups: mid, eps: eps, momentum: momentum, samePadding: true)
            project = try ConvBN(weights, conv: "\(p)_project_conv", bn: "\(p)_bn2", in: mid, out: cout, kernel: 1,
                                 eps: eps, momentum: momentum, samePadding: true)
            skip = stride == 1 && cin == cout
        }

        func callAsFunction(_ x: Tensor) -> Tensor {
            var y = expand.map { $0(x, activation: .relu6) } ?? x
            y = depthwise(y, activation: .relu6)
            y = project(y)
            if skip { y.add(x) }
            return y
        }
    }

    public let name: String
    let stem: ConvBN
    let blocks: [MBConv]
    /// Index of the last block at each stride.
    let lastBlock: [Int: Int]
    public let channels: [Int: Int]

    /// `variant` 0...4 (Lite0...Lite4).
    public init(variant: Int = 0, weights: WeightSet) throws {
        precondition((0...4).contains(variant))
        name = "efficientnet-lite\(variant)"
        let (width, depth) = Self.coefficients[variant]
        func round(_ filters: Int) -> Int {
            let f = Double(filters) * width
            var n = max(8, Int(f + 4) / 8 * 8)
            if Double(n) < 0.9 * f { n += 8 }
            return n
        }
        stem = try ConvBN(weights, conv: "_conv_stem", bn: "_bn0", in: 3, out: 32, kernel: 3, stride: 2,
                          eps: Self.eps, momentum: Self.momentum, samePadding: true)
        var blocks: [MBConv] = []
        var last: [Int: Int] = [:], channels: [Int: Int] = [:]
        var stride = 2
        for (i, stage) in Self.stages.enumerated() {
            let (repeats0, k, s, e, i0, o0) = stage
            // The first and last stages keep their repeats (fixed head and stem).
            let repeats = (i == 0 || i == Self.stages.count - 1) ? repeats0 : Int((depth * Double(repeats0)).rounded(.up))
            var cin = i == 0 ? 32 : round(i0)
            let cout = round(o0)
            for r in 0..<repeats {
                blocks.append(try MBConv(weights, prefix: "_blocks.\(blocks.count)", in: cin, out: cout, kernel: k,
                                         stride: r == 0 ? s : 1, expandRatio: e))
                cin = cout
            }
            stride *= s
            last[stride] = blocks.count - 1
            channels[stride] = cout
        }
        self.blocks = blocks
        lastBlock = last
        self.channels = channels
    }

    /// The ImageNet EfficientNet-Lite`variant` weights (0, 1 or 2) installed by `ops/weights/install-efficientnet-lite`.
    public static func pretrained(variant: Int) throws -> EfficientNetLite {
        try EfficientNetLite(variant: variant, weights: pretrainedWeights(variant: variant))
    }

    public static func pretrainedWeights(variant: Int) throws -> WeightSet {
        try WeightSet(file: try pretrainedWeightsFile(variant: variant))
    }

    public static func pretrainedWeightsFile(variant: Int) throws -> URL {
        try WeightSet.installedFile("efficientnet-lite\(variant).safetensors", install: "ops/weights/install-efficientnet-lite \(variant)")
    }

    public static func pretrainedLite0() throws -> EfficientNetLite { try pretrained(variant: 0) }

    public func features(_ images: Tensor, strides: Set<Int>) -> [Int: Tensor] {
        precondition(strides.allSatisfy { lastBlock[$0] != nil }, "taps \(strides.sorted()) not in \(lastBlock.keys.sorted())")
        let stop = strides.map { lastBlock[$0]! }.max() ?? 0
        let wanted = Dictionary(uniqueKeysWithValues: strides.map { (lastBlock[$0]!, $0) })
        var x = stem(images, activation: .relu6)
        var out: [Int: Tensor] = [:]
        for (i, block) in blocks.enumerated() where i <= stop {
            x = block(x)
            if let s = wanted[i] { out[s] = x }
        }
        return out
    }
}
