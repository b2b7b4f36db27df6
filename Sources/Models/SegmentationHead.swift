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

    /// The same on a tape, for taps from an encoder that trains.
    public static func features(_ taps: [Int: Variable], on tape: Tape) -> Variable {
        guard let t4 = taps[4], let t8 = taps[8], let t16 = taps[16] else {
            preconditionFailure("segmentation features need taps 4, 8 and 16, got \(taps.keys.sorted())")
        }
        let (_, _, h, w) = t4.value.nchw
        return tape.concatChannels([t4, tape.resizeBilinear(t8, height: h, width: w, alignCorners: true),
                                    tape.resizeBilinear(t16, height: h, width: w, alignCorners: true)])
    }

    /// How an augmented view was made from its image: mirrored (about the
    /// centre; left-right, top-bottom), then rotated by `angle` radians
    /// about the centre in ``Vision/Image/rotated(by:nearest:)``'s sense.
    public struct View: Equatable, Sendable {
        public var angle: Double
        public var flipX: Bool, flipY: Bool
        public init(angle: Double = 0, flipX: Bool = false, flipY: Bool = false) {
            self.angle = angle; self.flipX = flipX; self.flipY = flipY
        }
        public static let identity = View()
    }

    /// Coordinate channels [N, 2, h, w]: x = j / (w - 1), y = i / (h - 1) for
    /// the plain view. A labelled view made by flipping and rotating its
    /// image carries the coordinates its content had in the image (SPEC-PSAD:
    /// a rotated view's map is rotated the same way): pixel d (from the
    /// centre) shows what `rotated(by:)` sampled at R(-angle) d, mirrored back.
    public static func coordinates(batch n: Int, height h: Int, width w: Int, angle: Double = 0) -> Tensor {
        coordinates(height: h, width: w, views: Array(repeating: View(angle: angle), count: n))
    }

    public static func coordinates(height h: Int, width w: Int, views: [View]) -> Tensor {
        var t = Tensor(zeros: [views.count, 2, h, w])
        let sx = Double(max(w - 1, 1)), sy = Double(max(h - 1, 1))
        for (b, view) in views.enumerated() {
            let c = cos(view.angle), s = sin(view.angle)
            for i in 0..<h {
                for j in 0..<w {
                    // Pixel offsets from the centre (the image rotation's centre), the source of this pixel's content.
                    let dx = Double(j) - Double(w - 1) / 2, dy = Double(i) - Double(h - 1) / 2
                    var px = c * dx + s * dy, py = -s * dx + c * dy
                    if view.flipX { px = -px }
                    if view.flipY { py = -py }
                    t.storage[((b * 2) * h + i) * w + j] = Float(px / sx + 0.5)
                    t.storage[((b * 2 + 1) * h + i) * w + j] = Float(py / sy + 0.5)
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
