import Tensor

/// The few-shot part segmenter's input: encoder features of three strides
/// (4, 8, 16), the coarser two upsampled bilinearly (align_corners) to the
/// stride-4 grid and concatenated, plus two coordinate channels x, y in
/// [0, 1] (SPEC-PSAD, stage 2).
public enum SegmentationInput {
    /// [N, C4 + C8 + C16, h4, w4].
    public static func features(_ taps: [Int: Tensor]) -> Tensor {
        guard let t4 = taps[4], let t8 = taps[8], let t16 = taps[16] else {
            preconditionFailure("segmentation features need taps 4, 8 and 16, got \(taps.keys.sorted())")
        }
        let (_, _, h, w) = t4.nchw
        return Tensor.concatChannels([t4, Tensor.resizeBilinear(t8, height: h, width: w, alignCorners: true),
                                      Tensor.resizeBilinear(t16, height: h, width: w, alignCorners: true)])
    }

    /// Coordinate channels [N, 2, h, w]: x = j / (w - 1), y = i / (h - 1),
    /// optionally rotated by `angle` radians about the centre (a labelled
    /// image rotated for augmentation carries a rotated coordinate map).
    public static func coordinates(batch n: Int, height h: Int, width w: Int, angle: Double = 0) -> Tensor {
        var t = Tensor(zeros: [n, 2, h, w])
        let c = Float(cos(angle)), s = Float(sin(angle))
        for i in 0..<h {
            for j in 0..<w {
                var x = Float(j) / Float(max(w - 1, 1)) - 0.5, y = Float(i) / Float(max(h - 1, 1)) - 0.5
                (x, y) = (c * x - s * y + 0.5, s * x + c * y + 0.5)
                for b in 0..<n {
                    t.storage[((b * 2) * h + i) * w + j] = x
                    t.storage[((b * 2 + 1) * h + i) * w + j] = y
                }
            }
        }
        return t
    }
}

/// The segmentation head: 1x1 conv to half the channels, ReLU, 1x1 conv to
/// the class count, run at stride 4; logits are upsampled bilinearly to the
/// image size afterwards (a 1x1 conv commutes with bilinear upsampling).
public final class SegmentationHead {
    public let inputChannels: Int, classes: Int
    public let w1: Parameter, b1: Parameter, w2: Parameter, b2: Parameter

    public init(inputChannels: Int, classes: Int, seed: UInt64) {
        self.inputChannels = inputChannels
        self.classes = classes
        var rng = SeededGenerator(seed: seed)
        let hidden = max(1, inputChannels / 2)
        // PyTorch's default Conv2d initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        func uniform(_ shape: [Int], fanIn: Int) -> Tensor {
            let bound = 1 / Float(fanIn).squareRoot()
            return Tensor.randomUniform(shape, low: -bound, high: bound, generator: &rng)
        }
        w1 = Parameter(uniform([hidden, inputChannels, 1, 1], fanIn: inputChannels), name: "head.0.weight")
        b1 = Parameter(uniform([hidden], fanIn: inputChannels), name: "head.0.bias")
        w2 = Parameter(uniform([classes, hidden, 1, 1], fanIn: hidden), name: "head.2.weight")
        b2 = Parameter(uniform([classes], fanIn: hidden), name: "head.2.bias")
    }

    public var parameters: [Parameter] { [w1, b1, w2, b2] }

    /// Logits at the input's (stride-4) resolution, recorded on `tape`.
    public func logits(_ x: Variable, on tape: Tape) -> Variable {
        let h = tape.relu(tape.conv2d(x, weight: tape.watch(w1), bias: tape.watch(b1)))
        return tape.conv2d(h, weight: tape.watch(w2), bias: tape.watch(b2))
    }

    /// Inference: class logits upsampled to `height x width`.
    public func predict(_ x: Tensor, height: Int, width: Int) -> Tensor {
        let h = Tensor.conv2d(x, weight: w1.value, bias: b1.value, activation: .relu)
        let z = Tensor.conv2d(h, weight: w2.value, bias: b2.value)
        return Tensor.resizeBilinear(z, height: height, width: width, alignCorners: true)
    }

    /// The weights as named tensors (for safetensors).
    public var tensors: [String: Tensor] { Dictionary(uniqueKeysWithValues: parameters.map { ($0.name, $0.value) }) }

    /// A head with the weights of a safetensors file written from `tensors`.
    public convenience init(file: SafetensorsFile) throws {
        let w1 = try file.entry("head.0.weight"), w2 = try file.entry("head.2.weight")
        guard w1.shape.count == 4, w2.shape.count == 4 else {
            throw WeightError.shapeMismatch(file: file.source, tensor: "head.0.weight", expected: [-1, -1, 1, 1], found: w1.shape)
        }
        self.init(inputChannels: w1.shape[1], classes: w2.shape[0], seed: 0)
        for p in parameters {
            let t: Tensor
            do { t = try file.tensor(p.name) } catch { throw WeightError.missingTensor(file: file.source, tensor: p.name) }
            guard t.shape == p.value.shape else {
                throw WeightError.shapeMismatch(file: file.source, tensor: p.name, expected: p.value.shape, found: t.shape)
            }
            p.value = t
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
