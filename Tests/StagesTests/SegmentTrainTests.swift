import Foundation
import Testing
import TestSupport
@testable import Models
import Tensor
import Vision
@testable import Stages
import Shared

@Suite struct SegmentTrainTests {
    /// Preprocessed pin_grid images and their part masks (the generator's truth).
    static func samples(_ indices: Range<Int>, size: Int) -> [SegmentationSample] {
        let prep = Preprocessor(targetSize: size)
        return indices.map { i in
            let (_, image, mask) = SyntheticBenchmark.render(PinGrid(), seed: 11, split: .train, index: i, size: .small)
            return SegmentationSample(image: prep.image(image), mask: prep.mask(mask))
        }
    }

    @Test func trainsTheHeadFromAFewLabelledViewsAndSegmentsOthers() throws {
        let backbone = try EfficientNetLite.pretrainedLite0()
        let labelled = Self.samples(0..<2, size: 128)
        let others = Self.samples(2..<8, size: 128)
        var p = SegmentTrainParameters()
        p.epochs = 8; p.batchPairs = 2; p.viewsPerLabelledImage = 3; p.learningRate = 1e-2; p.seed = 3
        let unlabelled = others.map { SegmentationSample(image: $0.image) }
        let result = try SegmentTrain.run(labelled: labelled, unlabelled: unlabelled, classes: 5, backbone: backbone, parameters: p)
        #expect(result.epochLosses.count == 8)
        #expect(result.epochLosses.allSatisfy { $0.isFinite })
        #expect(result.epochLosses[3] < result.epochLosses[0], "\(result.epochLosses)")
        // Pseudo-labels of images it never saw labelled: background and tray found.
        let prediction = SegmentTrain.pseudoLabels(result.head, images: others.map(\.image), backbone: backbone)
        for (predicted, truth) in zip(prediction, others.map { $0.mask!.pixels.map { Int32($0) } }) {
            for c in [Int32(0), 1] {
                let inter = zip(predicted, truth).filter { $0 == c && $1 == c }.count
                let union = zip(predicted, truth).filter { $0 == c || $1 == c }.count
                #expect(Double(inter) / Double(union) > 0.7, "class \(c)")
            }
        }

        // Test-time views. A rotated view's probabilities turned back by the
        // opposite angle land on the image's own segmentation (the head was
        // trained on rotated views with their coordinates); turned the wrong
        // way they do not (the check can fail).
        let image = others[0].image, truth = others[0].mask!.pixels.map { Int32($0) }, a = 0.3
        let taps = backbone.features(ImageNormalization.imagenet(image.tensor()), strides: [4, 8, 16])
        let own = SegmentTrain.logits(result.head, taps: taps, angle: 0, height: 128, width: 128).argmaxChannels()
        let view = image.rotated(by: a, nearest: false)
        let viewProbabilities = SegmentTrain.logits(result.head, taps: backbone.features(ImageNormalization.imagenet(view.tensor()), strides: [4, 8, 16]),
                                                    angle: a, height: 128, width: 128).softmaxChannels()
        /// Share of the pixels the view saw whole (probabilities summing to 1) whose class is the image's own.
        func agreement(_ back: Tensor) -> Double {
            let labels = back.argmaxChannels(), area = 128 * 128
            let seen = (0..<area).filter { i in abs((0..<5).reduce(Float(0)) { $0 + back.storage[$1 * area + i] } - 1) < 1e-3 }
            return Double(seen.filter { labels[$0] == own[$0] }.count) / Double(max(seen.count, 1))
        }
        let back = agreement(viewProbabilities.rotatedPlanes(by: -a)), wrongWay = agreement(viewProbabilities.rotatedPlanes(by: a))
        #expect(back > 0.9 && wrongWay < back - 0.05, "turned back: \(back), the wrong way: \(wrongWay)")
        // The image with two views either way segments as well as the image alone; no views is the image alone.
        let tta = SegmentTrain.pseudoLabels(result.head, image: image, taps: taps, angles: SegmentTrain.testTimeAngles(count: 2, rotationDegrees: 40),
                                            backbone: backbone)
        for c in [Int32(0), 1] {
            let inter = zip(tta, truth).filter { $0 == c && $1 == c }.count, union = zip(tta, truth).filter { $0 == c || $1 == c }.count
            #expect(Double(inter) / Double(union) > 0.7, "class \(c) with test-time views")
        }
        #expect(SegmentTrain.pseudoLabels(result.head, image: image, taps: taps, angles: [], backbone: backbone) == own)
    }

