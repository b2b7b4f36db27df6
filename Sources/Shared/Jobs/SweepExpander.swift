/// A job of an expanded sweep: its key, what it runs, and what feeds it.
public struct PlannedJob: Equatable, Sendable {
    public let key: JobKey
    public let kind: StageKind
    public let category: String
    /// Only the parameters this stage reads (they are in its key).
    public let parameters: [String: ParameterValue]
    /// Input role -> the key of the job that produces it.
    public let inputs: [String: JobKey]
}

/// One evaluate job of a sweep and the full setting it scores (for results).
public struct PlannedEvaluation: Equatable, Sendable {
    public let key: JobKey
    public let category: String
    /// The setting as canonical JSON (kept as text: a large sweep has ~10^5 of them).
    public let setting: String

    init(key: JobKey, category: String, setting: EvaluationSetting) {
        self.key = key; self.category = category; self.setting = setting.canonicalJSON
    }
}

/// A sweep expanded into its DAG: each distinct job once, inputs before
/// the jobs that read them. Either collected (``SweepExpander/expand(_:)``)
/// or handed on one by one as they are found (``SweepExpander/stream(_:job:evaluation:)``,
/// which keeps only the set of keys seen: a 100,000-job sweep is submitted
/// without holding its plan).
public struct SweepPlan {
    public var jobs: [PlannedJob] = []
    public var evaluations: [PlannedEvaluation] = []
    var seen: Set<JobKey> = []
    var onJob: ((PlannedJob) -> Void)?
    var onEvaluation: ((PlannedEvaluation) -> Void)?

    /// Adds a method stage's job: its parameters as the key hashes them (``ParameterEncoder``).
    mutating func add(_ kind: StageKind, category: String, _ parameters: some Encodable, inputs: [String: JobKey] = [:]) -> JobKey {
        add(kind, category: category, ParameterEncoder.parameters(parameters), inputs: inputs)
    }

    /// Adds the job unless an equal key is already planned; returns its key.
    mutating func add(_ kind: StageKind, category: String, _ parameters: [String: ParameterValue], inputs: [String: JobKey] = [:]) -> JobKey {
        let key = JobKey.of(kind: kind, parameters: parameters, inputs: inputs)
        guard seen.insert(key).inserted else { return key }
        let job = PlannedJob(key: key, kind: kind, category: category, parameters: parameters, inputs: inputs)
        if let onJob { onJob(job) } else { jobs.append(job) }
        return key
    }

    mutating func add(_ evaluation: PlannedEvaluation) {
        if let onEvaluation { onEvaluation(evaluation) } else { evaluations.append(evaluation) }
    }
}

/// Expands a sweep into stage jobs per category x setting (DESIGN.md,
/// Stages and the DAG). Each stage's key holds only what it reads, so
/// shared upstream work is one job: patch-features once per category
/// (and patch backbone, image size, less-normal fraction), segment-train once
/// per n_shot / epochs / loss set / seed, evaluate per memory and scale type.
public enum SweepExpander {
    public static func expand(_ sweep: Sweep) -> SweepPlan {
        var plan = SweepPlan()
        expand(sweep, into: &plan)
        return plan
    }

    /// Hands each distinct job (inputs first) and each evaluation to the closures as found.
    public static func stream(_ sweep: Sweep, job: @escaping (PlannedJob) -> Void, evaluation: @escaping (PlannedEvaluation) -> Void) {
        var plan = SweepPlan()
        plan.onJob = job
        plan.onEvaluation = evaluation
        expand(sweep, into: &plan)
    }

