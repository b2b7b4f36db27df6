import Anomaly
import Foundation
import Models
import Shared
import Tensor
import Vision

/// One stage of the method (DESIGN.md, Stages and the DAG): typed
/// parameters, the files of the upstream stages it reads, the files and
/// metrics it writes. A sweep's worker runs one per job
/// (`Worker/StageJobs.swift` is a table of these); `psad-worker method`
/// chains the same values in one process (``MethodChain``). Nothing else
/// computes a stage.
public protocol MethodStage {
    associatedtype Parameters: Codable & Sendable
    /// The stage kind's name in the DAG and on the wire (`preprocess`, ...).
    static var name: String { get }
    static func run(_ parameters: Parameters, inputs: StageInputs, context: StageContext) throws -> StageOutput
}

extension MethodStage {
    /// Decodes the parameters from their JSON (the job's parameters as the
    /// coordinator stored them) and runs the stage.
    public static func run(json: Data, inputs: StageInputs, context: StageContext) throws -> StageOutput {
        let parameters: Parameters
        do { parameters = try JobParameters.decode(Parameters.self, from: json, stage: name) } catch let e as ParameterError { throw StageError(e.description) }
        return try run(parameters, inputs: inputs, context: context)
    }
}

/// A stage that cannot succeed with these inputs (`permanent`: bad data or
/// parameters, retrying cannot help) or could not this time.
public struct StageError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public let permanent: Bool
    public init(_ description: String, permanent: Bool = true) { self.description = description; self.permanent = permanent }
}

/// Upstream stages' files, by the role the DAG gives them (`segmenter`,
/// `masks`, ...) and then by file name.
public struct StageInputs: Sendable {
    public var files: [String: [String: Data]]
    public init(_ files: [String: [String: Data]] = [:]) { self.files = files }

    public func role(_ role: String) throws -> [String: Data] {
        guard let files = files[role] else { throw StageError("the job has no input '\(role)'", permanent: false) }
        return files
    }

    public func file(_ role: String, _ name: String) throws -> Data {
        guard let data = try self.role(role)[name] else { throw StageError("input '\(role)' has no file '\(name)'", permanent: false) }
        return data
    }
}

/// What a stage writes: files by name (artifacts; `ArtifactFormat` names
/// them) and metrics the coordinator stores.
public struct StageOutput: Sendable {
    public var files: [String: Data] = [:]
    public var metrics: [String: Double] = [:]
    /// A training stage's time and arithmetic per step phase, for benchmarks
    /// and logs; it is neither sent nor stored (it differs between runs that
    /// agree, and replicate runs are compared on files and metrics).
    public var profile: StepProfile?
    public init(files: [String: Data] = [:], metrics: [String: Double] = [:]) { self.files = files; self.metrics = metrics }
}

/// What a stage gets from the process it runs in: where to report
/// progress, whether to stop, the backbones (loaded once per process), and
/// an optional cache of encoder taps for a chain that runs several stages
/// on the same images in one process.
public final class StageContext: @unchecked Sendable {
    /// done, total, unit (e.g. 3, 100, "epochs").
    public typealias Progress = @Sendable (Int, Int, String) -> Void
    public let progress: Progress
    /// True once the job is no longer wanted (its lease lost or cancelled):
    /// the stage stops at its next ``advance(_:_:_:)``.
    public let isCancelled: @Sendable () -> Bool
    /// Where a training stage keeps its state between epochs and resumes
    /// from (a worker's job); nil: none kept.
    public let checkpoints: TrainingCheckpoints?
    private let lock = NSLock()
    private var backbones: [BackboneName: any Backbone] = [:]
    private var taps: [String: [[Int: Tensor]]]?

    /// - Parameter cacheTaps: keep every image's encoder taps for later
    ///   stages of this process (an in-process chain; memory grows with the
    ///   category).
    public init(progress: @escaping Progress = { _, _, _ in }, cacheTaps: Bool = false, isCancelled: @escaping @Sendable () -> Bool = { false },
                checkpoints: TrainingCheckpoints? = nil) {
        self.progress = progress
        self.isCancelled = isCancelled
        self.checkpoints = checkpoints
        self.taps = cacheTaps ? [:] : nil
    }

