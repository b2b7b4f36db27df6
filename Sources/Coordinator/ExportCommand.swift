import ArgumentParser
import Foundation
import Scheduler
import Shared
import Stages

/// `psad-coordinator export`: one evaluation of a sweep (a category and a
/// setting) packed into a model folder that `psad-worker predict` scores
/// new images with (``InspectionExport``). Runs where the dataset is
/// readable: PatchCore's memory is computed again from the train images,
/// and the threshold is calibrated on `validation/good`.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pack a trained category (one setting of a finished sweep) into a model folder for `psad-worker predict`.",
        discussion: """
            --setting FIELD=VALUE (repeatable) picks the setting where the sweep has several, with the field names of \
            `results` (e.g. --setting memory_type=hcp --setting scale_type=max; VALUE - picks the settings without the \
            field, as combine=- the banks' sum where a sweep also lists combine max). A setting with a retrained UNet \
            (unet_epochs > 0) packs the UNet, whose masks its banks read.
            """)
    @OptionGroup var state: StateOption
    @Argument(help: "The sweep.") var sweep: String
    @Option(help: "The category.") var category: String
    @Option(name: .customLong("setting"), help: "FIELD=VALUE a setting must have (repeatable).") var settings: [String] = []
    @Option(help: "The model folder to write (must not exist).") var out: String
    @Option(help: "The share of validation/good images the threshold may call anomalous.") var fpr = 0.01

    func run() throws {
        let store = try state.open()
        let wanted = try settings.map { pair -> (String, String) in
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else { throw ValidationError("--setting \(pair): expected FIELD=VALUE") }
            return (parts[0], parts[1])
        }
        let evaluations = try store.evaluations(sweep: sweep, category: category)
        guard !evaluations.isEmpty else { throw ValidationError("sweep \(sweep) has no evaluation of category \(category)") }
        func fields(_ e: SweepEvaluation) -> [String: String] {
            let object = (try? JSONSerialization.jsonObject(with: Data(e.setting.utf8))) as? [String: Any] ?? [:]
            return object.mapValues { "\($0)" }
        }
        let matching = evaluations.filter { e in
            let f = fields(e)
            return wanted.allSatisfy { (f[$0.0] ?? "-") == $0.1 }
        }
        guard let chosen = matching.first else {
            let known = Set(evaluations.flatMap { fields($0).keys }).sorted().joined(separator: ", ")
            throw ValidationError("no setting of \(sweep)/\(category) has \(settings.joined(separator: " ")) (fields: \(known))")
        }
        if matching.count > 1 {
            let all = matching.map(fields)
            let differing = Set(all.flatMap(\.keys)).filter { k in Set(all.map { $0[k] ?? "-" }).count > 1 }.sorted()
            throw ValidationError("\(matching.count) settings of \(sweep)/\(category) match; they differ in "
                                  + differing.map { k in "\(k) (\(Set(all.map { $0[k] ?? "-" }).sorted().joined(separator: ", ")))" }.joined(separator: ", ")
                                  + ": add --setting FIELD=VALUE")
        }
        let artifacts = try ArtifactStore(root: state.url)
        func record(_ key: JobKey?, _ what: String) throws -> JobRecord {
            guard let key else { throw ValidationError("the evaluation's \(what) job is missing from the state") }
            let r = try store.record(key)
            guard r.state == .done else { throw ValidationError("the \(r.kind.rawValue) job \(key.short) is \(r.state.rawValue), not done: finish the sweep first") }
            return r
        }
        func files(_ r: JobRecord) throws -> [String: Data] {
            try r.outputs.mapValues { hash in try store.smallBlob(hash) ?? artifacts.read(hash) }
        }
        func file(_ r: JobRecord, _ name: String) throws -> Data {
            guard let data = try files(r)[name] else { throw ValidationError("the \(r.kind.rawValue) job \(r.key.short) wrote no \(name)") }
            return data
        }
        func parameters<T: Decodable>(_ r: JobRecord, as type: T.Type) throws -> T {
            try JobParameters.decode(T.self, from: Data(r.parameters.utf8), stage: r.kind.rawValue)
        }
        let evaluation = try record(chosen.job, "evaluate")
        let banks = try record(evaluation.inputs["banks"], "bank-fit")
        let patch = try record(evaluation.inputs["patch"], "patch-features")
        let masks = try record(banks.inputs["masks"], "masks")
        let pseudo = masks.kind == .unetTrain ? try record(masks.inputs["pseudo_labels"], "pseudo-label") : masks
        guard pseudo.kind == .pseudoLabel else {
            throw ValidationError("this setting's banks read \(masks.kind.rawValue) masks, which export does not know")
        }
        let segmenter = try record(pseudo.inputs["segmenter"], "segment-train")
        let inputs = InspectionExport.Inputs(
            sweep: sweep, setting: chosen.setting,
            segment: try parameters(segmenter, as: OnData<StageSettings.SegmentTrain>.self),
            pseudo: try parameters(pseudo, as: OnData<StageSettings.PseudoLabel>.self).settings,
            patch: try parameters(patch, as: OnData<StageSettings.PatchFeatures>.self),
            bank: try parameters(banks, as: OnData<StageSettings.BankFit>.self),
            evaluate: try parameters(evaluation, as: StageSettings.Evaluate.self),
            segmenter: try files(segmenter), masks: try files(masks), banks: try files(banks),
            patchScores: try file(patch, ArtifactFormat.patchScores), evaluation: try files(evaluation),
            unet: masks.kind == .unetTrain ? try parameters(masks, as: OnData<StageSettings.UNetTrain>.self) : nil)
        let d = try InspectionExport.write(inputs, to: URL(fileURLWithPath: out), targetFPR: fpr) { say("export: \($0)") }
        let c = d.calibration
        func percent(_ x: Double?) -> String { x.map { String(format: "%.1f%%", 100 * $0) } ?? "-" }
        say("""
            model written to \(out): \(d.category), \(d.memoryType)/\(d.scaleType.rawValue)\(d.combine.map { "/\($0.rawValue)" } ?? ""), threshold \(String(format: "%.6g", d.threshold))
              validation/good: \(c.validationImages) images, \(percent(c.validationFPR)) above the threshold (asked: at most \(percent(c.targetFPR)))
              test (\(c.testImages) images): good called anomalous \(percent(c.testFPR)), logical caught \(percent(c.testLogicalTPR)), structural caught \(percent(c.testStructuralTPR)); AUROC LA \(percent(c.testLogicalAUROC)) SA \(percent(c.testStructuralAUROC))
            """)
    }
}
