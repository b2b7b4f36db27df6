import Anomaly
import AtomicWrite
import ArgumentParser
import Foundation
import Models
import Shared
import Stages
import Tensor

/// `psad-worker method`: every PSAD stage for one category in this process,
/// without a coordinator (for trying the method and for benchmarks).
struct MethodCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "method",
        abstract: "Run all PSAD stages on one category in this process and print (or write) the metrics as JSON.")

    @Option(help: "Category folder in the MVTec LOCO AD layout, with psad-manifest.json.")
    var category: String

    @Option(help: "Labelled images used (the manifest's first N).")
    var nShot = 5

    @Option(help: "Segmenter training epochs.")
    var epochs = 100

    @Option(help: "Loss sets, comma-separated: sup, sup+H, sup+H+hist (one segmenter each; patch features are shared).")
    var losses = "sup+H+hist"

    @Option(help: "UNet retraining epochs (0: the banks use the segmenter's masks).")
    var unetEpochs = 0

    @Option(help: "Image size (default: the manifest's target size).")
    var imageSize: Int?

    @Option(help: "Standardisation epsilon (as sweeps; the reference uses 1e-10).")
    var epsilon = Standardizer.safeEpsilon

    @Option(help: "Memory types, comma-separated combinations of h, c, p.")
    var memoryTypes = "h,c,p,hc,hcp"

    @Option(help: "Scale types, comma-separated: max, std, none.")
    var scaleTypes = "max,none"

    @Option(help: "How the banks' scaled distances combine, comma-separated: sum (the paper's), max.")
    var combine = "sum"

    @Option(help: "The encoder: efficientnet-lite0, resnet18, wide_resnet50_2, ... (weights where PSAD_WEIGHTS points).")
    var backbone = BackboneName.efficientNetLite0.rawValue

    @Option(help: "Threads for the kernels and OpenBLAS.")
    var threads = ProcessInfo.processInfo.activeProcessorCount

    @Option(help: "Share of train patches kept in PatchCore's memory (greedy k-center coreset; 1 = all, the reference).")
    var coreset = 1.0

    @Option(help: "PatchCore's search: 0 exact (the reference); N: inverted lists (4 sqrt(patches) k-means lists), each patch searching its N nearest lists.")
    var patchProbes = 0

    @Option(help: "Rotated views the pseudo-labels average with each image's own (test-time augmentation); 0 none (the reference).")
    var ttaViews = 0

    @Option(help: "PatchCore's input side.")
    var patchImageSize = 256

    @Option(help: "How an image meets PatchCore's square input: square (resized whatever its shape, the reference) or pad (as the segmentation input).")
    var patchResize = PatchResize.square.rawValue

    @Option(help: "Augmented views per labelled image in segment-train (default 0: a fresh augmentation at every step, as the reference; N: N fixed views, cheaper).")
    var labelledViews: Int?

    @Option(help: "Draws each fresh labelled view serves on average in segment-train (default 1: a fresh view at every draw, the reference; R: a step encodes 1/R of its views and reuses recent ones).")
    var viewReuse = 1

    @Option(help: "What trains in segment-train: head (on the frozen encoder), last (also the encoder's units after its stride-8 tap) or all (every encoder weight, the reference).")
    var finetune = Finetune.head.rawValue

    @Option(help: "PatchCore's backbone (default: the encoder).")
    var patchBackbone: String?

    @Option(help: "The banks' feature backbone (default: the encoder).")
    var bankBackbone: String?

    @Option(help: "The banks' train statistic for scaling: leave-one-out (each train vector's leave-one-out nearest distance) or reference (the reference code's index quirk).")
    var trainStatistic = TrainStatisticName.leaveOneOut.rawValue

    @Option(help: "Seed.")
    var seed: UInt64 = 0

    @Option(help: "Write the result JSON here as well as printing it.")
    var out: String?

    @Option(help: "Write every stage's artifacts (masks, maps, weights, vectors, scores) under this folder.")
    var artifacts: String?

    func validate() throws {
        guard nShot >= 1 else { throw ValidationError("--n-shot must be at least 1, not \(nShot)") }
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1, not \(epochs)") }
        guard unetEpochs >= 0 else { throw ValidationError("--unet-epochs must not be negative") }
        if let imageSize, imageSize < 32 { throw ValidationError("--image-size must be at least 32, not \(imageSize)") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard epsilon > 0 else { throw ValidationError("--epsilon must be positive") }
        guard coreset > 0 && coreset <= 1 else { throw ValidationError("--coreset must be in (0, 1]") }
    }

    func run() throws {
        Compute.configure(threads: threads)
        let lossSets = try losses.split(separator: ",").map { name in
            guard let set = LossSet(rawValue: String(name)) else {
                throw ValidationError("--losses takes sup, sup+H or sup+H+hist, comma-separated; '\(name)' is none of them")
            }
            return set
        }
        guard !lossSets.isEmpty else { throw ValidationError("--losses names no loss set") }
        var settings = MethodChain.Settings()
        settings.nShot = nShot
        settings.epochs = epochs
        settings.lossSets = lossSets
        settings.seed = seed
        settings.unetEpochs = unetEpochs
        settings.imageSize = imageSize
        settings.epsilon = epsilon
        settings.coresetFraction = coreset
        guard patchProbes >= 0 else { throw ValidationError("--patch-probes must not be negative") }
        settings.patchProbes = patchProbes == 0 ? nil : patchProbes
        guard (0...Sweep.Grid.maxTTAViews).contains(ttaViews) else { throw ValidationError("--tta-views must be between 0 and \(Sweep.Grid.maxTTAViews)") }
        settings.ttaViews = ttaViews == 0 ? nil : ttaViews
        settings.memoryTypes = try memoryTypes.split(separator: ",").map { letters in
            guard let memory = MemoryCombination(String(letters)) else { throw ValidationError("--memory-types: " + MemoryCombination.invalid(letters)) }
            return memory
        }
        settings.scaleTypes = try scaleTypes.split(separator: ",").map { name in
            guard let scale = ScaleName(rawValue: String(name)) else { throw ValidationError("--scale-types: '\(name)' is not max, std or none") }
            return scale
        }
        settings.combines = try combine.split(separator: ",").map { name in
            guard let combine = BankCombine(rawValue: String(name)) else { throw ValidationError("--combine: '\(name)' is not sum or max") }
            return combine
        }
        func backboneNamed(_ name: String, _ option: String) throws -> BackboneName {
            guard let backbone = BackboneName(rawValue: name) else {
                throw ValidationError("\(option) takes \(BackboneName.allCases.map(\.rawValue).joined(separator: ", ")), not '\(name)'")
            }
            return backbone
        }
        settings.backbone = try backboneNamed(backbone, "--backbone")
        settings.patchBackbone = try patchBackbone.map { try backboneNamed($0, "--patch-backbone") }
        settings.bankBackbone = try bankBackbone.map { try backboneNamed($0, "--bank-backbone") }
        guard let statistic = TrainStatisticName(rawValue: trainStatistic) else {
            throw ValidationError("--train-statistic takes leave-one-out or reference, not '\(trainStatistic)'")
        }
        settings.trainStatistic = statistic
        guard let patchResize = PatchResize(rawValue: patchResize) else { throw ValidationError("--patch-resize takes square or pad, not '\(self.patchResize)'") }
        guard patchImageSize >= 32 else { throw ValidationError("--patch-image-size must be at least 32") }
        settings.patchResize = patchResize
        settings.patchImageSize = patchImageSize
        if let labelledViews {
            guard labelledViews >= 0 else { throw ValidationError("--labelled-views must not be negative") }
            settings.viewsPerLabelledImage = labelledViews
        }
        guard viewReuse >= 1 else { throw ValidationError("--view-reuse must be at least 1") }
        if viewReuse > 1 {
            guard (labelledViews ?? 0) == 0 else { throw ValidationError("--view-reuse applies to fresh views; --labelled-views caches them instead") }
            settings.viewReuse = viewReuse
        }
        guard let finetune = Finetune(rawValue: finetune) else { throw ValidationError("--finetune takes head, last or all, not '\(self.finetune)'") }
        if finetune != .head { settings.finetune = finetune }
        let result = try MethodChain.run(categoryRoot: URL(fileURLWithPath: category), settings: settings,
                                         artifacts: artifacts.map { URL(fileURLWithPath: $0) }) {
            FileHandle.standardError.write(Data("\($0)\n".utf8))
        }
        let data = try ArtifactFormat.encode(result)
        if let out { try AtomicFile.write(data, to: URL(fileURLWithPath: out)) }
        print(String(decoding: data, as: UTF8.self))
    }
}
