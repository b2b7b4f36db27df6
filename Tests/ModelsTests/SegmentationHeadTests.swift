import Foundation
import Testing
import TestSupport
import Tensor
import Vision
@testable import Models

@Suite struct SegmentationHeadTests {
    @Test func coordinateChannelsSpanZeroToOneAndRotate() {
        let c = SegmentationInput.coordinates(batch: 1, height: 3, width: 5)
        #expect(c[0, 0, 0, 0] == 0 && c[0, 0, 2, 4] == 1 && c[0, 1, 2, 0] == 1 && c[0, 1, 1, 2] == 0.5)
        // A quarter turn moves the image's top row to its right column and its
        // left column to the top row (AugmentTests): the top-left pixel of the
        // turned view shows what was at the bottom-left, (x, y) = (0, 1).
        let r = SegmentationInput.coordinates(batch: 1, height: 3, width: 3, angle: Double.pi / 2)
        #expect(abs(r[0, 0, 0, 0] - 0) < 1e-6 && abs(r[0, 1, 0, 0] - 1) < 1e-6)
    }

    /// The plain coordinate map drawn as an image: x and y scaled to 0...255
    /// in two channels, the third 255 everywhere (where a view has content).
    static func coordinateImage(width w: Int, height h: Int) -> Image {
        let t = SegmentationInput.coordinates(batch: 1, height: h, width: w)
        var image = Image(width: w, height: h, channels: 3)
        for i in 0..<h {
            for j in 0..<w {
                image[x: j, y: i, channel: 0] = UInt8((t[0, 0, i, j] * 255).rounded())
                image[x: j, y: i, channel: 1] = UInt8((t[0, 1, i, j] * 255).rounded())
                image[x: j, y: i, channel: 2] = 255
            }
        }
        return image
    }

    /// The largest difference between the coordinates an augmented view
    /// carries and those its pixels' content had (the coordinate image put
    /// through the same flips and rotation), over the pixels fully inside.
    static func mismatch(_ view: SegmentationInput.View, width w: Int, height h: Int) -> (worst: Float, compared: Int) {
        var image = coordinateImage(width: w, height: h)
        if view.flipX { image = image.flippedHorizontally() }
        if view.flipY { image = image.flippedVertically() }
        image = image.rotated(by: view.angle, nearest: false)
        let t = SegmentationInput.coordinates(height: h, width: w, views: [view])
        var worst: Float = 0, compared = 0
        for i in 0..<h {
            for j in 0..<w where image[x: j, y: i, channel: 2] == 255 {
                for k in 0..<2 { worst = max(worst, abs(Float(image[x: j, y: i, channel: k]) / 255 - t[0, k, i, j])) }
                compared += 1
            }
        }
        return (worst, compared)
    }

    @Test(arguments: [(33, 33), (40, 24)])
    func anAugmentedViewCarriesTheCoordinatesOfItsContent(width: Int, height: Int) {
        let views = [SegmentationInput.View(angle: 0.3), .init(angle: -0.35, flipX: true), .init(angle: 0.2, flipY: true),
                     .init(angle: 2.5, flipX: true, flipY: true), .identity]
        for view in views {
            let (worst, compared) = Self.mismatch(view, width: width, height: height)
            // Bilinear sampling reproduces a linear map exactly; the coordinate
            // image is rounded to 1/255 when drawn and again when rotated.
            #expect(worst <= 1 / 255 + 1e-5, "\(view): \(worst * 255)/255")
            #expect(compared > width * height / 3, "\(view): \(compared) pixels compared")
        }
        // The map turned the other way (what the head was given before) is far off: the test can fail.
        let image = Self.coordinateImage(width: width, height: height).rotated(by: 0.3, nearest: false)
        let opposite = SegmentationInput.coordinates(height: height, width: width, views: [.init(angle: -0.3)])
        var off: Float = 0
        for i in 0..<height {
            for j in 0..<width where image[x: j, y: i, channel: 2] == 255 {
                off = max(off, abs(Float(image[x: j, y: i, channel: 0]) / 255 - opposite[0, 0, i, j]))
            }
        }
        #expect(off > 0.05, "the opposite rotation matches: \(off)")
    }

