import ArgumentParser
import Foundation
import Scheduler
import Shared

/// `psad-bench expansion`: a sweep of about 100,000 jobs submitted to a
/// fresh state database (expanded and written, streamed, as `psad-coordinator
/// submit` does), timed, with the process's peak resident memory; then the
/// expansion alone, timed.
struct Expansion: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Time the expansion and submission of a large sweep.")

    @Option(help: "Folder for the state database (removed first).")
    var state = NSTemporaryDirectory() + "psad-bench-expansion"

    func run() throws {
        // 5 categories x 10 n_shot x 7 memory types x 3 scale types x 10 seeds
        // x 3 loss sets x 3 less-normal fractions: 94,500 evaluate jobs, and
        // the shared stages above them.
        var sweep = Sweep(name: "large", dataset: "/data/loco", categories: ["a", "b", "c", "d", "e"])
        sweep.grid.nShot = Array(1...10)
        sweep.grid.memoryTypes = ["h", "c", "p", "hc", "hp", "cp", "hcp"].compactMap(MemoryCombination.init)
        sweep.grid.scaleTypes = ScaleName.allCases
        sweep.grid.seeds = Array(0..<10)
        sweep.grid.lossSets = LossSet.allCases
        sweep.grid.lessNormalFractions = [1, 0.5, 0.25]
        // What a user waits for: `submit` streams the expansion into the database.
        try? FileManager.default.removeItem(atPath: state)
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        let store = try JobStore(path: state + "/state.sqlite")
        let start = Date()
        let summary = try store.submit(sweep, file: "{}")
        let submitted = Date()
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        // The expansion alone, collected in memory (after the peak above was read).
        let plan = SweepExpander.expand(sweep)
        let expanded = Date()
        let line: [String: Any] = [
            "jobs": plan.jobs.count, "evaluations": plan.evaluations.count, "created": summary.created,
            "submit_s": submitted.timeIntervalSince(start), "submit_peak_mib": Double(usage.ru_maxrss) / 1024,
            "expand_only_s": expanded.timeIntervalSince(submitted),
            "database_mib": Double((try? FileManager.default.attributesOfItem(atPath: state + "/state.sqlite")[.size] as? NSNumber)??.intValue ?? 0) / 1_048_576,
        ]
        print(String(decoding: try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]), as: UTF8.self))
    }
}
