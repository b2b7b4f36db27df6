import Tensor

/// The compact UNet retrained on pseudo-labels (SPEC-PSAD, stage 3; the
/// reference uses a randomly initialised Wide-ResNet-101-2 encoder, this
/// project a small one whose width and depth are parameters).
///
/// Encoder: `depth` levels, each conv3x3 stride 2 + BN + ReLU and conv3x3 +
/// BN + ReLU, channels width * 2^level. Decoder, from the deepest level up
/// to stride 2: upsample x2 (bilinear), conv3x3 + ReLU to the skip's
/// channels, add the skip. Head: 1x1 conv to the classes, upsampled to the
/// image. Input: RGB plus the coordinate channels scaled by `coordinateScale`.
public final class UNet {
    public let width: Int, depth: Int, classes: Int
    public let coordinateScale: Float = 30

    final class Conv {
        let weight: Parameter, bias: Parameter
        let stride: Int
        var norm: BatchNormParameters?
        let gamma: Parameter?, beta: Parameter?
        let name: String

        init(_ name: String, in cin: Int, out cout: Int, kernel: Int, stride: Int = 1, batchNorm: Bool, rng: inout SeededGenerator) {
            let fanIn = cin * kernel * kernel
            self.name = name
            weight = Parameter(Tensor.randomNormal([cout, cin, kernel, kernel], std: (2 / Float(fanIn)).squareRoot(), generator: &rng),
                               name: "\(name).weight")
            bias = Parameter(Tensor(zeros: [cout]), name: "\(name).bias")
            self.stride = stride
            if batchNorm {
                norm = BatchNormParameters(channels: cout)
                gamma = Parameter(Tensor(zeros: [cout], value: 1), name: "\(name).bn.weight")
                beta = Parameter(Tensor(zeros: [cout]), name: "\(name).bn.bias")
            } else {
                norm = nil; gamma = nil; beta = nil
            }
        }

        var geometry: Conv2dGeometry { Conv2dGeometry(stride: stride, padding: weight.value.shape[2] / 2) }
        var parameters: [Parameter] { [weight, bias] + [gamma, beta].compactMap { $0 } }

        func train(_ x: Variable, _ tape: Tape, relu: Bool) -> Variable {
            var y = tape.conv2d(x, weight: tape.watch(weight), bias: tape.watch(bias), geometry: geometry)
            if var n = norm, let gamma, let beta {
                y = tape.batchNorm(y, gamma: tape.watch(gamma), beta: tape.watch(beta), parameters: &n)
                norm = n
            }
            return relu ? tape.relu(y) : y
        }

        func infer(_ x: Tensor, relu: Bool) -> Tensor {
            guard var n = norm else {
                return Tensor.conv2d(x, weight: weight.value, bias: bias.value, geometry: geometry, activation: relu ? .relu : .identity)
            }
            n.gamma = gamma!.value; n.beta = beta!.value
            let folded = n.fold(weight: weight.value, bias: bias.value)
            return Tensor.conv2d(x, weight: folded.weight, bias: folded.bias, geometry: geometry, activation: relu ? .relu : .identity)
        }
    }

    let encoder: [(Conv, Conv)]
    let decoder: [Conv]
    let head: Conv

    public init(width: Int = 16, depth: Int = 4, classes: Int, seed: UInt64) {
        precondition(depth >= 1)
        self.width = width; self.depth = depth; self.classes = classes
        var rng = SeededGenerator(seed: seed)
        var cin = 5, encoder: [(Conv, Conv)] = []
        for level in 0..<depth {
            let c = width << level
            encoder.append((Conv("enc\(level).0", in: cin, out: c, kernel: 3, stride: 2, batchNorm: true, rng: &rng),
                            Conv("enc\(level).1", in: c, out: c, kernel: 3, batchNorm: true, rng: &rng)))
            cin = c
        }
        self.encoder = encoder
        decoder = (0..<(depth - 1)).reversed().map { level in
            Conv("dec\(level)", in: width << (level + 1), out: width << level, kernel: 3, batchNorm: false, rng: &rng)
        }
        head = Conv("head", in: width, out: classes, kernel: 1, batchNorm: false, rng: &rng)
    }

    public var parameters: [Parameter] {
        encoder.flatMap { $0.0.parameters + $0.1.parameters } + decoder.flatMap(\.parameters) + head.parameters
    }

    var convolutions: [Conv] { encoder.flatMap { [$0.0, $0.1] } + decoder + [head] }

    /// Everything inference needs, by name: the parameters and the batch
    /// norms' running statistics (`<conv>.bn.running_mean`, `.running_var`).
    public var tensors: [String: Tensor] {
        Dictionary(uniqueKeysWithValues: parameters.map { ($0.name, $0.value) }).merging(runningStatistics) { $1 }
    }

    /// The batch norms' running statistics, which training changes besides
    /// the parameters (`<conv>.bn.running_mean`, `.running_var`).
    public var runningStatistics: [String: Tensor] {
        var out: [String: Tensor] = [:]
        for conv in convolutions {
            guard let n = conv.norm else { continue }
            out["\(conv.name).bn.running_mean"] = n.runningMean
            out["\(conv.name).bn.running_var"] = n.runningVar
        }
        return out
    }

