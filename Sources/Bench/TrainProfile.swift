import ArgumentParser
import Foundation
import Shared
import Stages
import Tensor

/// segment-train and unet-train on a real category, the stages' own code
/// (`SegmentTrainStage`, `PseudoLabelStage` for the UNet's labels,
/// `UNetTrainStage`): milliseconds per step in each phase (augment,
/// encode, forward, losses, backward, optimiser), the share of the step,
/// and the phase's achieved GFLOP/s (GEMM and depthwise arithmetic as
/// ``FlopCounter`` counts it) beside the same process's sgemm, measured
/// before and after the stages (the better figure).
struct TrainProfile: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-profile",
        abstract: "Per-phase time and GFLOP/s of segment-train and unet-train steps on a category, against the same run's sgemm.")

    @Option(help: "The category folder (MVTec LOCO layout).")
    var category: String

    @Option(help: "segment-train epochs (the second half adds the unlabelled losses).")
    var epochs = 4

    @Option(help: "unet-train epochs (0 skips it).")
    var unetEpochs = 2

    @Option(help: "head, last or all.")
    var finetune = "head"

    @Option(help: "Cached labelled views per image (0: a fresh view every draw, the default).")
    var labelledViews = 0

    @Option(help: "Draws each fresh labelled view serves on average (1: a fresh view every draw, the default).")
    var viewReuse = 1

    @Option(help: "The segmentation input's side in pixels (default: the category manifest's target size).")
    var imageSize: Int?

    @Option(help: "Threads for the kernels and OpenBLAS.")
    var threads = 1

    @Option(help: "Seconds per sgemm measurement.")
    var seconds = 2.0

    func run() throws {
        Compute.configure(threads: threads)
        guard let finetune = Finetune(rawValue: finetune) else { throw ValidationError("--finetune takes head, last or all") }
        guard viewReuse >= 1, viewReuse == 1 || labelledViews == 0 else {
            throw ValidationError("--view-reuse must be at least 1, and applies to fresh views (--labelled-views 0)")
        }
        let root = URL(fileURLWithPath: category).standardizedFileURL
        if let imageSize, imageSize < 32 { throw ValidationError("--image-size must be at least 32") }
        let size = try CategoryInput(root: root, imageSize: imageSize).size
        let data = DataFields(dataset: root.deletingLastPathComponent().path, category: root.lastPathComponent, imageSize: size)
        let context = StageContext()
        let peak = sgemm()
        let segmenter = try SegmentTrainStage.run(
            OnData(data, .init(backbone: .efficientNetLite0, nShot: 5, epochs: epochs, lossSet: .supEntropyHistogram, seed: 0,
                               viewsPerLabelledImage: labelledViews, finetune: finetune, viewReuse: viewReuse)),
            inputs: StageInputs(), context: context)
        var profiles = [("segment-train", segmenter.profile!)]
        if unetEpochs > 0 {
            let pseudo = try PseudoLabelStage.run(OnData(data, .init(backbone: .efficientNetLite0)),
                                                  inputs: StageInputs(["segmenter": segmenter.files]), context: context)
            let unet = try UNetTrainStage.run(OnData(data, .init(unetEpochs: unetEpochs, seed: 0)),
                                              inputs: StageInputs(["pseudo_labels": pseudo.files]), context: context)
            profiles.append(("unet-train", unet.profile!))
        }
        let sgemmGflops = max(peak, sgemm())
        print(json(["name": "sgemm 1024x1024x1024", "gflops": sgemmGflops, "threads": threads, "machine": Compute.machineKind]))
        for (stage, profile) in profiles {
            let steps = Double(profile.steps), stepSeconds = profile.seconds / steps
            let whole = StepProfile.Phase(seconds: profile.seconds, flops: profile.order.reduce(0.0) { $0 + profile.phases[$1]!.flops })
            for name in profile.order + ["step"] {
                let phase: StepProfile.Phase = name == "step" ? whole : profile.phases[name]!
                let perStep = phase.seconds / steps
                let fields: [String: Any] = [
                    "stage": stage, "phase": name, "steps": profile.steps, "ms_per_step": perStep * 1000, "share": perStep / stepSeconds,
                    "gflop_per_step": phase.flops / steps / 1e9, "gflops": phase.gflopsPerSecond,
                    "of_sgemm": phase.gflopsPerSecond / sgemmGflops, "threads": threads]
                print(json(fields))
            }
        }
    }

    /// Best GFLOP/s of a 1024-cube sgemm over `seconds`.
    func sgemm() -> Double {
        var rng = SeededGenerator(seed: 1)
        let a = Tensor.randomNormal([1024, 1024], generator: &rng), b = Tensor.randomNormal([1024, 1024], generator: &rng)
        return 2.0 * 1024 * 1024 * 1024 / bestTime(seconds: seconds, minimumRuns: 3) { _ = Tensor.matmul(a, b) } / 1e9
    }

    func json(_ fields: [String: Any]) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]), as: UTF8.self)
    }
}