    /// Reports progress, or throws ``StageCancelled`` where the job is no
    /// longer wanted: every long stage calls it between its steps (epochs,
    /// blocks of images), so an abandoned job frees its core and memory
    /// within one step instead of running on beside the next job.
    public func advance(_ done: Int, _ total: Int, _ unit: String) throws {
        if isCancelled() { throw StageCancelled(done: done, total: total, unit: unit) }
        progress(done, total, unit)
    }

    /// Whether taps are kept for later stages of this process.
    public var cachesTaps: Bool { lock.lock(); defer { lock.unlock() }; return taps != nil }

    public func backbone(_ name: BackboneName) throws -> any Backbone {
        lock.lock(); defer { lock.unlock() }
        if let loaded = backbones[name] { return loaded }
        let loaded = try name.load()
        backbones[name] = loaded
        return loaded
    }

    /// The encoder's taps of the category's train images (`.train`) or test
    /// images in test order (`.test`), computed, or in a caching context
    /// reused from an earlier stage of this process.
    public enum Images: String { case train, test }

    /// - Parameter loaded: those images where the stage has read them already.
    func taps(_ images: Images, of input: CategoryInput, backbone name: BackboneName, loaded: [Image]? = nil) throws -> [[Int: Tensor]] {
        let key = "\(input.root.path)|\(input.size)|\(input.prep.fit.rawValue)|\(name.rawValue)|\(images.rawValue)"
        lock.lock()
        if let cached = taps?[key] { lock.unlock(); return cached }
        lock.unlock()
        let backbone = try self.backbone(name)
        let computed = CategoryInput.taps(try loaded ?? (images == .train ? input.images(.train) : input.testImages()), backbone: backbone)
        lock.lock(); defer { lock.unlock() }
        if taps != nil { taps![key] = computed }
        return computed
    }
}

extension BackboneName {
    public func load() throws -> any Backbone { try load(weights: weights()) }

    /// The installed ImageNet weights.
    public func weights() throws -> WeightSet {
        if let variant { return try EfficientNetLite.pretrainedWeights(variant: variant) }
        return try ResNet.pretrainedWeights(try resNetConfig())
    }

    /// The installed weight file.
    public func weightsFile() throws -> URL {
        if let variant { return try EfficientNetLite.pretrainedWeightsFile(variant: variant) }
        return try ResNet.pretrainedWeightsFile(try resNetConfig())
    }

    /// The network from `weights` (the installed ones, or those with fine-tuned units laid over them).
    public func load(weights: WeightSet) throws -> any FineTunable {
        if let variant { return try EfficientNetLite(variant: variant, weights: weights) }
        return try ResNet(try resNetConfig(), weights: weights, depth: 3)
    }

    /// The segmentation encoder with the units `finetune` trains, from the
    /// installed weights (nil for `head`: nothing of the encoder trains).
    public func trainingEncoder(_ finetune: Finetune) throws -> FineTunedEncoder? {
        if finetune == .head { return nil }
        let weights = try weights()
        return try FineTunedEncoder(try load(weights: weights), weights: weights, trainedAfter: finetune == .last ? 8 : nil, taps: [4, 8, 16])
    }

    var variant: Int? {
        switch self {
        case .efficientNetLite0: 0
        case .efficientNetLite1: 1
        case .efficientNetLite2: 2
        case .resnet18, .resnet50, .resnet101, .wideResnet50, .wideResnet101: nil
        }
    }

    func resNetConfig() throws -> ResNet.Config {
        guard let config = ResNet.Config.all.first(where: { $0.name == rawValue }) else {
            throw StageError("no ResNet configuration for backbone '\(rawValue)'")
        }
        return config
    }
}

extension DataFields {
    public var root: URL { URL(fileURLWithPath: dataset).appendingPathComponent(category) }
    public func input() throws -> CategoryInput { try CategoryInput(root: root, imageSize: imageSize) }
}

extension ScaleType {
    /// The job model's name for it.
    public init(_ name: ScaleName) { self = ScaleType(rawValue: name.rawValue)! }
}

extension MemoryType {
    /// The job model's combination.
    public init(_ combination: MemoryCombination) { self = MemoryType(combination.letters)! }
}

/// A stage stopped because its job is no longer wanted.
public struct StageCancelled: Error, CustomStringConvertible {
    public let done: Int, total: Int, unit: String
    public var description: String { "cancelled after \(done) of \(total) \(unit)" }
}
