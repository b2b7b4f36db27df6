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

/// The segmentation head: on ``SegmentationInput``'s stride-4 input, 1x1
/// conv to half the channels, ReLU, 1x1 conv to the class count; logits are
/// upsampled bilinearly to the image size afterwards (a 1x1 conv commutes
/// with bilinear upsampling).
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

    /// Logits at stride 4, recorded on `tape`, from the encoder's taps
    /// (strides 4, 8, 16) and the coordinate channels [N, 2, h4, w4]: what
    /// the first 1x1 convolution gives on ``SegmentationInput``'s
    /// concatenated input, computed without forming it. Each tap meets its
    /// own slice of the weight at its own stride and the stride-8 and
    /// stride-16 products are upsampled afterwards (bilinear upsampling is
    /// linear over pixels, a 1x1 convolution over channels: they commute),
    /// so the convolution costs 4x fewer multiply-adds for Lite0's taps
    /// (24 + 2 channels at stride 4 instead of 178) and the 178-channel input
    /// is never written. The same values up to rounding.
    public func logits(taps: [Int: Variable], coordinates: Variable, on tape: Tape) -> Variable {
        logits(taps: taps, coordinates: coordinates, on: tape, weight: tape.watch)
    }

    /// Inference: class logits upsampled to `height x width`.
    public func predict(taps: [Int: Tensor], coordinates: Tensor, height: Int, width: Int) -> Tensor {
        let tape = Tape()
        let z = logits(taps: taps.mapValues(tape.constant), coordinates: tape.constant(coordinates), on: tape) { tape.constant($0.value) }
        return Tensor.resizeBilinear(z.value, height: height, width: width, alignCorners: true)
    }

    private func logits(taps: [Int: Variable], coordinates: Variable, on tape: Tape, weight: (Parameter) -> Variable) -> Variable {
        guard let t4 = taps[4], let t8 = taps[8], let t16 = taps[16] else {
            preconditionFailure("the segmentation head needs taps 4, 8 and 16, got \(taps.keys.sorted())")
        }
        let c4 = t4.value.shape[1], c8 = t8.value.shape[1], c16 = t16.value.shape[1]
        precondition(c4 + c8 + c16 + coordinates.value.shape[1] == inputChannels,
                     "taps of \(c4) + \(c8) + \(c16) channels and \(coordinates.value.shape[1]) coordinates for a head of \(inputChannels) inputs")
        let w1 = weight(self.w1), coarse = c4 + c8 + c16
        func product(_ x: Variable, _ channels: Range<Int>) -> Variable {
            tape.conv2d(x, weight: tape.channels(w1, channels))
        }
        // The stride-4 tap and the coordinates in one product, the coarse products added as they are upsampled.
        let fine = tape.conv2d(tape.concatChannels([t4, coordinates]),
                               weight: tape.concatChannels([tape.channels(w1, 0..<c4), tape.channels(w1, coarse..<inputChannels)]),
                               bias: weight(b1))
        let pre = tape.addResized(fine, [product(t8, c4..<(c4 + c8)), product(t16, (c4 + c8)..<coarse)], alignCorners: true)
        return tape.conv2d(tape.relu(pre), weight: weight(w2), bias: weight(b2))
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
