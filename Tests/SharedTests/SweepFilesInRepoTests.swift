import Foundation
import Testing
@testable import Shared

/// The sweep files shipped in ops/sweeps/ parse and expand.
@Suite struct SweepFilesInRepoTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("ops/sweeps")

    @Test(arguments: ["default.json", "ablations.json", "diagnostic.json"])
    func shippedSweepParses(_ name: String) throws {
        let sweep = try Sweep.load(Self.folder.appendingPathComponent(name))
        #expect(!SweepExpander.expand(sweep).jobs.isEmpty)
    }

    @Test func theDefaultSweepSharesPatchFeaturesPerCategory() throws {
        let plan = SweepExpander.expand(try Sweep.load(Self.folder.appendingPathComponent("default.json")))
        #expect(plan.jobs.filter { $0.kind == .patchFeatures }.count == 5)
        #expect(plan.jobs.filter { $0.kind == .segmentTrain }.count == 5)
        #expect(plan.evaluations.count == 5 * 4 * 2)
    }
}
