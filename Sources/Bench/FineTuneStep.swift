import ArgumentParser
import Foundation
import Models
import Tensor

/// One segment-train step with what trains: the head alone on cached taps,
/// or the encoder's units after stride 8 (`last`) or all of them with it —
/// forward, the supervised loss on upsampled logits, backward, AdamW. Time
/// per step of `batch` images and peak memory, one setting per process;
/// ops/bench/finetune sets PyTorch's same step beside it.
struct FineTuneStep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune-step",
        abstract: "A segment-train step (head, last or all of the encoder trained) on random weights: ms per step and peak memory.")

    @Option(help: "efficientnet-lite0, efficientnet-lite2 or resnet18.")
    var network = "efficientnet-lite0"

    @Option(help: "head, last or all.")
    var train = "all"

    @Option(help: "Threads for the kernels and OpenBLAS.")
    var threads = 2

    @Option(help: "Images per step (segment-train's 5 labelled views).")
    var batch = 5

    @Option(help: "Image side.")
    var size = 256

    @Option(help: "Part classes.")
    var classes = 8

    @Option(help: "Minimum seconds measured (the best step is reported).")
    var seconds = 10.0

    func run() throws {
        Compute.configure(threads: threads)
        let weights = WeightSet(randomSeed: 1)
        let net: any FineTunable = switch network {
        case "efficientnet-lite0": try EfficientNetLite(variant: 0, weights: weights)
        case "efficientnet-lite2": try EfficientNetLite(variant: 2, weights: weights)
        case "resnet18": try ResNet(.resnet18, weights: weights, depth: 3)
        default: throw ValidationError("unknown network '\(network)'")
        }
        guard ["head", "last", "all"].contains(train) else { throw ValidationError("--train takes head, last or all") }
        let encoder = train == "head" ? nil
            : try FineTunedEncoder(net, weights: WeightSet(randomSeed: 1), trainedAfter: train == "last" ? 8 : nil, taps: [4, 8, 16])
        var rng = SeededGenerator(seed: 2)
        let images = Tensor.randomNormal([batch, 3, size, size], generator: &rng)
        let labels = (0..<(batch * size * size)).map { _ in Int32(rng.int(0...(classes - 1))) }
        // What a step starts from: cached taps (head), the frozen prefix (last), the images (all).
        let cached = encoder?.prefix(images) ?? net.features(images, strides: [4, 8, 16])
        let channels = net.channels[4]! + net.channels[8]! + net.channels[16]! + 2
        let head = SegmentationHead(inputChannels: channels, classes: classes, seed: 3)
        let optimizer = AdamW(parameters: head.parameters + (encoder?.parameters ?? []), learningRate: 1e-3, weightDecay: 0.01)
        let h4 = size / 4
        let coordinates = SegmentationInput.coordinates(batch: batch, height: h4, width: h4)
        let best = bestTime(seconds: seconds, minimumRuns: 3) {
            let tape = Tape()
            let taps = encoder.map { $0(cached, on: tape) } ?? cached.mapValues { tape.constant($0) }
            let logits = head.logits(taps: taps, coordinates: tape.constant(coordinates), on: tape)
            let loss = tape.supervisedUpsampledLoss(logits: logits, labels: labels, height: size, width: size,
                                                    ceWeight: 10, diceWeight: 1)
            tape.backward(from: loss)
            optimizer.update()
        }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let line: [String: Any] = ["name": "\(network) \(train)", "ms_per_step": best * 1000, "peak_mib": Double(usage.ru_maxrss) / 1024,
                                   "impl": "psad-swift", "threads": threads]
        print(String(decoding: try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]), as: UTF8.self))
    }
}
