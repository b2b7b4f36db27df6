import Foundation
import Testing
import TestSupport
import Vision

/// The operations scripts run for real against the binaries of this build:
/// the nightly (two nights, the second compared with the first) and the
/// Slurm worker script (its drain on the pre-emption signal), with `srun`
/// played by a small shell script.
@Suite struct OpsScriptsTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Runs a script with extra environment; its status and output (stdout and stderr).
    static func script(_ path: String, _ environment: [String: String], signal: (Process) -> Void = { _ in }) throws -> (status: Int32, output: String) {
        let p = Process()
        // Through a shell whose SIGTERM is unblocked and default, as under slurmstepd or systemd.
        // Started straight from the test runner, the script's `trap ... TERM` never ran (seen:
        // the drain test hung until killed): bash cannot trap a signal that arrives blocked or
        // ignored, and the runner's process is not a clean parent in that respect.
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", """
            import os, signal, sys
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.execvp("bash", ["bash"] + sys.argv[1:])
            """, root.appendingPathComponent(path).path]
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("psad-script-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        let handle = try FileHandle(forWritingTo: log)
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        signal(p)
        p.waitUntilExit()
        return (p.terminationStatus, try String(contentsOf: log, encoding: .utf8))
    }

    @Test func theSecondNightIsComparedWithTheFirst() throws {
        let dir = try TemporaryDirectory()
        let data = dir.url.appendingPathComponent("data"), state = dir.url.appendingPathComponent("state")
        try SyntheticBenchmark.write(to: data, seed: 5, size: .small, only: ["pin_grid"])
        _ = FileManager.default.createFile(atPath: data.appendingPathComponent(".complete").path, contents: nil)
        let sweep = dir.url.appendingPathComponent("nightly.yaml")
        try """
            name: nightly
            dataset: \(data.path)
            categories: [pin_grid]
            grid:
              n_shot: 2
              image_size: 64
              epochs: 2
              memory_types: [h, hcp]
            """.write(to: sweep, atomically: true, encoding: .utf8)
        let environment = ["BIN": Cluster.binaries.path, "DATA": data.path, "STATE": state.path, "SWEEP": sweep.path, "WORKERS": "1"]
        let first = try Self.script("ops/nightly/psad-nightly", environment.merging(["NIGHTLY_DATE": "2026-11-29"]) { $1 })
        #expect(first.status == 0 && first.output.contains("the first nightly"), "\(first.output)")
        let second = try Self.script("ops/nightly/psad-nightly", environment.merging(["NIGHTLY_DATE": "2026-11-30", "MAX_DROP": "0"]) { $1 })
        #expect(second.status == 0 && second.output.contains("nightly-2026-11-30 against nightly-2026-11-29"), "\(second.output)")
        #expect(second.output.contains("no drop of more than 0.0 points against 'nightly-2026-11-29'"), "\(second.output)")
        // Every job ran again on the second night (nothing reused), with the same results (the method is deterministic).
        let report = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: state.appendingPathComponent("reports/nightly-2026-11-30/report.json"))) as? [String: Any])
        let stages = try #require(report["stages"] as? [[String: Any]])
        #expect(stages.count == 6 && stages.allSatisfy { $0["reused"] as? Int == 0 && $0["ran"] as? Int == $0["jobs"] as? Int }, "\(stages)")
        let html = try String(contentsOf: state.appendingPathComponent("reports/nightly-2026-11-30/report.html"), encoding: .utf8)
        #expect(html.contains("<th>LA vs nightly-2026-11-29</th>") && html.contains("<td class=\"\">+0.0</td>"))
    }

    /// A second run on the same state directory (the timer firing while the
    /// last night still runs) does not share its database and socket: it
    /// says so and exits 75 at once, before building or drawing anything.
    @Test func aSecondNightlyOnTheSameStateDoesNotStart() throws {
        let dir = try TemporaryDirectory()
        let state = dir.url.appendingPathComponent("state")
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        // This process holds the lock, as a running nightly would.
        let fd = open(state.appendingPathComponent("nightly.lock").path, O_CREAT | O_WRONLY, 0o644)
        #expect(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0)
        defer { close(fd) }
        let started = Date()
        let second = try Self.script("ops/nightly/psad-nightly", ["BIN": Cluster.binaries.path, "STATE": state.path,
                                                                  "DATA": dir.url.appendingPathComponent("data").path])
        #expect(second.status == 75 && second.output.contains("another run holds"), "\(second.output)")
        #expect(Date().timeIntervalSince(started) < 10)
        #expect(!FileManager.default.fileExists(atPath: dir.url.appendingPathComponent("data").path))
    }

    /// The systemd units as systemd reads them (`systemd-analyze verify`:
    /// keys, values, the executable), with the install paths pointed at
    /// this checkout.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze"), "needs systemd-analyze (Debian's systemd)"))
    func theNightlyUnitsVerify() throws {
        let dir = try TemporaryDirectory()
        for unit in ["psad-nightly.service", "psad-nightly.timer"] {
            let text = try String(contentsOf: Self.root.appendingPathComponent("ops/nightly/\(unit)"), encoding: .utf8)
            try text.replacingOccurrences(of: "/srv/psad-swift", with: Self.root.path)
                .write(to: dir.url.appendingPathComponent(unit), atomically: true, encoding: .utf8)
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/systemd-analyze")
        p.arguments = ["verify", "--man=no", "psad-nightly.service", "psad-nightly.timer"]
        p.currentDirectoryURL = dir.url
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0 && !text.contains("psad-nightly"), "\(text)")
    }

    @Test func theSlurmScriptDrainsItsWorkersOnThePreemptionSignal() throws {
        let cluster = try Cluster(leaseSeconds: 5)
        let keys = cluster.state.url.appendingPathComponent("keys"), allowed = cluster.state.url.appendingPathComponent("allowed")
        try cluster.command(["keys", "--out", keys.path, "coordinator", "worker"], withState: false)
        try FileManager.default.createDirectory(at: allowed, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: keys.appendingPathComponent("worker.pub"), to: allowed.appendingPathComponent("worker.pub"))
        try cluster.startCoordinator(["--curve-secret", keys.appendingPathComponent("coordinator.key").path, "--allow", allowed.path])
        try cluster.submit(#"{"name": "s", "diagnostic": {"jobs": 4, "seconds": 1.5}}"#)
        // srun: drop its options, run the task, relay SIGTERM to it (as srun does).
        let fake = cluster.state.url.appendingPathComponent("bin")
        try FileManager.default.createDirectory(at: fake, withIntermediateDirectories: true)
        try """
            #!/usr/bin/env bash
            while [ "${1#--}" != "$1" ]; do shift; done
            "$@" & task=$!
            trap 'kill -TERM $task' TERM
            wait $task; wait $task
            """.write(to: fake.appendingPathComponent("srun"), atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: fake.appendingPathComponent("srun").path)
        let environment = ["PATH": "\(fake.path):\(ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")",
                           "PSAD_COORDINATOR": cluster.endpoint, "PSAD_BIN": Cluster.binaries.path, "PSAD_KEYS": keys.path,
                           "PSAD_CACHE": cluster.state.url.appendingPathComponent("cache").path, "SLURM_JOB_ID": "42", "SLURM_CPUS_PER_TASK": "1"]
        var leasedAtSignal: [String: Int] = [:]
        let run = try Self.script("ops/slurm/psad-workers.sbatch", environment) { script in
            leasedAtSignal = (try? cluster.wait("s", seconds: 60) { ($0["leased"] ?? 0) == 1 && ($0["done"] ?? 0) >= 1 }) ?? [:]
            kill(script.processIdentifier, SIGTERM)
        }
        #expect(leasedAtSignal["leased"] == 1, "\(leasedAtSignal) \(cluster.tail())")
        #expect(run.status == 0 && run.output.contains("drain requested"), "\(run.output)")
        // The job in flight was finished, not abandoned: nothing leased, nothing waiting for a lease to expire.
        let after = try cluster.counts("s")
        #expect(after["leased"] == nil && after["failed"] == nil && (after["done"] ?? 0) >= 2 && (after["done"] ?? 0) + (after["ready"] ?? 0) == 4, "\(after)")
    }
}
