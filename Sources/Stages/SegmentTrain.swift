import Anomaly
import Models
import Shared
import Tensor
import Vision

public struct SegmentTrainParameters: Codable, Equatable, Sendable {
    public var epochs = 100
    public var lossSet = LossSet.supEntropyHistogram
    public var seed: UInt64 = 0
    /// Labelled/unlabelled pairs per step.
    public var batchPairs = 5
    public var learningRate: Float = 1e-3
    public var weightDecay: Float = 0.01
    /// 0 (the default): a fresh augmentation at every draw, as the
    /// reference augments each step (each step encodes its labelled views
    /// anew). N > 0: N views cached per labelled image (view 0 is the image
    /// itself), the cheaper option: the segmenter's part areas come out
    /// noisier and hcp/max loses about 2 points of SA on the synthetic
    /// benchmark (BENCHMARKS.md, "Ablations through the system").
    public var viewsPerLabelledImage = StageSettings.SegmentTrain.defaultViewsPerLabelledImage
    /// With fresh views: how many draws a fresh view serves on average. 1
    /// (the default, the reference's): every draw is a fresh augmentation.
    /// R > 1: each labelled image keeps its R most recent fresh views, and a
    /// draw of it is fresh with probability 1/R (always while it has none),
    /// otherwise one of those at random: a step encodes 1/R of its views.
    /// R = 5 halves the step and costs hcp/max about 2.8 points of SA on the
    /// second benchmark, over two seeds (BENCHMARKS.md, "Each fresh labelled
    /// view serving five draws").
    public var viewReuse = 1
    /// Largest rotation of a labelled view, in degrees (the reference: any
    /// angle for breakfast_box and screw_bag, 20 for the others).
    public var rotationDegrees = 20.0
    /// What trains besides the head (the caller builds the encoder that trains: ``SegmentTrain/run``'s `encoder`).
    public var finetune = Finetune.head

    public init() {}
}

/// A preprocessed training image: RGB, and for labelled ones the class mask
/// of the same size; the product type where the category has several.
public struct SegmentationSample: Sendable {
    public var image: Image
    public var mask: Image?
    public var productType: Int?

    public init(image: Image, mask: Image? = nil, productType: Int? = nil) {
        self.image = image; self.mask = mask; self.productType = productType
    }
}

/// SPEC-PSAD stage 2. With a frozen encoder, features of every image are
/// computed once and cached (labelled images as a fixed set of augmented
/// views), and only the 1x1 head trains. With an encoder that trains
/// (`finetune` last or all), what is cached is the frozen part's output
/// (``FineTunedEncoder/prefix(_:)``; the images themselves when all of it
/// trains), and every step runs the trained units on its labelled views and,
/// separately, on its unlabelled partners (two train-mode batches, each
/// normalised with its own statistics); the head and the encoder share one
/// AdamW.
///
/// Each step pairs `batchPairs` labelled views with unlabelled images of the
/// same product type. Loss: 10 L_ce + L_dice on the labelled logits; from
/// epoch epochs/2 on, + 10 L_H on the unlabelled probabilities and + L_hist
/// between each paired label's class areas and the unlabelled mean
/// probabilities, as the loss set says. AdamW, constant learning rate;
/// an epoch is max(1, unlabelled / batchPairs) steps.
public enum SegmentTrain {
    public struct Result {
        public let head: SegmentationHead
        /// Mean total loss of each epoch.
        public let epochLosses: [Float]
        /// The trained encoder units' tensors (PyTorch names), when the encoder trained.
        public let encoder: [String: Tensor]?
        /// Time and arithmetic of the steps' phases (augment, encode, forward, losses, backward, optimiser).
        public let profile: StepProfile
        /// Labelled views drawn over the run, and how many of them were fresh augmentations.
        public let draws: Int, freshViews: Int
    }

