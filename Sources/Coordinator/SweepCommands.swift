import ArgumentParser
import Dispatch
import Foundation
import Logging
import Report
import Scheduler
import Shared

/// Where the coordinator keeps its state: `--state DIR`, or $PSAD_STATE, or ./state.
struct StateOption: ParsableArguments {
    @Option(help: "State directory (state.sqlite, blobs/). Default: $PSAD_STATE or ./state.")
    var state: String?

    var url: URL { URL(fileURLWithPath: state ?? ProcessInfo.processInfo.environment["PSAD_STATE"] ?? "state") }

    func open() throws -> JobStore {
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return try JobStore(path: url.appendingPathComponent("state.sqlite").path)
    }
}

/// `serve`: the ROUTER loop, until SIGTERM or SIGINT.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve jobs to workers until SIGTERM.")
    @OptionGroup var state: StateOption

    @Option(help: "Endpoint to bind (tcp://HOST:PORT, tcp://127.0.0.1:* for any free port, ipc://PATH).")
    var bind = "tcp://127.0.0.1:5555"

    @Option(help: "Seconds without a heartbeat before a lease expires.")
    var leaseSeconds = 10.0

    @Option(help: "Seconds between heartbeats.")
    var heartbeatSeconds = 2.0

    @Option(help: "First retry delay, seconds (doubles per attempt, with jitter).")
    var backoffSeconds = 1.0

    @Option(help: "CURVE: this coordinator's secret key file (from `psad-coordinator keys`).")
    var curveSecret: String?

    @Option(help: "CURVE: the workers admitted: a public key file, or a folder of *.pub files.")
    var allow: String?

    @Flag(help: "Serve a non-local endpoint without CURVE (anyone who reaches the port may take jobs).")
    var insecure = false

    func validate() throws {
        if (curveSecret == nil) != (allow == nil) { throw ValidationError("--curve-secret and --allow go together") }
        if curveSecret == nil, !insecure, !isLocalEndpoint(bind) {
            throw ValidationError("\(bind) is reachable from other machines: give --curve-secret and --allow (keys from `psad-coordinator keys`), or --insecure")
        }
    }

    func run() throws {
        LogSetup.bootstrap()
        var settings = CoordinatorServer.Settings()
        settings.endpoint = bind
        settings.leaseSeconds = leaseSeconds
        settings.heartbeatSeconds = heartbeatSeconds
        settings.backoff = Backoff(base: backoffSeconds, cap: 60 * backoffSeconds, jitter: 0.5)
        if let curveSecret, let allow {
            settings.curve = (try CurveKeyPair.load(secretFile: curveSecret), try CurveKeyPair.publicKeys(at: allow))
        }
        let server = try CoordinatorServer(stateDirectory: state.url, settings: settings, logger: Logger(label: "psad-coordinator"))
        let stop = TerminationFlag()
        // The first line on stdout is the bound endpoint (scripts and tests read it).
        say("serving \(server.endpoint)")
        try server.run { stop.requested }
    }
}

/// A line on stdout, written at once (not held in a buffer).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// A line on stderr.
func warn(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}


