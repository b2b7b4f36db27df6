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
        // A quarter turn maps x to y about the centre: the top-left corner's (x, y) = (0, 0) becomes (1, 0).
        let r = SegmentationInput.coordinates(batch: 1, height: 3, width: 3, angle: Double.pi / 2)
        #expect(abs(r[0, 0, 0, 0] - 1) < 1e-6 && abs(r[0, 1, 0, 0] - 0) < 1e-6)
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
