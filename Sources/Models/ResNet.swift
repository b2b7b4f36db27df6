import Foundation
import Dispatch
import Tensor

/// ResNet and Wide-ResNet (torchvision's architecture and parameter names:
/// `conv1`, `bn1`, `layer1.0.conv1`, `layer2.0.downsample.0`, ...).
public struct ResNet: Backbone {
    public enum Block: Sendable { case basic, bottleneck }

    public struct Config: Sendable {
        public var name: String
        public var block: Block
        public var layers: [Int]
        /// Planes of the four stages (64, 128, 256, 512 in torchvision).
        public var planes: [Int] = [64, 128, 256, 512]
        /// Bottleneck width per group (64; 128 for the Wide-ResNets).
        public var widthPerGroup: Int = 64

        public init(name: String, block: Block, layers: [Int], planes: [Int] = [64, 128, 256, 512], widthPerGroup: Int = 64) {
            self.name = name; self.block = block; self.layers = layers; self.planes = planes; self.widthPerGroup = widthPerGroup
        }

        public static let resnet18 = Config(name: "resnet18", block: .basic, layers: [2, 2, 2, 2])
        public static let resnet50 = Config(name: "resnet50", block: .bottleneck, layers: [3, 4, 6, 3])
        public static let resnet101 = Config(name: "resnet101", block: .bottleneck, layers: [3, 4, 23, 3])
        public static let wideResnet50 = Config(name: "wide_resnet50_2", block: .bottleneck, layers: [3, 4, 6, 3], widthPerGroup: 128)
        public static let wideResnet101 = Config(name: "wide_resnet101_2", block: .bottleneck, layers: [3, 4, 23, 3], widthPerGroup: 128)
        public static let all = [resnet18, resnet50, resnet101, wideResnet50, wideResnet101]

        var expansion: Int { block == .basic ? 1 : 4 }
    }

    struct Unit: Sendable {
        let convs: [ConvBN]
        let downsample: ConvBN?

        func callAsFunction(_ x: Tensor) -> Tensor {
            var y = x
            for (i, conv) in convs.enumerated() {
                y = conv(y, activation: i < convs.count - 1 ? .relu : .identity)
            }
            y.add(downsample?(x) ?? x)
            y.clamp(low: 0, high: .infinity)
            return y
        }
    }

    public let config: Config
    public var name: String { config.name }

    /// ImageNet weights exported by `ops/weights/export-torchvision.py`
    /// (`<name>.safetensors` in the weights directory).
    public static func pretrained(_ config: Config, depth: Int = 4) throws -> ResNet {
        try ResNet(config, weights: pretrainedWeights(config), depth: depth)
    }

    public static func pretrainedWeights(_ config: Config) throws -> WeightSet {
        try WeightSet(file: try pretrainedWeightsFile(config))
    }

    public static func pretrainedWeightsFile(_ config: Config) throws -> URL {
        try WeightSet.installedFile("\(config.name).safetensors", install: "ops/weights/export-torchvision.py \(config.name) (needs PyTorch and internet)")
    }

    let stem: ConvBN
    let stages: [[Unit]]
    /// Stages actually loaded (a network built only to layer3 has three).
    public let depth: Int

    /// Loads the network up to stage `depth` (1...4: layer1...layer4).
    public init(_ config: Config, weights: WeightSet, depth: Int = 4) throws {
        precondition((1...4).contains(depth))
        self.config = config
        self.depth = depth
        let eps: Float = 1e-5
        stem = try ConvBN(weights, conv: "conv1", bn: "bn1", in: 3, out: config.planes[0], kernel: 7, stride: 2, padding: 3, eps: eps)
        var inplanes = config.planes[0]
        var stages: [[Unit]] = []
        for s in 0..<depth {
            var units: [Unit] = []
            let planes = config.planes[s]
            for b in 0..<config.layers[s] {
                let stride = (b == 0 && s > 0) ? 2 : 1
                let p = "layer\(s + 1).\(b)"
                let out = planes * config.expansion
                var convs: [ConvBN]
                switch config.block {
                case .basic:
                    convs = [try ConvBN(weights, conv: "\(p).conv1", bn: "\(p).bn1", in: inplanes, out: planes, kernel: 3, stride: stride, padding: 1, eps: eps),
                             try ConvBN(weights, conv: "\(p).conv2", bn: "\(p).bn2", in: planes, out: planes, kernel: 3, padding: 1, eps: eps)]
                case .bottleneck:
                    let width = planes * config.widthPerGroup / 64
                    convs = [try ConvBN(weights, conv: "\(p).conv1", bn: "\(p).bn1", in: inplanes, out: width, kernel: 1, eps: eps),
                             try ConvBN(weights, conv: "\(p).conv2", bn: "\(p).bn2", in: width, out: width, kernel: 3, stride: stride, padding: 1, eps: eps),
                             try ConvBN(weights, conv: "\(p).conv3", bn: "\(p).bn3", in: width, out: out, kernel: 1, eps: eps)]
                }
                let downsample = (stride != 1 || inplanes != out)
                    ? try ConvBN(weights, conv: "\(p).downsample.0", bn: "\(p).downsample.1", in: inplanes, out: out, kernel: 1, stride: stride, eps: eps)
                    : nil
                units.append(Unit(convs: convs, downsample: downsample))
                inplanes = out
            }
            stages.append(units)
        }
        self.stages = stages
    }

    public var channels: [Int: Int] {
        Dictionary(uniqueKeysWithValues: (0..<depth).map { (4 << $0, config.planes[$0] * config.expansion) })
    }

    public func features(_ images: Tensor, strides: Set<Int>) -> [Int: Tensor] {
        features(images, strides: strides, timing: nil)
    }

    /// As ``features(_:strides:)``; `timing` receives (step, seconds) for the
    /// stem and each stage (for profiling).
    public func features(_ images: Tensor, strides: Set<Int>, timing: ((String, Double) -> Void)?) -> [Int: Tensor] {
        var clock = DispatchTime.now().uptimeNanoseconds
        func lap(_ step: String) {
            guard let timing else { return }
            let now = DispatchTime.now().uptimeNanoseconds
            timing(step, Double(now - clock) / 1e9)
            clock = now
        }
        precondition(strides.allSatisfy { channels[$0] != nil }, "taps \(strides.sorted()) not in \(channels.keys.sorted())")
        let deepest = strides.max() ?? 4
        var x = stem(images, activation: .relu)
        lap("stem conv")
        x = Tensor.maxPool2d(x, Pool2dGeometry(kernel: 3, stride: 2, padding: 1))
        lap("max pool")
        var out: [Int: Tensor] = [:]
        for (s, units) in stages.enumerated() {
            let stride = 4 << s
            if stride > deepest { break }
            for unit in units { x = unit(x) }
            lap("layer\(s + 1)")
            if strides.contains(stride) { out[stride] = x }
        }
        return out
    }
}
