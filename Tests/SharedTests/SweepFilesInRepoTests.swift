import Foundation
import Testing
@testable import Shared

/// The sweep files shipped in ops/sweeps/ parse and expand.
@Suite struct SweepFilesInRepoTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("ops/sweeps")

    @Test(arguments: ["default.json", "demo.json", "ablations.json", "diagnostic.json", "paper.yaml",
                      "benchmark.json", "unet.json", "unet-long.json", "quirks.json", "loco.json", "loco-quick.json",
                      "finetune.json", "varied.json", "fidelity.json", "tta.json", "varied-tta.json", "third.json", "third-seeds.json",
                      "combine.json", "varied-combine.json", "third-combine.json", "varied-unet.json", "varied-unet-rest.json", "reuse-combine.json",
                      "varied-reuse-combine.json", "default-reuse.json", "fourth.json", "instances.json", "varied-instances.json",
                      "third-instances.json", "loco-defaults.json", "loco-varied.json", "segment-backbone.json",
                      "varied-segment-backbone.json", "reference-statistic.json", "varied-reference-statistic.json",
                      "third-reference-statistic.json", "varied-tta8.json", "varied-image-size.json", "third-image-size.json",
                      "varied-image-size-seed1.json", "varied-image-size-seeds12.json", "third-image-size-seeds12.json",
                      "image-size.json", "image-size-seeds12.json"])
    func shippedSweepParses(_ name: String) throws {
        let sweep = try Sweep.load(Self.folder.appendingPathComponent(name))
        #expect(!SweepExpander.expand(sweep).jobs.isEmpty)
    }

    /// The paper's sweep: five LOCO categories at 512 px, the reference's backbone per stage, its encoder fine-tuned, every loss
    /// set, memory type, scale type and less-data fraction; cheap evaluate jobs share few expensive ones.
    @Test func thePaperSweepHasTheReferenceSettings() throws {
        let sweep = try Sweep.load(Self.folder.appendingPathComponent("paper.yaml"))
        #expect(sweep.categories == ["breakfast_box", "juice_bottle", "pushpins", "screw_bag", "splicing_connectors"])
        #expect(sweep.grid.imageSizes == [512] && sweep.grid.backbones == [.wideResnet101] && sweep.grid.epsilons == [1e-10])
        #expect(sweep.grid.patchBackbones == [.wideResnet101] && sweep.grid.bankBackbones == [.resnet101])
        #expect(sweep.grid.lessNormalFractions == [1, 0.5, 0.25, 0.125] && sweep.grid.nShot == [5] && sweep.grid.epochs == [100])
        let plan = SweepExpander.expand(sweep)
        // Per category: 4 fractions patch-features; 3 loss sets segment-train, pseudo-label, unet-train;
        // 3 x 4 x 2 bank-fit; x 7 memory x 3 scale types evaluate.
        #expect(plan.jobs.filter { $0.kind == .patchFeatures }.allSatisfy { $0.parameters["backbone"] == .string("wide_resnet101_2") })
        #expect(plan.jobs.filter { $0.kind == .bankFit }.allSatisfy { $0.parameters["backbone"] == .string("resnet101") })
        // The reference trains every encoder weight with the head.
        #expect(sweep.grid.finetunes == [.all] && plan.jobs.filter { $0.kind == .segmentTrain }.allSatisfy { $0.parameters["finetune"] == .string("all") })
        #expect(plan.jobs.filter { $0.kind == .patchFeatures }.count == 5 * 4)
        #expect(plan.jobs.filter { $0.kind == .segmentTrain }.count == 5 * 3)
        #expect(plan.jobs.filter { $0.kind == .bankFit }.count == 5 * 24)
        #expect(plan.evaluations.count == 5 * 24 * 21 && plan.jobs.count == 5 * (1 + 4 + 3 + 3 + 3 + 24 + 24 * 21))
    }

    @Test func theDefaultSweepSharesPatchFeaturesPerCategory() throws {
        let plan = SweepExpander.expand(try Sweep.load(Self.folder.appendingPathComponent("default.json")))
        #expect(plan.jobs.filter { $0.kind == .patchFeatures }.count == 5)
        #expect(plan.jobs.filter { $0.kind == .segmentTrain }.count == 5)
        // h, c, p, n, g, hcp, hcpn, hcpg and hcpng at three scale types; the four combinations summed and at their maximum;
        // each with the banks' leave-one-out train statistic and the reference code's (two bank-fit jobs per category).
        #expect(plan.jobs.filter { $0.kind == .bankFit }.count == 5 * 2)
        #expect(plan.evaluations.count == 5 * (9 + 4) * 3 * 2)
    }
}