    /// Takes over running statistics ``runningStatistics`` gave; false
    /// (nothing changed) unless they are exactly this network's, each of its shape.
    public func restoreRunningStatistics(_ statistics: [String: Tensor]) -> Bool {
        let current = runningStatistics
        guard Set(statistics.keys) == Set(current.keys), statistics.allSatisfy({ current[$0.key]!.shape == $0.value.shape }) else { return false }
        for conv in convolutions {
            guard var n = conv.norm else { continue }
            n.runningMean = statistics["\(conv.name).bn.running_mean"]!
            n.runningVar = statistics["\(conv.name).bn.running_var"]!
            conv.norm = n
        }
        return true
    }

    /// A UNet of this shape with the values of ``tensors`` (each checked against its shape).
    public convenience init(width: Int, depth: Int, classes: Int, tensors: [String: Tensor]) throws {
        self.init(width: width, depth: depth, classes: classes, seed: 0)
        func take(_ name: String, like current: Tensor) throws -> Tensor {
            guard let t = tensors[name] else { throw WeightError.missingTensor(file: "unet", tensor: name) }
            guard t.shape == current.shape else { throw WeightError.shapeMismatch(file: "unet", tensor: name, expected: current.shape, found: t.shape) }
            return t
        }
        for p in parameters { p.value = try take(p.name, like: p.value) }
        for conv in convolutions {
            guard var n = conv.norm else { continue }
            n.runningMean = try take("\(conv.name).bn.running_mean", like: n.runningMean)
            n.runningVar = try take("\(conv.name).bn.running_var", like: n.runningVar)
            conv.norm = n
        }
    }

    /// Multiply-adds of the convolutions for one image of `height` x `width`
    /// (forward pass; for throughput figures).
    public func multiplyAdds(height: Int, width: Int) -> Double {
        func macs(_ conv: Conv, _ h: Int, _ w: Int) -> (Double, Int, Int) {
            let shape = conv.weight.value.shape, k = shape[2], pad = k / 2
            let oh = (h + 2 * pad - k) / conv.stride + 1, ow = (w + 2 * pad - k) / conv.stride + 1
            return (Double(shape[0] * shape[1] * k * k * oh * ow), oh, ow)
        }
        var total = 0.0, h = height, w = width, sizes: [(Int, Int)] = []
        for (a, b) in encoder {
            let (ma, ha, wa) = macs(a, h, w)
            let (mb, hb, wb) = macs(b, ha, wa)
            total += ma + mb
            (h, w) = (hb, wb)
            sizes.append((h, w))
        }
        for (i, conv) in decoder.enumerated() {
            let (sh, sw) = sizes[sizes.count - 2 - i]
            total += macs(conv, sh, sw).0
            (h, w) = (sh, sw)
        }
        return total + macs(head, h, w).0
    }

    /// RGB [N, 3, H, W] plus scaled coordinates (of each image's view: an
    /// augmented training image carries the coordinates its content had).
    func input(_ images: Tensor, views: [SegmentationInput.View]? = nil) -> Tensor {
        let (n, _, h, w) = images.nchw
        let views = views ?? Array(repeating: .identity, count: n)
        precondition(views.count == n, "one view per image: \(views.count) for \(n)")
        return Tensor.concatChannels([images, SegmentationInput.coordinates(height: h, width: w, views: views) * coordinateScale])
    }

    /// Logits at the image size, recorded on `tape` (batch statistics; running statistics updated).
    public func logits(_ images: Tensor, views: [SegmentationInput.View]? = nil, on tape: Tape) -> Variable {
        let (_, _, h, w) = images.nchw
        var x = tape.constant(input(images, views: views))
        var skips: [Variable] = []
        for (a, b) in encoder {
            x = b.train(a.train(x, tape, relu: true), tape, relu: true)
            skips.append(x)
        }
        for (i, conv) in decoder.enumerated() {
            let skip = skips[skips.count - 2 - i]
            let up = tape.resizeBilinear(x, height: skip.shape[2], width: skip.shape[3], alignCorners: false)
            x = tape.add(conv.train(up, tape, relu: true), skip)
        }
        return tape.resizeBilinear(head.train(x, tape, relu: false), height: h, width: w, alignCorners: false)
    }

    /// Inference with the running statistics folded into the convolutions.
    public func predict(_ images: Tensor) -> Tensor {
        let (_, _, h, w) = images.nchw
        var x = input(images)
        var skips: [Tensor] = []
        for (a, b) in encoder {
            x = b.infer(a.infer(x, relu: true), relu: true)
            skips.append(x)
        }
        for (i, conv) in decoder.enumerated() {
            let skip = skips[skips.count - 2 - i]
            x = conv.infer(Tensor.resizeBilinear(x, height: skip.shape[2], width: skip.shape[3], alignCorners: false), relu: true) + skip
        }
        return Tensor.resizeBilinear(head.infer(x, relu: false), height: h, width: w, alignCorners: false)
    }
}