    static func expand(_ sweep: Sweep, into plan: inout SweepPlan) {
        if let d = sweep.diagnostic {
            var previous: JobKey?
            for i in 0..<d.jobs {
                let fails = d.failEvery > 0 && (i + 1) % d.failEvery == 0
                var parameters: [String: ParameterValue] = [
                    "sweep": .string(sweep.name), "index": .int(i), "seconds": .double(d.seconds),
                    "fail": .string(fails ? (d.permanent ? "permanent" : "transient") : "none"),
                    "fail_while_exists": .string(d.failWhileExists ?? "")]
                if d.outputs > 0 { parameters["outputs"] = .int(d.outputs) }
                if d.outputBytes > 0 { parameters["output_bytes"] = .int(d.outputBytes) }
                let inputs = d.chained ? previous.map { ["previous": $0] } ?? [:] : [:]
                previous = plan.add(.diagnostic, category: "diagnostic", parameters, inputs: inputs)
            }
            return
        }
        let g = sweep.grid
        for category in sweep.categories {
            for size in g.imageSizes {
                // Where the images are: every stage that reads them carries it
                // (already implied by its inputs' keys, so sharing is unchanged).
                // The data's content where the coordinator could read it: a changed
                // folder is new work, and each stage checks it reads the same files.
                let data = DataFields(dataset: sweep.dataset, category: category, imageSize: size, run: sweep.run,
                                      dataDigest: sweep.dataDigests[category])
                let prep = plan.add(.preprocess, category: category, OnData(data, StageSettings.None()))
                // n_shot is "up to N": where the coordinator counted the labelled
                // images, the key holds what the stage will use.
                func shots(_ n: Int) -> Int { min(n, sweep.dataSizes[category]?.labelled ?? n) }
                for encoder in g.backbones {
                    for fraction in g.lessNormalFractions { for coreset in g.coresetFractions { for patchBackbone in g.patchBackbones ?? [encoder] {
                    for patchSize in g.patchImageSizes { for patchResize in g.patchResizes {
                    for probes in Set(g.patchProbes.map { $0.map { $0 == 0 ? nil : $0 } } ?? [nil]).sorted(by: { ($0 ?? 0) < ($1 ?? 0) }) {
                        let patch = plan.add(.patchFeatures, category: category,
                                             OnData(data, StageSettings.PatchFeatures(backbone: patchBackbone, patchImageSize: patchSize,
                                                                                      patchResize: patchResize, lessNormalFraction: fraction,
                                                                                      coresetFraction: coreset, patchProbes: probes)),
                                             inputs: ["preprocessed": prep])
                        for nShot in g.nShot { for epochs in g.epochs { for lossSet in g.lossSets { for seed in g.seeds {
                        for views in g.labelledViews.map({ $0.map(Optional.some) }) ?? [nil] {
                        for finetune in g.finetunes.map({ $0.map(Optional.some) }) ?? [nil] {
                        for reuse in Set(g.viewReuse.map { $0.map { $0 == 1 ? nil : $0 } } ?? [nil]).sorted(by: { ($0 ?? 1) < ($1 ?? 1) }) {
                            let segment = plan.add(.segmentTrain, category: category,
                                                   OnData(data, StageSettings.SegmentTrain(backbone: encoder, nShot: shots(nShot), epochs: epochs,
                                                                                           lossSet: lossSet, seed: UInt64(seed),
                                                                                           viewsPerLabelledImage: views, finetune: finetune,
                                                                                           viewReuse: reuse)),
                                                   inputs: ["preprocessed": prep])
                            for tta in Set(g.ttaViews.map { $0.map { $0 == 0 ? nil : $0 } } ?? [nil]).sorted(by: { ($0 ?? 0) < ($1 ?? 0) }) {
                            let pseudo = plan.add(.pseudoLabel, category: category, OnData(data, StageSettings.PseudoLabel(backbone: encoder, ttaViews: tta)),
                                                  inputs: ["segmenter": segment])
                            for unetEpochs in g.unetEpochs {
                                let masks = unetEpochs == 0 ? pseudo
                                    : plan.add(.unetTrain, category: category, OnData(data, StageSettings.UNetTrain(unetEpochs: unetEpochs, seed: UInt64(seed))),
                                               inputs: ["pseudo_labels": pseudo])
                                for epsilon in g.epsilons { for statistic in g.trainStatistics { for bankBackbone in g.bankBackbones ?? [encoder] {
                                    let bank = plan.add(.bankFit, category: category,
                                                        OnData(data, StageSettings.BankFit(backbone: bankBackbone, epsilon: epsilon,
                                                                                           trainStatistic: statistic,
                                                                                           lessNormalFraction: fraction)),
                                                        inputs: ["masks": masks, "preprocessed": prep])
                                    for memory in g.memoryTypes { for scale in g.scaleTypes {
                                    // One bank's maximum is its sum: the same evaluation.
                                    for combine in Set((memory.letters.count == 1 ? [.sum] : g.combines ?? [.sum]).map { $0 == .sum ? nil : $0 })
                                        .sorted(by: { ($0?.rawValue ?? "") < ($1?.rawValue ?? "") }) {
                                        let evaluate = plan.add(.evaluate, category: category,
                                                                StageSettings.Evaluate(memoryType: memory, scaleType: scale, combine: combine),
                                                                inputs: ["banks": bank, "patch": patch])
                                        plan.add(PlannedEvaluation(key: evaluate, category: category, setting: EvaluationSetting(
                                            imageSize: size, backbone: encoder, lessNormalFraction: fraction, nShot: nShot, epochs: epochs,
                                            lossSet: lossSet, seed: seed, unetEpochs: unetEpochs, epsilon: epsilon, trainStatistic: statistic,
                                            memoryType: memory, scaleType: scale, coresetFraction: coreset, patchBackbone: patchBackbone,
                                            bankBackbone: bankBackbone, patchImageSize: patchSize, patchResize: patchResize,
                                            labelledViews: views, finetune: finetune, patchProbes: probes, ttaViews: tta,
                                            viewReuse: reuse, combine: combine)))
                                    } } }
                                } } }
                            }
                            }
                        }
                        }
                        }
                        } } } }
                    } } }
                    } } }
                }
            }
        }
    }
}

