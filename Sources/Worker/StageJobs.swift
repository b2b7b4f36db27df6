import Foundation
import Shared
import Stages
import Vision

/// Runs one method stage job: the stage kind's ``MethodStage`` from
/// `Stages` (the same values `psad-worker method` chains), its parameters
/// decoded once from the job, its inputs the upstream jobs' artifacts.
///
/// Bad input (a dataset error, an unreadable image or annotation, a
/// parameter the stage cannot take) fails the job permanently: retrying
/// cannot fix it.
enum StageJobs {
    /// Stage kind -> the stage that runs it.
    static let stages: [StageKind: any MethodStage.Type] = [
        .preprocess: PreprocessStage.self, .segmentTrain: SegmentTrainStage.self, .pseudoLabel: PseudoLabelStage.self,
        .unetTrain: UNetTrainStage.self, .patchFeatures: PatchFeaturesStage.self, .bankFit: BankFitStage.self,
        .evaluate: EvaluateStage.self,
    ]
    static let kinds: [StageKind] = StageKind.allCases.filter { stages[$0] != nil }

    /// Where a stage says how far it is: done, total, unit.
    typealias ProgressSink = @Sendable (Int, Int, String) -> Void

    /// `cancelled`: true once the job is abandoned; the stage stops at its next step.
    /// `checkpoints`: where a training stage keeps its state between epochs
    /// (and resumes from); forgotten once the stage has finished.
    static func run(_ message: WireMessage.Job, inputs: [String: [String: Data]], progress: @escaping ProgressSink = { _, _, _ in },
                    checkpoints: TrainingCheckpoints? = nil, cancelled: @escaping @Sendable () -> Bool = { false }) -> StageOutcome {
        do {
            guard let stage = stages[message.kind] else { throw StageError("\(message.kind.rawValue) jobs are not method stages") }
            let json = Data(message.parameters.utf8)
            try checkData(json)
            let output = try stage.run(json: json, inputs: StageInputs(inputs),
                                       context: StageContext(progress: progress, isCancelled: cancelled, checkpoints: checkpoints))
            checkpoints?.remove()
            return StageOutcome(outputs: output.files, metrics: output.metrics)
        } catch let e as StageError {
            return StageOutcome(error: e.description, permanent: e.permanent)
        } catch let e as ParameterError {
            return StageOutcome(error: e.description, permanent: true)
        } catch let e as DatasetError {
            return StageOutcome(error: "\(e)", permanent: true)
        } catch let e as PNGError {
            return StageOutcome(error: "\(e)", permanent: true)
        } catch {
            return StageOutcome(error: "\(error)", permanent: false)
        }
    }

    /// Where the sweep recorded the category folder's digest at submit, the
    /// folder this worker sees must still have it (or the job would compute
    /// from other data under the key).
    static func checkData(_ json: Data) throws {
        struct Recorded: Decodable { let dataset: String?, category: String?, dataDigest: String? }
        let recorded = try JobParameters.decode(Recorded.self, from: json, stage: "data check")
        guard let dataset = recorded.dataset, let category = recorded.category, let expected = recorded.dataDigest else { return }
        let root = URL(fileURLWithPath: dataset).appendingPathComponent(category)
        let here: DatasetDigest.Summary
        do { here = try DatasetDigest.of(categoryAt: root) } catch { throw StageError("\(error)") }
        guard here.hex == expected else {
            throw StageError("\(root.path) is not the data this sweep was submitted with (digest \(here.hex.prefix(12)) "
                             + "here over \(here.files) files, \(expected.prefix(12)) at submit): it changed since, or this worker "
                             + "sees other files at that path; submit again to compute from what is there now")
        }
    }
}