struct Submit: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Add a sweep file's jobs (JSON or YAML; see ops/sweeps/).")
    @OptionGroup var state: StateOption
    @Argument(help: "The sweep file.") var sweep: String
    @Option(help: "Submit it under this name instead of the file's (e.g. nightly-2026-11-30).") var name: String?
    @Flag(help: "Reuse nothing done before: the sweep's name enters every job's key (its `run`).") var fresh = false
    @Flag(help: "Do not read the dataset here: jobs are keyed on its path alone, and a folder changed in place is not noticed.")
    var noDataDigest = false

    func run() throws {
        let url = URL(fileURLWithPath: sweep)
        var parsed = try Sweep.load(url)
        if let name {
            guard !name.isEmpty else { throw ValidationError("--name must not be empty") }
            parsed.name = name
        }
        if fresh { parsed.run = parsed.name }
        if !noDataDigest, parsed.diagnostic == nil { parsed.dataDigests = Self.digests(parsed) }
        if parsed.diagnostic == nil { parsed.dataSizes = Self.sizes(parsed) }
        try Self.checkShots(parsed)
        let summary = try state.open().submit(parsed, file: String(decoding: try Data(contentsOf: url), as: UTF8.self))
        if summary.alreadySubmitted {
            say("sweep \(summary.sweep) was submitted before (same file): \(summary.reused) of \(summary.jobs) jobs done")
            if summary.notInSweep > 0 {
                warn("warning: the file expands today to \(summary.notInSweep) job(s) sweep \(summary.sweep) does not hold (the code or a "
                     + "stage's defaults changed since it was submitted): its results are those of its jobs as they were; submit it "
                     + "under a new name (--name) to run today's")
            }
        } else {
            print("sweep \(summary.sweep): \(summary.jobs) jobs, \(summary.created) new, \(summary.reused) reused (done), \(summary.existing) already queued\(summary.requeued > 0 ? " (\(summary.requeued) of them queued again after another sweep's cancel)" : "")")
        }
    }
}

extension Submit {
    /// n_shot is "up to N labelled images" (SPEC-PSAD: 5, or one per
    /// product type where a category has several, 3 in all): a value no
    /// category can give is a mistake and fails here; one that some
    /// categories cannot give is said, and their jobs are keyed on what they
    /// get (one job, not a copy per requested value).
    static func checkShots(_ sweep: Sweep) throws {
        let labelled = sweep.categories.compactMap { category in sweep.dataSizes[category]?.labelled.map { (category, $0) } }
        guard let most = labelled.map(\.1).max() else { return }
        if let over = sweep.grid.nShot.first(where: { $0 > most }) {
            throw ValidationError("grid.n_shot: \(over) is more than any category's labelled images (at most \(most), in the psad-manifest.json files)")
        }
        for n in sweep.grid.nShot {
            let fewer = labelled.filter { $0.1 < n }
            if !fewer.isEmpty {
                print("note: n_shot \(n) runs with " + fewer.map { "\($0.1) labelled images in \($0.0)" }.joined(separator: ", ")
                      + " (all its manifest lists)")
            }
        }
    }

    /// Each category's image counts and classes where this machine sees
    /// them; elsewhere the jobs' memory needs assume the synthetic default.
    static func sizes(_ sweep: Sweep) -> [String: CategorySize] {
        var sizes: [String: CategorySize] = [:]
        for category in sweep.categories {
            let root = URL(fileURLWithPath: sweep.dataset).appendingPathComponent(category)
            if let size = try? CategorySize.count(categoryAt: root) { sizes[category] = size }
        }
        return sizes
    }

    /// Each category folder's digest, where this machine sees the dataset at
    /// the sweep's path (workers check theirs against it); where it does not,
    /// a warning, and the category's jobs are keyed on the path alone.
    static func digests(_ sweep: Sweep) -> [String: String] {
        var digests: [String: String] = [:]
        let start = Date()
        var files = 0, bytes = 0
        for category in sweep.categories {
            let root = URL(fileURLWithPath: sweep.dataset).appendingPathComponent(category)
            do {
                let d = try DatasetDigest.of(categoryAt: root)
                digests[category] = d.hex
                files += d.files; bytes += d.bytes
            } catch {
                warn("warning: \(error); \(category)'s jobs are keyed on the dataset path alone (if its files change, "
                     + "submit with --fresh or a new run label)")
            }
        }
        if !digests.isEmpty {
            say(String(format: "data: %d of %d categories read (%d files, %.0f MB) in %.1f s", digests.count, sweep.categories.count,
                         files, Double(bytes) / 1e6, Date().timeIntervalSince(start)))
        }
        return digests
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Progress per sweep and stage kind.")
    @OptionGroup var state: StateOption
    @Argument(help: "Only this sweep.") var sweep: String?
    @Flag(help: "JSON instead of a table.") var json = false
    @Flag(help: "Print again every second until every job of the sweeps has finished.") var watch = false
    @Flag(help: "One line per sweep: a bar and the running stages' progress (redrawn in place on a terminal).") var line = false

    func run() throws {
        let store = try state.open()
        let terminal = isatty(1) != 0
        var lastPrinted = "", lastTime = Date.distantPast
        repeat {
            let statuses = try store.status(sweep: sweep)
            if line {
                let text = statuses.map(Self.line).joined(separator: " || ")
                let finished = statuses.allSatisfy(\.finished)
                if terminal {
                    FileHandle.standardOutput.write(Data(("\r\u{1B}[K" + text + (finished || !watch ? "\n" : "")).utf8))
                } else if text.prefix(while: { $0 != "|" }) != lastPrinted.prefix(while: { $0 != "|" })
                            || Date().timeIntervalSince(lastTime) >= 30 || finished || !watch {
                    // Into a log: a line when the counts change, else every 30 s.
                    say(text)
                    (lastPrinted, lastTime) = (text, Date())
                }
            } else if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                say(String(decoding: try encoder.encode(statuses), as: UTF8.self))
            } else {
                say(Self.table(statuses))
            }
            if !watch || statuses.allSatisfy(\.finished) { break }
            Thread.sleep(forTimeInterval: 1)
        } while true
    }

    /// "sweep demo: 12/40 done [#####---------------] 30% | segment-train bottle_label 34/100 epochs, 6m13s left | ..."
    static func line(_ s: SweepStatus) -> String {
        let done = s.count(.done), fraction = s.total == 0 ? 1 : Double(done) / Double(s.total), width = 20
        let filled = Int((fraction * Double(width)).rounded(.down))
        var text = "sweep \(s.sweep): \(done)/\(s.total) done [\(String(repeating: "#", count: filled))\(String(repeating: "-", count: width - filled))] "
            + "\(Int(fraction * 100))%"
        let dead = s.count(.dead) + s.count(.blocked)
        if dead > 0 { text += ", \(dead) dead or blocked" }
        if s.count(.quarantined) > 0 { text += ", \(s.count(.quarantined)) quarantined" }
        for r in s.running { text += " | " + running(r, compact: true) }
        return text
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? "\(s / 3600)h\(String(format: "%02d", s % 3600 / 60))m" : s >= 60 ? "\(s / 60)m\(String(format: "%02d", s % 60))s" : "\(s)s"
    }

    static func running(_ r: SweepStatus.Running, compact: Bool) -> String {
        var text = compact ? "\(r.kind) \(r.category)" : "\(r.kind) \(r.category) \(r.key.prefix(12)) on \(r.worker): \(duration(r.elapsedSeconds))"
        if let done = r.done, let total = r.total, let unit = r.unit { text += "\(compact ? "" : ",") \(done)/\(total) \(unit)" }
        if let left = r.remainingSeconds { text += ", \(duration(left)) left" } else if compact { text += " \(duration(r.elapsedSeconds))" }
        return text
    }

    static func table(_ statuses: [SweepStatus]) -> String {
        var lines: [String] = []
        for s in statuses {
            // Verification's states only where the sweep has such jobs.
            let states = [.done, .leased, .ready, .pending, .failed, .dead, .blocked, .cancelled]
                + [JobState.verifying, .quarantined].filter { s.count($0) > 0 }
            let done = s.count(.done)
            lines.append("sweep \(s.sweep) (priority \(s.priority)): \(done)/\(s.total) done (\(s.total == 0 ? 100 : 100 * done / s.total)%)")
            lines.append("  " + ["stage".padding(toLength: 15, withPad: " ", startingAt: 0)] .joined() + states.map { $0.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0) }.joined())
            for kind in StageKind.allCases where s.counts[kind.rawValue] != nil {
                let row = s.counts[kind.rawValue]!
                lines.append("  " + kind.rawValue.padding(toLength: 15, withPad: " ", startingAt: 0)
                             + states.map { "\(row[$0.rawValue] ?? 0)".padding(toLength: 10, withPad: " ", startingAt: 0) }.joined())
            }
            if s.verified > 0 || s.count(.verifying) > 0 || s.count(.quarantined) > 0 {
                lines.append("  verification: \(s.verified) agreed, \(s.count(.verifying)) waiting for a second worker's run, "
                             + "\(s.count(.quarantined)) quarantined (runs disagreed: `explain JOB`, then `resolve JOB --keep ATTEMPT` or `--rerun`)")
            }
            if s.attempts.contains(where: { $0.key != AttemptOutcome.done.rawValue && $0.key != AttemptOutcome.running.rawValue }) {
                lines.append("  attempts: " + s.attempts.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", "))
            }
            if !s.running.isEmpty {
                lines.append("  running:")
                for r in s.running { lines.append("    " + running(r, compact: false)) }
            }
            if !s.problems.isEmpty {
                lines.append("  failing (attempts, last error):")
                for p in s.problems {
                    let error = p.error.count > 160 ? p.error.prefix(160) + "..." : Substring(p.error)
                    lines.append("    \(p.kind) \(p.category) \(p.key.prefix(12)) \(p.state) \(p.attempts)/\(p.maxAttempts): \(error)")
                }
            }
            if !s.overEstimates.isEmpty {
                lines.append("  peaked above their memory estimate (peak / estimate MiB):")
                for o in s.overEstimates {
                    lines.append("    \(o.kind) \(o.category) \(o.key.prefix(12)) on \(o.worker): \(Int(o.peakMiB.rounded())) / \(o.estimateMiB)")
                }
            }
        }
        return lines.joined(separator: "\n")
    }
}