    /// One image's encoder taps (strides 4, 8, 16; with an encoder that
    /// trains, its frozen prefix), kept as they come: the head takes them
    /// as they are (``SegmentationHead/logits(taps:coordinates:on:)``), so
    /// the stride-4 concatenation, 4x larger, is never formed. At 512 px
    /// with Wide-ResNet-101-2 that is 29 MB an image instead of 118
    /// (DESIGN: a real category's 350 train images).
    struct Cached {
        let taps: [Int: Tensor]
        let angle: Double
        let labels: [Int32]?    // [H * W]
        let fractions: Tensor?  // [1, classes]
        let productType: Int?
    }

    /// - Parameters:
    ///   - unlabelledTaps: the frozen `backbone`'s taps (4, 8, 16) of the
    ///     unlabelled images when the caller has them already; computed here otherwise.
    ///   - encoder: `backbone` with its trained units (`p.finetune` last or
    ///     all); nil: the head alone trains.
    ///   - checkpoints: where the run keeps its state between epochs and
    ///     resumes from (not with `viewReuse` above 1, whose recent views
    ///     are not kept); `progress` throwing (the job stopped) saves first.
    public static func run(labelled: [SegmentationSample], unlabelled: [SegmentationSample], classes: Int,
                           histogramClasses: [Int]? = nil, backbone: any Backbone,
                           normalization: ImageNormalization = .imagenet, parameters p: SegmentTrainParameters,
                           unlabelledTaps: [[Int: Tensor]]? = nil, encoder: FineTunedEncoder? = nil,
                           checkpoints: TrainingCheckpoints? = nil,
                           progress: (Int, Float) throws -> Void = { _, _ in }) rethrows -> Result {
        precondition(!labelled.isEmpty && !unlabelled.isEmpty, "segment-train needs labelled and unlabelled images")
        precondition((encoder == nil) == (p.finetune == .head), "finetune \(p.finetune.rawValue) needs an encoder that trains exactly when not head")
        let size = labelled[0].image.width
        var rng = SeededGenerator(seed: p.seed)
        /// What is cached of an image: the frozen taps, or the trained encoder's prefix.
        func encode(_ image: Image) -> [Int: Tensor] {
            let x = normalization(image.tensor())
            return encoder?.prefix(x) ?? backbone.features(x, strides: [4, 8, 16])
        }
        func prefix(ofTaps taps: [Int: Tensor]) -> [Int: Tensor]? {
            guard let encoder else { return taps }
            return encoder.inputStride == 1 ? nil : taps.filter { $0.key <= encoder.inputStride }
        }
        precondition(p.viewsPerLabelledImage >= 0, "viewsPerLabelledImage must not be negative")
        /// A labelled view before encoding: the image itself, or rotated (the mask and the coordinates with it) and colour-augmented.
        func augment(_ sample: SegmentationSample, augmented: Bool) -> (image: Image, angle: Double, sample: SegmentationSample, labels: [Int32]) {
            guard let mask = sample.mask else { preconditionFailure("a labelled sample without a mask") }
            let angle = augmented ? (2 * Double(rng.nextUniform()) - 1) * p.rotationDegrees * Double.pi / 180 : 0
            let image = augmented ? sample.image.rotated(by: angle, nearest: false).colourAugmented(&rng) : sample.image
            let labels = (augmented ? mask.rotated(by: angle, nearest: true) : mask).pixels.map { Int32($0) }
            return (image, angle, sample, labels)
        }
        func encoded(_ view: (image: Image, angle: Double, sample: SegmentationSample, labels: [Int32])) -> Cached {
            Cached(taps: encode(view.image), angle: view.angle, labels: view.labels,
                   fractions: SegmentationLoss.areaFractions(view.labels, batch: 1, pixels: size * size, classes: classes),
                   productType: view.sample.productType)
        }
        let fresh = p.viewsPerLabelledImage == 0
        precondition(p.viewReuse >= 1 && (fresh || p.viewReuse == 1), "viewReuse must be at least 1, and 1 with cached views")
        /// Each labelled image's most recent fresh views (at most `viewReuse`, oldest first), when they are reused.
        var recent = [[Cached]](repeating: [], count: labelled.count)
        let views = labelled.flatMap { sample in (0..<p.viewsPerLabelledImage).map { encoded(augment(sample, augmented: $0 != 0)) } }
        let pool = unlabelled.indices.map { i in
            Cached(taps: unlabelledTaps.flatMap { prefix(ofTaps: $0[i]) } ?? encode(unlabelled[i].image), angle: 0,
                   labels: nil, fractions: nil, productType: unlabelled[i].productType)
        }
        let inputChannels = backbone.channels[4]! + backbone.channels[8]! + backbone.channels[16]! + 2
        let head = SegmentationHead(inputChannels: inputChannels, classes: classes, seed: p.seed &+ 1)
        let optimizer = AdamW(parameters: head.parameters + (encoder?.parameters ?? []), learningRate: p.learningRate, weightDecay: p.weightDecay)
        /// The cached maps of `items` as one batch, by stride.
        func batch(_ items: ArraySlice<Cached>) -> [Int: Tensor] {
            Dictionary(uniqueKeysWithValues: items.first!.taps.keys.map { s in (s, stack(items.map { $0.taps[s]! })) })
        }
        /// The head's stride-4 logits for a batch: from the cached taps, or through the encoder's trained units on `tape`.
        func headLogits(_ items: [Cached], on tape: Tape) -> Variable {
            let cached = batch(items[...])
            let taps = encoder.map { $0(cached, on: tape) } ?? cached.mapValues(tape.constant)
            let (_, _, h, w) = taps[4]!.value.nchw
            let views = items.map { SegmentationInput.View(angle: $0.angle) }
            return head.logits(taps: taps, coordinates: tape.constant(SegmentationInput.coordinates(height: h, width: w, views: views)), on: tape)
        }
        let histogram = histogramClasses ?? Array(1..<classes)
        let steps = max(1, unlabelled.count / p.batchPairs)
        var epochLosses: [Float] = []
        var profile = StepProfile()
        var draws = 0, freshViews = 0
        if p.viewReuse > 1, let checkpoints { checkpoints.log("view_reuse \(p.viewReuse): segment-train keeps no checkpoints") }
        var clock = CheckpointClock(p.viewReuse > 1 ? nil : checkpoints)
        func state(_ epochsDone: Int) -> TrainingState {
            TrainingState(epoch: epochsDone, rng: rng.state, parameters: optimizer.parameters.map(\.value), optimizer: optimizer.state,
                          epochLosses: epochLosses, counters: ["draws": draws, "fresh_views": freshViews])
        }
        var firstEpoch = 0
        if let saved = clock.checkpoints?.load() {
            if saved.epoch <= p.epochs, let generator = SeededGenerator(state: saved.rng), TrainingCheckpoints.restore(saved, into: optimizer) {
                rng = generator
                epochLosses = saved.epochLosses
                draws = saved.counters["draws"] ?? 0; freshViews = saved.counters["fresh_views"] ?? 0
                firstEpoch = saved.epoch
                clock.checkpoints?.log("resumed after epoch \(saved.epoch) of \(p.epochs) from \(clock.checkpoints!.file.path)")
            } else {
                clock.checkpoints?.log("\(clock.checkpoints!.file.path): a state of \(saved.epoch) epochs and \(saved.parameters.count) parameters does not fit this run; starting from the first epoch")
            }
        }
        for epoch in firstEpoch..<p.epochs {
            let unsupervised = epoch >= p.epochs / 2 && p.lossSet != .sup
            var total: Float = 0
            for _ in 0..<steps {
                // Views and partners drawn in one pass (the generator's order), fresh views encoded after.
                var chosen: [Cached] = [], drawn: [(image: Image, angle: Double, sample: SegmentationSample, labels: [Int32])] = []
                /// Per draw with fresh views: the labelled image, and the reused view (nil: the next of `drawn`).
                var picks: [(image: Int, reused: Cached?)] = []
                var partners: [Cached] = []
                profile.time("augment") {
                    for _ in 0..<p.batchPairs {
                        let type: Int?
                        if fresh {
                            let i = rng.int(0...(labelled.count - 1))
                            if p.viewReuse > 1, !recent[i].isEmpty, !rng.chance(1 / Double(p.viewReuse)) {
                                picks.append((i, recent[i][rng.int(0...(recent[i].count - 1))]))
                            } else {
                                picks.append((i, nil))
                                drawn.append(augment(labelled[i], augmented: true))
                            }
                            type = labelled[i].productType
                        } else {
                            chosen.append(views[rng.int(0...(views.count - 1))])
                            type = chosen.last!.productType
                        }
                        let sameType = pool.filter { $0.productType == type }
                        partners.append((sameType.isEmpty ? pool : sameType)[rng.int(0...((sameType.isEmpty ? pool : sameType).count - 1))])
                    }
                }
                draws += p.batchPairs
                freshViews += drawn.count
                if fresh {
                    var encodedViews = profile.time("encode") { drawn.map(encoded) }[...]
                    for (i, reused) in picks {
                        guard let view = reused ?? encodedViews.popFirst() else { preconditionFailure("a fresh draw without its view") }
                        chosen.append(view)
                        if reused == nil && p.viewReuse > 1 {
                            recent[i].append(view)
                            if recent[i].count > p.viewReuse { recent[i].removeFirst() }
                        }
                    }
                }
                let tape = Tape()
                // The losses take the stride-4 logits and upsample inside (fused, SegmentationLoss.supervisedUpsampled).
                let labels = chosen.flatMap { $0.labels! }
                let logits = profile.time("forward") { headLogits(chosen, on: tape) }
                var terms = [(profile.time("losses") {
                    tape.supervisedUpsampledLoss(logits: logits, labels: labels, height: size, width: size, ceWeight: 10, diceWeight: 1)
                }, Float(1))]
                if unsupervised {
                    let fractions = p.lossSet == .supEntropyHistogram
                        ? Tensor(shape: [chosen.count, classes], storage: chosen.flatMap { $0.fractions!.storage }) : nil
                    let unlabelledLogits = profile.time("forward") { headLogits(partners, on: tape) }
                    terms.append((profile.time("losses") {
                        tape.unsupervisedUpsampledLoss(logits: unlabelledLogits, height: size, width: size, entropyWeight: 10,
                                                       fractions: fractions, histogramClasses: histogram, histogramWeight: 1)
                    }, 1))
                }
                let loss = profile.time("losses") { tape.weightedSum(terms) }
                profile.time("backward") { tape.backward(from: loss) }
                profile.time("optimiser") { optimizer.update() }
                profile.steps += 1
                total += loss.value.storage[0]
            }
            epochLosses.append(total / Float(steps))
            try clock.epochEnded({ state(epoch + 1) }) { try progress(epoch, epochLosses.last!) }
        }
        if let encoder {
            // The trained batch norms' statistics for the final weights, from the unlabelled images in step-sized batches.
            encoder.recalibrate(stride(from: 0, to: pool.count, by: p.batchPairs).map { batch(pool[$0..<min($0 + p.batchPairs, pool.count)]) })
        }
        return Result(head: head, epochLosses: epochLosses, encoder: encoder?.tensors, profile: profile, draws: draws, freshViews: freshViews)
    }