    @Test func testTimeAnglesSpreadOverHalfTheTrainingRange() {
        let degree = Double.pi / 180
        func close(_ a: [Double], _ b: [Double]) -> Bool { a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1 * degree) < 1e-12 } }
        #expect(SegmentTrain.testTimeAngles(count: 0, rotationDegrees: 20).isEmpty)
        #expect(close(SegmentTrain.testTimeAngles(count: 2, rotationDegrees: 20), [10, -10]))
        #expect(close(SegmentTrain.testTimeAngles(count: 4, rotationDegrees: 20), [5, -5, 10, -10]))
        #expect(close(SegmentTrain.testTimeAngles(count: 3, rotationDegrees: 180), [45, -45, 90]))
    }
}

extension SegmentTrainTests {
    /// `viewsPerLabelledImage` 0 draws a fresh augmentation at every step
    /// (the reference's way) instead of a fixed set of views: it trains, it
    /// is reproducible from its seed, and it is not the fixed-view run.
    @Test func freshViewsAtEveryStepTrainReproducibly() throws {
        let backbone = try EfficientNetLite.pretrainedLite0()
        let labelled = Self.samples(0..<2, size: 64)
        let unlabelled = Self.samples(2..<6, size: 64).map { SegmentationSample(image: $0.image) }
        var p = SegmentTrainParameters()
        p.epochs = 6; p.batchPairs = 2; p.learningRate = 1e-2; p.seed = 5; p.viewsPerLabelledImage = 0
        let fresh = try SegmentTrain.run(labelled: labelled, unlabelled: unlabelled, classes: 5, backbone: backbone, parameters: p)
        let again = try SegmentTrain.run(labelled: labelled, unlabelled: unlabelled, classes: 5, backbone: backbone, parameters: p)
        #expect(fresh.epochLosses.allSatisfy { $0.isFinite } && fresh.epochLosses.last! < fresh.epochLosses.first!, "\(fresh.epochLosses)")
        // The same draws from the same seed; the encoder's threaded GEMMs may
        // round the last bit differently from run to run (OpenBLAS's Haswell
        // kernels do), so "the same" is to well within float32 training noise.
        func drift(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) / max(abs($1), 1e-6) }.max() ?? 0 }
        #expect(drift(fresh.epochLosses, again.epochLosses) < 1e-3, "\(fresh.epochLosses) vs \(again.epochLosses)")
        #expect(fresh.freshViews == fresh.draws && fresh.draws == 6 * 2 * 2)
        p.viewsPerLabelledImage = 3
        let fixed = try SegmentTrain.run(labelled: labelled, unlabelled: unlabelled, classes: 5, backbone: backbone, parameters: p)
        #expect(drift(fixed.epochLosses, fresh.epochLosses) > 1e-2, "\(fixed.epochLosses) vs \(fresh.epochLosses)")
        #expect(fixed.freshViews == 0)
    }

    /// `viewReuse` R: a draw is a fresh view with probability 1/R (always an
    /// image's first), otherwise one of the image's R most recent: the run
    /// encodes about 1/R of its draws, trains, is reproducible from its
    /// seed, and is not the run with a fresh view at every draw.
    @Test func reusedFreshViewsEncodeAboutOneDrawInR() throws {
        let backbone = try EfficientNetLite.pretrainedLite0()
        let labelled = Self.samples(0..<2, size: 64)
        let unlabelled = Self.samples(2..<6, size: 64).map { SegmentationSample(image: $0.image) }
        var p = SegmentTrainParameters()
        p.epochs = 20; p.batchPairs = 2; p.learningRate = 1e-2; p.seed = 5
        let everyDraw = try SegmentTrain.run(labelled: labelled, unlabelled: unlabelled, classes: 5, backbone: backbone, parameters: p)
        p.viewReuse = 4
        let reused = try SegmentTrain.run(labelled: labelled, unlabelled: unlabelled, classes: 5, backbone: backbone, parameters: p)
        let again = try SegmentTrain.run(labelled: labelled, unlabelled: unlabelled, classes: 5, backbone: backbone, parameters: p)
        // 80 draws: 2 first views, then fresh with probability 1/4 (binomial,
        // mean 21.5, sd 3.8); 10-33 is 3 sd either way.
        #expect(reused.draws == 80 && (10...33).contains(reused.freshViews), "\(reused.freshViews) fresh of \(reused.draws)")
        #expect(again.freshViews == reused.freshViews)
        #expect(reused.epochLosses.allSatisfy { $0.isFinite } && reused.epochLosses.last! < reused.epochLosses.first!, "\(reused.epochLosses)")
        func drift(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) / max(abs($1), 1e-6) }.max() ?? 0 }
        #expect(drift(reused.epochLosses, again.epochLosses) < 1e-3)
        #expect(drift(reused.epochLosses, everyDraw.epochLosses) > 1e-2)
    }
}

