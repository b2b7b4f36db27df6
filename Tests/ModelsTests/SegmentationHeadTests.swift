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

    /// Few-shot segmentation end to end on the synthetic pin_grid: real
    /// EfficientNet-Lite0 features, two labelled images, the head trained with
    /// 10 CE + Dice; the part masks of two other images are recovered.
    @Test func aFewLabelledImagesTeachTheHeadThePartsOfOthers() throws {
        let backbone = try EfficientNetLite.pretrainedLite0()
        let category = PinGrid()
        let prep = Preprocessor(targetSize: 128)
        var inputs: [Tensor] = [], labels: [[Int32]] = []
        for index in 0..<4 {
            let (_, image, mask) = SyntheticBenchmark.render(category, seed: 5, split: .train, index: index, size: .small)
            let x = ImageNormalization.imagenet(prep.image(image).tensor())
            let f = SegmentationInput.features(backbone.features(x, strides: [4, 8, 16]))
            let (_, _, h, w) = f.nchw
            inputs.append(Tensor.concatChannels([f, SegmentationInput.coordinates(batch: 1, height: h, width: w)]))
            labels.append(prep.mask(mask).pixels.map { Int32($0) })
        }
        let classes = category.classes.count, size = 128
        let head = SegmentationHead(inputChannels: inputs[0].shape[1], classes: classes, seed: 1)
        let optimizer = AdamW(parameters: head.parameters, learningRate: 1e-2, weightDecay: 0.01)
        let batch = Tensor(shape: [2] + Array(inputs[0].shape.dropFirst()), storage: inputs[0].storage + inputs[1].storage)
        let target = labels[0] + labels[1]
        let onehot = Tensor.oneHot(target, batch: 2, height: size, width: size, classes: classes)
        var first: Float = 0, last: Float = 0
        for step in 0..<60 {
            let tape = Tape()
            let z = tape.resizeBilinear(head.logits(tape.constant(batch), on: tape), height: size, width: size, alignCorners: true)
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
            let predicted = head.predict(inputs[k], height: size, width: size).argmaxChannels()
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
