import ArgumentParser
import Foundation
import Report
import Shared

/// `report`: a sweep's results as one self-contained HTML file plus CSV and
/// JSON; with `--against`, a comparison column and (with `--max-drop`) a
/// regression check for nightly runs.
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write a sweep's report: report.html (self-contained), report.csv and report.json.",
        discussion: "Example images are read from the sweep's dataset where this machine sees it; without it the part masks are shown over black.")
    @OptionGroup var state: StateOption
    @Argument(help: "The sweep.") var sweep: String
    @Option(help: "Another sweep to compare with (its headline results).") var against: String?
    @Option(help: "Folder for the files. Default: <state>/reports/<sweep>.") var out: String?
    @Option(help: "With --against: exit with status 3 when LA, SA or their mean drops by more than this many percentage points (per category or in the mean).")
    var maxDrop: Double?

    func validate() throws {
        if maxDrop != nil && against == nil { throw ValidationError("--max-drop needs --against") }
        if let maxDrop, maxDrop < 0 { throw ValidationError("--max-drop must not be negative") }
    }

    func run() throws {
        let store = try state.open()
        let report = try SweepReport.build(store: store, artifacts: try ArtifactStore(root: state.url), sweep: sweep, against: against)
        let folder = out.map { URL(fileURLWithPath: $0) } ?? state.url.appendingPathComponent("reports").appendingPathComponent(sweep)
        for url in try ReportWriter.write(report, to: folder) { say(url.path) }
        for note in report.notes { say("note: \(note)") }
        if let maxDrop {
            let drops = report.regressions(points: maxDrop)
            if !drops.isEmpty {
                say("\(drops.count) regression\(drops.count == 1 ? "" : "s") against '\(against!)' (more than \(maxDrop) points):")
                for d in drops { say("  \(d)") }
                throw ExitCode(3)
            }
            say("no drop of more than \(maxDrop) points against '\(against!)'")
        }
    }
}