struct Resume: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Requeue a sweep's failed, dead and blocked jobs.")
    @OptionGroup var state: StateOption
    @Argument(help: "The sweep (default: every sweep).") var sweep: String?
    @Option(name: .customLong("stage"), help: "Only jobs of this stage kind (repeatable).") var stages: [String] = []

    func run() throws {
        let kinds = try stages.map { name in
            guard let kind = StageKind(rawValue: name) else {
                throw ValidationError("--stage \(name): not one of \(StageKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return kind
        }
        let store = try state.open()
        let names = try sweep.map({ [$0] }) ?? store.sweepNames()
        for name in names {
            let n = try store.resume(sweep: name, kinds: kinds.isEmpty ? nil : kinds)
            print("sweep \(name): \(n) jobs requeued")
        }
    }
}

struct Resolve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Resolve a quarantined job (its verification runs disagreed): keep one run, or run it again.",
        discussion: "`explain JOB` lists the runs with their workers and machine kinds. The jobs it blocked wait on it again.")
    @OptionGroup var state: StateOption
    @Argument(help: "The job key or a unique prefix of it.") var job: String
    @Option(help: "Keep the run of this attempt (its token, as `explain` lists it): the job is done with its outputs.") var keep: Int64?
    @Flag(help: "Drop both runs: the job runs, and is verified, again.") var rerun = false

    func validate() throws {
        if (keep == nil) == !rerun { throw ValidationError("give --keep ATTEMPT or --rerun") }
    }

    func run() throws {
        let store = try state.open()
        let key = try store.resolve(job)
        let released = try store.resolve(key, keep: keep.map { .keep(token: $0) } ?? .rerun)
        print("job \(key.short): \(keep.map { "done with attempt \($0)'s run" } ?? "queued to run again"); \(released) blocked jobs below it wait on it again")
    }
}