    /// Concatenates [1, C, h, w] tensors into one batch.
    static func stack(_ items: [Tensor]) -> Tensor {
        let each = items[0].count
        return Tensor(shape: [items.count] + Array(items[0].shape.dropFirst())) { out in
            for (k, item) in items.enumerated() {
                item.withUnsafeBufferPointer { (out.baseAddress! + k * each).update(from: $0.baseAddress!, count: each) }
            }
        }
    }
}

extension SegmentTrain {
    /// SPEC-PSAD stage 3 (pseudo-label): the segmenter's argmax on each
    /// image, laid out [H * W] per image.
    /// `angles`: the test-time views (``pseudoLabels(_:image:taps:angles:backbone:normalization:)``).
    public static func pseudoLabels(_ head: SegmentationHead, images: [Image], backbone: any Backbone, angles: [Double] = [],
                                    normalization: ImageNormalization = .imagenet) -> [[Int32]] {
        Compute.mapAcrossThreads(images.count) { i in
            pseudoLabels(head, image: images[i], taps: backbone.features(normalization(images[i].tensor()), strides: [4, 8, 16]),
                         angles: angles, backbone: backbone, normalization: normalization)
        }
    }

    /// The same from encoder taps already computed (strides 4, 8, 16), so
    /// that one backbone pass serves the segmenter and the banks.
    public static func pseudoLabels(_ head: SegmentationHead, taps: [Int: Tensor], height: Int, width: Int) -> [Int32] {
        logits(head, taps: taps, angle: 0, height: height, width: width).argmaxChannels()
    }