    @Test func featuresOfThreeStridesMeetOnTheStrideFourGrid() {
        let taps = [4: Check.random([2, 3, 8, 8], seed: 1), 8: Check.random([2, 4, 4, 4], seed: 2), 16: Check.random([2, 5, 2, 2], seed: 3)]
        let x = SegmentationInput.features(taps)
        #expect(x.shape == [2, 12, 8, 8])
        #expect(x.channels(0..<3) == taps[4]!)
        // align_corners: the corners of the upsampled maps are the coarse corners.
        #expect(x[1, 3, 7, 7] == taps[8]![1, 0, 3, 3] && x[0, 7, 0, 0] == taps[16]![0, 0, 0, 0])
    }

    /// The head on the taps as they come (each tap against its own slice of
    /// the first weight, the coarse products upsampled after) against the
    /// head on the concatenated stride-4 input: the logits and every
    /// gradient (weights, biases, the taps themselves) agree within the
    /// rounding of the sums involved. Bound: each side is within n u of the
    /// exact value times the same computation on absolute values (every term
    /// of one sign), n the longest sum (a weight gradient's pixels, plus the
    /// channels and four interpolation taps), u = 2^-24.
    @Test func theHeadOnTheTapsIsTheHeadOnTheConcatenatedInput() {
        let n = 2, h = 8, w = 12, classes = 4
        let taps = [4: Check.random([n, 3, h, w], seed: 1), 8: Check.random([n, 4, h / 2, w / 2], seed: 2),
                    16: Check.random([n, 5, h / 4, w / 4], seed: 3)]
        let coordinates = SegmentationInput.coordinates(height: h, width: w, views: [.init(angle: 0.3), .identity])
        let seed = Check.random([n, classes, h, w], seed: 4)
        let head = SegmentationHead(inputChannels: 3 + 4 + 5 + 2, classes: classes, seed: 5)
        let magnitudes = SegmentationHead(inputChannels: 3 + 4 + 5 + 2, classes: classes, seed: 5)
        func abs(_ t: Tensor) -> Tensor { Tensor(shape: t.shape, storage: t.storage.map { Swift.abs($0) }) }
        for p in magnitudes.parameters { p.value = abs(p.value) }

        /// Logits, the gradients of the four parameters and of the three taps, with `seed` as dL/dlogits.
        func run(_ head: SegmentationHead, taps: [Int: Tensor], coordinates: Tensor, seed: Tensor, concatenated: Bool) -> [Tensor] {
            for p in head.parameters { p.zeroGradient() }
            let tape = Tape()
            let variables = taps.mapValues { tape.variable($0) }
            let z: Variable
            if concatenated {
                let up = { (x: Variable) in tape.resizeBilinear(x, height: h, width: w, alignCorners: true) }
                let x = tape.concatChannels([variables[4]!, up(variables[8]!), up(variables[16]!), tape.constant(coordinates)])
                let pre = tape.conv2d(x, weight: tape.watch(head.w1), bias: tape.watch(head.b1))
                z = tape.conv2d(tape.relu(pre), weight: tape.watch(head.w2), bias: tape.watch(head.b2))
            } else {
                z = head.logits(taps: variables, coordinates: tape.constant(coordinates), on: tape)
            }
            tape.backward(from: z, seed: seed)
            return [z.value] + head.parameters.map(\.gradient) + [4, 8, 16].map { variables[$0]!.gradient! }
        }
        let split = run(head, taps: taps, coordinates: coordinates, seed: seed, concatenated: false)
        let whole = run(head, taps: taps, coordinates: coordinates, seed: seed, concatenated: true)
        let bound = run(magnitudes, taps: taps.mapValues(abs), coordinates: coordinates, seed: abs(seed), concatenated: true)
        let longest = Float(n * h * w + head.inputChannels + head.inputChannels / 2 + 4)
        let names = ["logits", "w1", "b1", "w2", "b2", "tap 4", "tap 8", "tap 16"]
        for (k, name) in names.enumerated() {
            #expect(split[k].shape == whole[k].shape, "\(name)")
            var worst: Float = 0, differs = false
            for i in 0..<whole[k].count {
                let allowed = 2 * longest * 0x1p-24 * bound[k].storage[i]
                worst = max(worst, Swift.abs(split[k].storage[i] - whole[k].storage[i]) / max(allowed, .leastNormalMagnitude))
                differs = differs || split[k].storage[i] != whole[k].storage[i]
            }
            #expect(worst <= 1, "\(name): off by \(worst) of its rounding bound")
            if name == "logits" { #expect(differs, "the two ways round the same: the comparison shows nothing") }
        }
        // Inference is the same function of the same weights.
        let tape = Tape()
        let logits = head.logits(taps: taps.mapValues(tape.constant), coordinates: tape.constant(coordinates), on: tape)
        #expect(head.predict(taps: taps, coordinates: coordinates, height: 2 * h, width: 2 * w)
                == Tensor.resizeBilinear(logits.value, height: 2 * h, width: 2 * w, alignCorners: true))
    }