struct Cancel: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Cancel a sweep's unfinished jobs that no other sweep needs.")
    @OptionGroup var state: StateOption
    @Argument(help: "The sweep.") var sweep: String

    func run() throws {
        let n = try state.open().cancel(sweep: sweep, now: Date().timeIntervalSince1970)
        print("sweep \(sweep): \(n) jobs cancelled")
    }
}

struct Explain: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Why a job is (not) reused: its key against the nearest done job.")
    @OptionGroup var state: StateOption
    @Argument(help: "The job key or a unique prefix of it.") var job: String
    @Flag(help: "JSON instead of text.") var json = false

    func run() throws {
        let store = try state.open()
        let e = try store.explain(try store.resolve(job))
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            print(String(decoding: try encoder.encode(e), as: UTF8.self))
            return
        }
        print("job \(e.key)\n  \(e.kind) of \(e.category): \(e.state), \(e.attempts) attempt(s), needs \(e.memoryMiB) MiB")
        if let error = e.error { print("  last error: \(error)") }
        for check in e.checkRuns {
            let metrics = check.metrics.keys.sorted().prefix(6).map { "\($0)=\(check.metrics[$0]!)" }.joined(separator: " ")
            print("  verification run: attempt \(check.token) on \(check.worker) (\(check.machine.isEmpty ? "machine kind unknown" : check.machine)): "
                  + "\(check.outputs.count) outputs\(metrics.isEmpty ? "" : ", " + metrics)")
        }
        if let run = e.run {
            let seconds = run.seconds.map { String(format: "%.1f s", $0) } ?? "time unknown"
            let peak = run.peakMiB.map { "peak \(Int($0.rounded())) MiB" } ?? "peak unknown"
            print("  ran on \(run.worker): \(seconds), \(peak) (estimate \(e.memoryMiB) MiB)")
        }
        print("  parameters: " + e.parameters.keys.sorted().map { "\($0)=\(e.parameters[$0]!)" }.joined(separator: " "))
        for role in e.inputs.keys.sorted() { print("  input \(role): \(e.inputs[role]!.prefix(12)) (\(e.inputStates[role] ?? "?"))") }
        if e.state == JobState.done.rawValue {
            print("  done: any sweep that expands to this key reuses it")
        } else if let nearest = e.nearestDone {
            print("  not reused: the nearest done \(e.kind) job \(nearest.prefix(12)) differs in (this / that):")
            for name in e.differences.keys.sorted() { print("    \(name): \(e.differences[name]!)") }
        } else {
            print("  not reused: no \(e.kind) job of \(e.category) is done yet")
        }
    }
}