    /// Test-time augmentation: the image and its views rotated by each of
    /// `angles` (radians; the coordinates rotated with each, as the labelled
    /// views were in training), each view's class probabilities rotated back
    /// to the image and summed; the argmax of the sum. A pixel a view did not
    /// see takes nothing from it (``Tensor/rotatedPlanes(by:)``), so every
    /// pixel's classes are weighed over the views that saw it. `taps` are the
    /// image's own (strides 4, 8, 16); the rotated views are encoded here.
    public static func pseudoLabels(_ head: SegmentationHead, image: Image, taps: [Int: Tensor], angles: [Double], backbone: any Backbone,
                                    normalization: ImageNormalization = .imagenet) -> [Int32] {
        guard !angles.isEmpty else { return pseudoLabels(head, taps: taps, height: image.height, width: image.width) }
        var sum = logits(head, taps: taps, angle: 0, height: image.height, width: image.width).softmaxChannels()
        for angle in angles {
            let view = image.rotated(by: angle, nearest: false)
            let viewTaps = backbone.features(normalization(view.tensor()), strides: [4, 8, 16])
            sum = sum + logits(head, taps: viewTaps, angle: angle, height: image.height, width: image.width).softmaxChannels().rotatedPlanes(by: -angle)
        }
        return sum.argmaxChannels()
    }

    /// The views of ``pseudoLabels(_:image:taps:angles:backbone:normalization:)``
    /// for `count` views and a category trained on rotations up to
    /// `rotationDegrees` either way: half that range and fractions of it,
    /// alternately either way (2 views: +-r/2; 4: +-r/4, +-r/2), so every
    /// view is one the segmenter saw the like of in training.
    public static func testTimeAngles(count: Int, rotationDegrees: Double) -> [Double] {
        precondition(count >= 0, "a negative count of test-time views")
        let pairs = (count + 1) / 2, half = rotationDegrees / 2 * Double.pi / 180
        return (0..<count).map { k in (k % 2 == 0 ? 1 : -1) * half * Double(k / 2 + 1) / Double(pairs) }
    }

    /// Class logits [1, C, height, width] of one view rotated by `angle`.
    static func logits(_ head: SegmentationHead, taps: [Int: Tensor], angle: Double, height: Int, width: Int) -> Tensor {
        guard let (_, _, h, w) = taps[4]?.nchw else { preconditionFailure("pseudo-labels need the stride-4 tap") }
        return head.predict(taps: taps, coordinates: SegmentationInput.coordinates(batch: 1, height: h, width: w, angle: angle),
                            height: height, width: width)
    }
}