@Suite struct UNetTrainTests {
    /// A small UNet learns the part masks of a few pin_grid images from
    /// scratch (here the generator's truth stands in for pseudo-labels).
    @Test func learnsTheMasksItIsTrainedOn() throws {
        let samples = SegmentTrainTests.samples(0..<6, size: 64)
        var p = UNetTrain.Parameters()
        p.width = 8; p.depth = 3; p.epochs = 25; p.batch = 3; p.learningRate = 1e-2; p.seed = 2
        let labels = samples.map { $0.mask!.pixels.map { Int32($0) } }
        let result = try UNetTrain.run(images: samples.map(\.image), labels: labels, classes: 5, parameters: p)
        #expect(result.epochLosses.last! < result.epochLosses.first! * 0.5, "\(result.epochLosses)")
        let masks = UNetTrain.masks(result.net, images: samples.map(\.image))
        let all = labels.flatMap { $0 }
        let accuracy = Double(zip(masks.flatMap { $0 }, all).filter { $0 == $1 }.count) / Double(all.count)
        // Against always answering the most common class.
        let majority = Double((0..<5).map { c in all.filter { $0 == Int32(c) }.count }.max()!) / Double(all.count)
        // Measured: 0.82 against a majority class of 0.54.
        #expect(accuracy > majority + 0.2, "accuracy \(accuracy), majority class \(majority)")
    }
}

extension SegmentTrainTests {
    /// `finetune` last and all train the encoder's units with the head: the
    /// loss falls, the trained tensors move away from the installed ones
    /// (and only the units after stride 8 move for last), and the network
    /// they make (laid over the installed weights) segments images it never
    /// saw labelled.
    @Test(arguments: [Finetune.last, .all])
    func theEncoderTrainsWithTheHead(finetune: Finetune) throws {
        let labelled = Self.samples(0..<2, size: 64)
        let others = Self.samples(2..<6, size: 64)
        var p = SegmentTrainParameters()
        p.epochs = 6; p.batchPairs = 2; p.viewsPerLabelledImage = 3; p.learningRate = 1e-2; p.seed = 3; p.finetune = finetune
        let backbone = try EfficientNetLite.pretrainedLite0()
        let result = try SegmentTrain.run(labelled: labelled, unlabelled: others.map { SegmentationSample(image: $0.image) }, classes: 5,
                                      backbone: backbone, parameters: p, encoder: try BackboneName.efficientNetLite0.trainingEncoder(finetune))
        #expect(result.epochLosses.allSatisfy { $0.isFinite } && result.epochLosses.last! < result.epochLosses.first!, "\(result.epochLosses)")
        let tuned = try #require(result.encoder)
        #expect(tuned.keys.contains("_blocks.10._project_conv.weight"))
        #expect(tuned.keys.contains("_conv_stem.weight") == (finetune == .all))
        let installed = try EfficientNetLite.pretrainedWeights(variant: 0)
        let moved = try tuned.filter { name, t in t != (try installed.take(name, shape: t.shape)) }
        #expect(moved.count > tuned.count / 2, "\(moved.count) of \(tuned.count) tensors moved")
        let network = try EfficientNetLite(variant: 0, weights: WeightSet(overlay: tuned, over: installed))
        let prediction = SegmentTrain.pseudoLabels(result.head, images: others.map(\.image), backbone: network)
        for (predicted, truth) in zip(prediction, others.map { $0.mask!.pixels.map { Int32($0) } }) {
            let inter = zip(predicted, truth).filter { $0 == 0 && $1 == 0 }.count
            let union = zip(predicted, truth).filter { $0 == 0 || $1 == 0 }.count
            #expect(Double(inter) / Double(union) > 0.7, "background IoU")
        }
    }
}