struct CollectGarbage: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gc", abstract: "Remove artifact blobs that no job refers to.")
    @OptionGroup var state: StateOption

    func run() throws {
        let store = try state.open()
        let removed = try ArtifactStore(root: state.url).collectGarbage(keep: try store.referencedArtifacts())
        let small = try store.collectSmallBlobs()
        print("removed \(removed + small) unreferenced blobs (\(small) small ones kept in the database)")
    }
}

struct Results: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "A sweep's metrics per category and setting (CSV, JSON lines, or a table).")
    @OptionGroup var state: StateOption
    @Argument(help: "The sweep.") var sweep: String
    @Flag(help: "One JSON object per line instead of CSV.") var json = false
    @Flag(help: "Image AUROC (LA / SA, %) per category and memory/scale type, with the mean.") var table = false

    func run() throws {
        let rows = try state.open().results(sweep: sweep)
        if table { return say(ResultsTable.markdown(rows)) }
        if !json { say("category,metric,value,setting") }
        for row in rows {
            if json {
                let object: [String: Any] = ["category": row.category, "metric": row.metric, "value": row.value,
                                             "setting": (try? JSONSerialization.jsonObject(with: Data(row.setting.utf8))) ?? row.setting]
                say(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
            } else {
                say("\(row.category),\(row.metric),\(row.value),\"\(row.setting.replacingOccurrences(of: "\"", with: "\"\""))\"")
            }
        }
    }
}

struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Make CURVE key pairs: NAME.key (secret) and NAME.pub in a folder.")
    @Option(help: "Folder for the key files.") var out = "keys"
    @Argument(help: "Names, e.g. coordinator worker-1 worker-2.") var names: [String]

    func validate() throws {
        for name in names where name.isEmpty || !name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) || name.hasPrefix(".") {
            throw ValidationError("'\(name)': use letters, digits, '-', '_' and '.'")
        }
    }

    func run() throws {
        for name in names {
            try CurveKeyPair.generate().write(to: URL(fileURLWithPath: out), name: name)
            say("\(out)/\(name).key (secret), \(out)/\(name).pub")
        }
    }
}