    /// Few-shot segmentation end to end on the synthetic pin_grid: real
    /// EfficientNet-Lite0 features, two labelled images, the head trained with
    /// 10 CE + Dice; the part masks of two other images are recovered.
    @Test func aFewLabelledImagesTeachTheHeadThePartsOfOthers() throws {
        let backbone = try EfficientNetLite.pretrainedLite0()
        let category = PinGrid()
        let prep = Preprocessor(targetSize: 128)
        var inputs: [[Int: Tensor]] = [], labels: [[Int32]] = []
        for index in 0..<4 {
            let (_, image, mask) = SyntheticBenchmark.render(category, seed: 5, split: .train, index: index, size: .small)
            let x = ImageNormalization.imagenet(prep.image(image).tensor())
            inputs.append(backbone.features(x, strides: [4, 8, 16]))
            labels.append(prep.mask(mask).pixels.map { Int32($0) })
        }
        let classes = category.classes.count, size = 128
        let head = SegmentationHead(inputChannels: [4, 8, 16].map { inputs[0][$0]!.shape[1] }.reduce(2, +), classes: classes, seed: 1)
        let optimizer = AdamW(parameters: head.parameters, learningRate: 1e-2, weightDecay: 0.01)
        let batch = inputs[0].merging(inputs[1]) { Tensor(shape: [2] + Array($0.shape.dropFirst()), storage: $0.storage + $1.storage) }
        let h4 = size / 4
        let coordinates = { (n: Int) in SegmentationInput.coordinates(batch: n, height: h4, width: h4) }
        let target = labels[0] + labels[1]
        let onehot = Tensor.oneHot(target, batch: 2, height: size, width: size, classes: classes)
        var first: Float = 0, last: Float = 0
        for step in 0..<60 {
            let tape = Tape()
            let logits = head.logits(taps: batch.mapValues(tape.constant), coordinates: tape.constant(coordinates(2)), on: tape)
            let z = tape.resizeBilinear(logits, height: size, width: size, alignCorners: true)
            let loss = tape.weightedSum([(tape.crossEntropy(logits: z, labels: target), 10),
                                         (tape.dice(probabilities: tape.softmaxChannels(z), target: onehot), 1)])
            tape.backward(from: loss)
            optimizer.update()
            if step == 0 { first = loss.value.storage[0] }
            last = loss.value.storage[0]
        }
        #expect(last < first * 0.5, "loss \(first) -> \(last)")
        // Held-out images. At 128 px a pin head is about 3 px across and a
        // needle under 1 px, so the needle is not asked for: background, tray
        // and pin heads must be found, separators at least partly.
        for k in 2..<4 {
            let predicted = head.predict(taps: inputs[k], coordinates: coordinates(1), height: size, width: size).argmaxChannels()
            let iou = (0..<classes).map { c -> Double in
                let inter = zip(predicted, labels[k]).filter { $0 == Int32(c) && $1 == Int32(c) }.count
                let union = zip(predicted, labels[k]).filter { $0 == Int32(c) || $1 == Int32(c) }.count
                return Double(inter) / Double(max(union, 1))
            }
            #expect((iou[0] + iou[1] + iou[3]) / 3 > 0.7, "held-out image \(k): IoU per class \(iou)")
            #expect(iou[2] > 0.2, "held-out image \(k): separator IoU \(iou[2])")
        }
    }
}