/// The full setting an evaluation scores, as results record it: each field
/// under its snake_case name (``ParameterEncoder``), in canonical JSON.
public struct EvaluationSetting: Codable, Hashable, Sendable {
    public var imageSize: Int
    public var backbone: BackboneName
    public var lessNormalFraction: Double
    public var nShot: Int
    public var epochs: Int
    public var lossSet: LossSet
    public var seed: Int
    public var unetEpochs: Int
    public var epsilon: Double
    public var trainStatistic: TrainStatisticName
    public var memoryType: MemoryCombination
    public var scaleType: ScaleName
    public var coresetFraction: Double
    public var patchBackbone: BackboneName
    public var bankBackbone: BackboneName
    public var patchImageSize: Int
    public var patchResize: PatchResize
    /// Set only where the grid names them (absent: segment-train's defaults).
    public var labelledViews: Int?
    public var finetune: Finetune?
    /// Set only where the grid names a search other than exact.
    public var patchProbes: Int?
    /// Set only where the grid names test-time views.
    public var ttaViews: Int?
    /// Set only where the grid names a view reuse above 1.
    public var viewReuse: Int?
    /// Set only where the grid names a combination other than the sum.
    public var combine: BankCombine?

    public init(imageSize: Int, backbone: BackboneName, lessNormalFraction: Double, nShot: Int, epochs: Int, lossSet: LossSet,
                seed: Int, unetEpochs: Int, epsilon: Double, trainStatistic: TrainStatisticName, memoryType: MemoryCombination,
                scaleType: ScaleName, coresetFraction: Double, patchBackbone: BackboneName, bankBackbone: BackboneName,
                patchImageSize: Int, patchResize: PatchResize, labelledViews: Int? = nil, finetune: Finetune? = nil,
                patchProbes: Int? = nil, ttaViews: Int? = nil, viewReuse: Int? = nil, combine: BankCombine? = nil) {
        self.imageSize = imageSize; self.backbone = backbone; self.lessNormalFraction = lessNormalFraction; self.nShot = nShot
        self.epochs = epochs; self.lossSet = lossSet; self.seed = seed; self.unetEpochs = unetEpochs; self.epsilon = epsilon
        self.trainStatistic = trainStatistic; self.memoryType = memoryType; self.scaleType = scaleType
        self.coresetFraction = coresetFraction; self.patchBackbone = patchBackbone; self.bankBackbone = bankBackbone
        self.patchImageSize = patchImageSize; self.patchResize = patchResize; self.labelledViews = labelledViews
        self.finetune = finetune; self.patchProbes = patchProbes; self.ttaViews = ttaViews; self.viewReuse = viewReuse
        self.combine = combine == .sum ? nil : combine
    }

    /// The fields, for code that names one (a report's titles); `name` is how results spell it.
    public enum CodingKeys: String, CodingKey, CaseIterable {
        case imageSize, backbone, lessNormalFraction, nShot, epochs, lossSet, seed, unetEpochs, epsilon, trainStatistic,
             memoryType, scaleType, coresetFraction, patchBackbone, bankBackbone, patchImageSize, patchResize,
             labelledViews, finetune, patchProbes, ttaViews, viewReuse, combine
        public var name: String { ParameterEncoder.snake(rawValue) }
    }

    public var canonicalJSON: String { CanonicalJSON.object(ParameterEncoder.parameters(self)) }
}

extension Sweep.Grid {
    /// The sweep's headline setting, as canonical JSON: the first value of
    /// every list, except that memory type hcp, scale type max and the
    /// banks' sum are chosen when listed (the method as published). A report's main table
    /// shows it; each ablation varies one thing away from it.
    public var headlineSetting: String {
        EvaluationSetting(
            imageSize: imageSizes[0], backbone: backbones[0], lessNormalFraction: lessNormalFractions[0], nShot: nShot[0],
            epochs: epochs[0], lossSet: lossSets[0], seed: seeds[0], unetEpochs: unetEpochs[0], epsilon: epsilons[0],
            trainStatistic: trainStatistics[0], memoryType: memoryTypes.contains(.hcp) ? .hcp : memoryTypes[0],
            scaleType: scaleTypes.contains(.max) ? .max : scaleTypes[0], coresetFraction: coresetFractions[0],
            patchBackbone: (patchBackbones ?? backbones)[0], bankBackbone: (bankBackbones ?? backbones)[0],
            patchImageSize: patchImageSizes[0], patchResize: patchResizes[0], labelledViews: labelledViews?[0],
            finetune: finetunes?[0], patchProbes: patchProbes?[0] == 0 ? nil : patchProbes?[0],
            ttaViews: ttaViews?[0] == 0 ? nil : ttaViews?[0], viewReuse: viewReuse?[0] == 1 ? nil : viewReuse?[0],
            combine: combines?.contains(.sum) != false ? nil : combines?[0]).canonicalJSON
    }
}
