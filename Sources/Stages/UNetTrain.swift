import Models
import Tensor
import Vision

/// SPEC-PSAD stage 3 (unet-train): a UNet trained from scratch on the
/// pseudo-labels of the train images — 10 L_ce + L_dice, AdamW, random
/// flips on both axes, rotation and colour augmentation, the coordinate
/// channels following each view's content — whose argmax then
/// gives the part masks the banks use.
public enum UNetTrain {
    public struct Parameters: Codable, Equatable, Sendable {
        public var width = 16
        public var depth = 4
        public var epochs = 300
        public var batch = 8
        public var learningRate: Float = 1e-3
        public var weightDecay: Float = 0.01
        public var rotationDegrees = 20.0
        public var seed: UInt64 = 0
        public init() {}
    }

    public struct Result {
        public let net: UNet
        public let epochLosses: [Float]
        /// Time and arithmetic of the steps' phases (augment, forward, losses, backward, optimiser).
        public let profile: StepProfile
    }

    /// - Parameter checkpoints: where the run keeps its state between epochs
    ///   and resumes from; `progress` throwing (the job stopped) saves first.
    public static func run(images: [Image], labels: [[Int32]], classes: Int, parameters p: Parameters,
                           checkpoints: TrainingCheckpoints? = nil,
                           progress: (Int, Float) throws -> Void = { _, _ in }) rethrows -> Result {
        precondition(!images.isEmpty && images.count == labels.count)
        let (h, w) = (images[0].height, images[0].width)
        let net = UNet(width: p.width, depth: p.depth, classes: classes, seed: p.seed)
        let optimizer = AdamW(parameters: net.parameters, learningRate: p.learningRate, weightDecay: p.weightDecay)
        var rng = SeededGenerator(seed: p.seed &+ 7)
        var epochLosses: [Float] = []
        var profile = StepProfile()
        var clock = CheckpointClock(checkpoints)
        func state(_ epochsDone: Int) -> TrainingState {
            TrainingState(epoch: epochsDone, rng: rng.state, parameters: optimizer.parameters.map(\.value),
                          buffers: net.runningStatistics, optimizer: optimizer.state, epochLosses: epochLosses)
        }
        var firstEpoch = 0
        if let saved = clock.checkpoints?.load() {
            let before = net.runningStatistics
            if saved.epoch <= p.epochs, let generator = SeededGenerator(state: saved.rng), net.restoreRunningStatistics(saved.buffers),
               TrainingCheckpoints.restore(saved, into: optimizer) {
                rng = generator
                epochLosses = saved.epochLosses
                firstEpoch = saved.epoch
                clock.checkpoints?.log("resumed after epoch \(saved.epoch) of \(p.epochs) from \(clock.checkpoints!.file.path)")
            } else {
                _ = net.restoreRunningStatistics(before)
                clock.checkpoints?.log("\(clock.checkpoints!.file.path): a state of \(saved.epoch) epochs and \(saved.parameters.count) parameters does not fit this run; starting from the first epoch")
            }
        }
        for epoch in firstEpoch..<p.epochs {
            var order = Array(images.indices)
            order.shuffle(using: &rng)
            var total: Float = 0, steps = 0
            for first in stride(from: 0, to: order.count, by: p.batch) {
                let chosen = order[first..<min(first + p.batch, order.count)]
                var batchImages: [Float] = [], batchLabels: [Int32] = [], views: [SegmentationInput.View] = []
                profile.time("augment") {
                    for i in chosen {
                        var image = images[i]
                        var mask = Image(width: w, height: h, channels: 1, pixels: labels[i].map { UInt8($0) })
                        // Random flips on both axes, then a rotation; the coordinates follow the content.
                        var view = SegmentationInput.View(flipX: rng.chance(0.5), flipY: rng.chance(0.5))
                        if view.flipX { image = image.flippedHorizontally(); mask = mask.flippedHorizontally() }
                        if view.flipY { image = image.flippedVertically(); mask = mask.flippedVertically() }
                        view.angle = (2 * Double(rng.nextUniform()) - 1) * p.rotationDegrees * Double.pi / 180
                        image = image.rotated(by: view.angle, nearest: false).colourAugmented(&rng)
                        mask = mask.rotated(by: view.angle, nearest: true)
                        batchImages += image.tensor().storage
                        batchLabels += mask.pixels.map { Int32($0) }
                        views.append(view)
                    }
                }
                let x = Tensor(shape: [chosen.count, images[0].channels, h, w], storage: batchImages)
                let tape = Tape()
                let z = profile.time("forward") { net.logits(x, views: views, on: tape) }
                let loss = profile.time("losses") {
                    let onehot = Tensor.oneHot(batchLabels, batch: chosen.count, height: h, width: w, classes: classes)
                    return tape.weightedSum([(tape.crossEntropy(logits: z, labels: batchLabels), 10),
                                             (tape.dice(probabilities: tape.softmaxChannels(z), target: onehot), 1)])
                }
                profile.time("backward") { tape.backward(from: loss) }
                profile.time("optimiser") { optimizer.update() }
                profile.steps += 1
                total += loss.value.storage[0]
                steps += 1
            }
            epochLosses.append(total / Float(steps))
            try clock.epochEnded({ state(epoch + 1) }) { try progress(epoch, epochLosses.last!) }
        }
        return Result(net: net, epochLosses: epochLosses, profile: profile)
    }

    /// The masks the banks use: the UNet's argmax on each image.
    public static func masks(_ net: UNet, images: [Image]) -> [[Int32]] {
        images.map { net.predict($0.tensor()).argmaxChannels() }
    }
}
