/// The kinds of job in a sweep's DAG (DESIGN.md, Stages and the DAG), and
/// a diagnostic kind for load and fault tests.
public enum StageKind: String, Codable, CaseIterable, Sendable {
    case preprocess
    case segmentTrain = "segment-train"
    case pseudoLabel = "pseudo-label"
    case unetTrain = "unet-train"
    case patchFeatures = "patch-features"
    case bankFit = "bank-fit"
    case evaluate
    /// Not part of the method: sleeps, echoes its parameters, or fails on
    /// demand. Kept for the scheduler's load and fault tests.
    case diagnostic

    /// The kinds that read this kind's outputs in a sweep's DAG
    /// (``SweepExpander``; `SweepExpansionTests` checks every edge it makes
    /// is listed here).
    public var readers: [StageKind] {
        switch self {
        case .preprocess: [.patchFeatures, .segmentTrain, .bankFit]
        case .segmentTrain: [.pseudoLabel]
        case .pseudoLabel: [.unetTrain, .bankFit]
        case .unetTrain: [.bankFit]
        case .patchFeatures, .bankFit: [.evaluate]
        case .evaluate, .diagnostic: []
        }
    }

    /// The most stages that can follow this kind's job in the DAG (0 for a
    /// sink): preprocess 5, segment-train 4, pseudo-label 3, unet-train 2,
    /// patch-features and bank-fit 1, evaluate 0. Dispatch gives the ready
    /// job of the highest level first among equal priorities, the longest
    /// chain's head before the short one's (Hu's rule for a DAG on several
    /// machines): a category's segment-train, which four stages wait on,
    /// starts before its patch-features, which only evaluate waits on, so
    /// the short jobs fill the workers' gaps at the end instead of the long
    /// chain starting last. Counted in stages, not seconds: no estimate of
    /// a stage's time is needed, and on the default sweep the order is the
    /// one measured times would give (BENCHMARKS.md, "The default sweep
    /// within 15 minutes: one malloc arena, and the longest chain first").
    public var level: Int { readers.map { $0.level + 1 }.max() ?? 0 }

    /// The stage's code version, part of every job key: bump it when the
    /// stage's output changes for the same inputs, and every job of that
    /// kind (and everything downstream) is computed again.
    public var codeVersion: Int {
        switch self {
        case .preprocess, .diagnostic: 1
        case .pseudoLabel: 3   // 2: the head on the taps as they come (the first convolution at each tap's stride, upsampled after: other rounding); 3: a convolution's bias written before its GEMM adds to it (other rounding)
        case .segmentTrain: 5   // 2: a rotated view's coordinates follow its content; the manifest's rotation range; 3: a fresh labelled view per draw by default; 4: the head on the taps as they come, the transposed resize summed per source row, bias gradients in sixteen lanes (other rounding); 5: a convolution's bias written before its GEMM adds to it, a depthwise kernel's gradient and batch norm's sums in lanes (other rounding)
        case .bankFit: 7   // 2: banks.safetensors holds the standardisation and train statistics too (8 tensors); 3: and the test vectors (10); 4: the masks' transposed resize summed per source row (other rounding); 5: a convolution's bias written before its GEMM adds to it (other rounding); 6: the part-instance bank (counts in distances.json and banks.safetensors); 7: the part-geometry bank (likewise)
        case .unetTrain: 6   // 2: convolution weight gradients of a batch summed per thread, then added (other rounding); 3: flips on both axes, coordinates follow each view, the manifest's rotation range; 4: unet.safetensors (the network, for export); 5: the transposed resize summed per source row, bias gradients in sixteen lanes (other rounding); 6: a convolution's bias written before its GEMM adds to it (other rounding)
        case .patchFeatures: 7   // 2: the coreset's distances summed in 16 lanes (other rounding, other picks on near-ties); 3: defect types in scores.json; 4: the FPR limit and the maps' scale in scores.json; 5: PatchCore's own input (patch_image_size, patch_resize), maps brought to the preprocessed frame; 6: train images scored together, each pair's distance once (a few train scores' last bits); 7: a convolution's bias written before its GEMM adds to it (other rounding)
        case .evaluate: 3   // 2: roc.json; 3: defect_types.json
        }
    }

    /// The largest difference between two machine kinds' metrics this
    /// stage accepts when a job is verified on a worker of another kind
    /// (absolute); nil: its runs are compared as bytes, so a verification
    /// re-run goes to a worker of the first one's kind. Evaluate reads the
    /// same scores on both and only ranks them: rounding can swap a few
    /// near-equal scores, each moving an AUROC by 1/(positives x negatives),
    /// well under 0.001 at the benchmark's sizes; a wrong result moves it by more.
    public var metricTolerance: Double? {
        switch self {
        case .evaluate: 0.001
        case .diagnostic: 0
        case .preprocess, .segmentTrain, .pseudoLabel, .unetTrain, .patchFeatures, .bankFit: nil
        }
    }
}
