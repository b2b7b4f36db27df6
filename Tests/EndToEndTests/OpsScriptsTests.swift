import Foundation
import Testing
import TestSupport
import Vision

/// The operations scripts run for real against the binaries of this build:
/// the nightly (two nights, the second compared with the first; a second
/// run on a held lock; the systemd units) and the Slurm worker script under
/// a real one-node Slurm (its drain on the pre-emption signal).
@Suite struct OpsScriptsTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Runs a script with extra environment; its status and output (stdout and stderr).
    /// Runs an ops script to its end, its output and status returned. With
    /// `killAfter`, a script still running that many seconds after it
    /// started is killed (status 9), so that one which does not stop fails
    /// its test rather than hanging the run.
    static func script(_ path: String, _ environment: [String: String], killAfter: Double? = nil,
                       signal: (Process) -> Void = { _ in }) throws -> (status: Int32, output: String) {
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
        let exited = DispatchSemaphore(value: 0)
        p.terminationHandler = { _ in exited.signal() }
        let started = DispatchTime.now()
        try p.run()
        signal(p)
        if let killAfter, exited.wait(timeout: started + killAfter) == .timedOut {
            // Still our unreaped child, so the pid is still this script's.
            kill(p.processIdentifier, SIGKILL)
        }
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
              patch_image_size: 64
              epochs: 2
              memory_types: [h, hcp]
            """.write(to: sweep, atomically: false, encoding: .utf8)
        let environment = ["BIN": Cluster.binaries.path, "DATA": data.path, "STATE": state.path, "SWEEP": sweep.path, "WORKERS": "1"]
        let first = try Self.script("ops/nightly/psad-nightly", environment.merging(["NIGHTLY_DATE": "2026-11-29"]) { $1 })
        #expect(first.status == 0 && first.output.contains("no earlier nightly"), "\(first.output)")
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

    /// A sweep whose job dies does not pass for finished: `run-sweep` still
    /// writes the results and report of the rest, names what did not finish
    /// and exits 4, and the nightly says so.
    @Test func aSweepWithADeadJobExitsFour() throws {
        let dir = try TemporaryDirectory()
        let sweep = dir.url.appendingPathComponent("gone.json")
        try """
            {"name": "gone", "dataset": "\(dir.url.appendingPathComponent("nowhere").path)", "categories": ["pin_grid"], "max_attempts": 1,
             "grid": {"n_shot": 2, "image_size": 64, "epochs": 2, "memory_types": ["h"]}}
            """.write(to: sweep, atomically: false, encoding: .utf8)
        let state = dir.url.appendingPathComponent("state")
        let run = try Self.script("ops/run-sweep", ["BIN": Cluster.binaries.path, "STATE": state.path, "SWEEP": sweep.path,
                                                    "NO_DATA_DIGEST": "1", "WORKERS": "1"])
        #expect(run.status == 4, "\(run.output)")
        #expect(run.output.contains("sweep gone did not finish: ") && run.output.contains("1 preprocess dead")
                && run.output.contains("1 evaluate blocked") && run.output.contains("missing split folder train/good"), "\(run.output)")
        #expect(FileManager.default.fileExists(atPath: state.appendingPathComponent("reports/gone/report.html").path))
    }

    /// The sweep of `SWEEP`'s file is the one watched, reported and stopped
    /// for, even when a later sweep was submitted to the state directory;
    /// and that other sweep's job is ready afterwards (handed back when it
    /// had started), not left leased to expire at the next start, an
    /// attempt spent at each stop.
    @Test func runSweepWatchesItsFilesSweepAndHandsBackTheRest() throws {
        let dir = try TemporaryDirectory()
        let state = dir.url.appendingPathComponent("state")
        let older = dir.url.appendingPathComponent("older.json"), newer = dir.url.appendingPathComponent("newer.json")
        try #"{"name": "older", "priority": 1, "max_attempts": 1, "diagnostic": {"jobs": 2, "seconds": 1}}"#.write(to: older, atomically: false, encoding: .utf8)
        try #"{"name": "newer", "max_attempts": 1, "diagnostic": {"jobs": 1, "seconds": 30}}"#.write(to: newer, atomically: false, encoding: .utf8)
        for file in [older, newer] {
            let submitted = try runProgram(Cluster.binaries.appendingPathComponent("psad-coordinator").path, ["submit", file.path, "--state", state.path])
            #expect(submitted.status == 0, "\(submitted.output)")
        }
        let run = try Self.script("ops/run-sweep", ["BIN": Cluster.binaries.path, "STATE": state.path, "SWEEP": older.path, "WORKERS": "1"],
                                  killAfter: 120)
        #expect(run.output.contains("sweep older (priority 1): 2/2 done") && !run.output.contains("sweep newer: "), "\(run.output)")
        #expect(try Self.sweepStatus("newer", state: state)["counts"] as? [String: [String: Int]] == ["diagnostic": ["ready": 1]])
    }

    /// A SIGTERM to `run-sweep` stops it at once (not when the sweep ends),
    /// and its workers hand their running stage back before the coordinator
    /// stops: the job is ready again with no attempt spent.
    @Test func runSweepStoppedMidStageHandsTheStageBack() throws {
        let dir = try TemporaryDirectory()
        let state = dir.url.appendingPathComponent("state"), sweep = dir.url.appendingPathComponent("long.json")
        try #"{"name": "long", "max_attempts": 1, "diagnostic": {"jobs": 1, "seconds": 60}}"#.write(to: sweep, atomically: false, encoding: .utf8)
        var signalled = Date.distantFuture
        let run = try Self.script("ops/run-sweep", ["BIN": Cluster.binaries.path, "STATE": state.path, "SWEEP": sweep.path, "WORKERS": "1"],
                                  killAfter: 120) { p in
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline {
                // Read once the coordinator serves (it makes the database).
                let serving = (try? String(contentsOf: state.appendingPathComponent("serve.out"), encoding: .utf8))?.hasPrefix("serving") == true
                let counts = serving ? (try? Self.sweepStatus("long", state: state))?["counts"] as? [String: [String: Int]] : nil
                if counts?["diagnostic"]?["leased"] == 1 { break }
                Thread.sleep(forTimeInterval: 0.2)
            }
            signalled = Date()
            p.terminate()
        }
        #expect(run.status == 143, "\(run.output)")
        #expect(Date().timeIntervalSince(signalled) < 30, "\(run.output)")
        let status = try Self.sweepStatus("long", state: state)
        #expect(status["counts"] as? [String: [String: Int]] == ["diagnostic": ["ready": 1]], "\(status)")
        #expect(status["attempts"] as? [String: Int] == ["handed-back": 1], "\(status)")
    }

    /// One sweep's `status --json` object, read from the state directory.
    static func sweepStatus(_ name: String, state: URL) throws -> [String: Any] {
        let (status, output) = try runProgram(Cluster.binaries.appendingPathComponent("psad-coordinator").path,
                                              ["status", name, "--json", "--state", state.path])
        guard status == 0, let list = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]], let first = list.first
        else { throw CocoaError(.fileReadCorruptFile, userInfo: [NSDebugDescriptionErrorKey: "status \(name): \(output)"]) }
        return first
    }

    /// A nightly that did not finish every job (here its preprocess dies) is
    /// no baseline: the next night compares with none rather than with a
    /// partial grid.
    @Test func aNightlyWithDeadJobsIsNotTheNextOnesBaseline() throws {
        let dir = try TemporaryDirectory()
        let data = dir.url.appendingPathComponent("data"), state = dir.url.appendingPathComponent("state")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: data.appendingPathComponent(".complete").path, contents: nil)
        let sweep = dir.url.appendingPathComponent("gone.json")
        try """
            {"name": "gone", "dataset": "\(data.path)", "categories": ["pin_grid"], "max_attempts": 1,
             "grid": {"n_shot": 2, "image_size": 64, "epochs": 2, "memory_types": ["h"]}}
            """.write(to: sweep, atomically: false, encoding: .utf8)
        let environment = ["BIN": Cluster.binaries.path, "DATA": data.path, "STATE": state.path, "SWEEP": sweep.path,
                           "WORKERS": "1", "NO_DATA_DIGEST": "1"]
        for night in ["2026-11-29", "2026-11-30"] {
            let run = try Self.script("ops/nightly/psad-nightly", environment.merging(["NIGHTLY_DATE": night]) { $1 })
            #expect(run.status == 4 && run.output.contains("nightly-\(night) did NOT FINISH"), "\(run.output)")
            #expect(run.output.contains("no earlier nightly") && !run.output.contains(" against nightly-"), "\(run.output)")
        }
    }

    /// The chaos script, short: a small method sweep run cleanly, then with
    /// four faults (a worker or the coordinator SIGKILLed, or the network
    /// held for two leases through its proxy) spread over the clean run's
    /// length (a fixed 4 s interval gave an idle CI machine's 8 s run one
    /// fault, and a loaded machine's run so many that a stage was killed
    /// again and again); the results are the clean run's, byte for byte, and
    /// every job has exactly one accepted attempt.
    @Test(.timeLimit(.minutes(12))) func chaosOverASmallMethodSweepEndsWithTheCleanRunsResults() throws {
        let dir = try TemporaryDirectory()
        try SyntheticBenchmark.write(to: dir.url, seed: 4, size: .small, only: ["pin_grid"])
        let sweep = dir.url.appendingPathComponent("chaos.json")
        try """
            {"name": "chaos", "dataset": "\(dir.url.path)", "categories": ["pin_grid"], "max_attempts": 20,
             "grid": {"n_shot": 2, "image_size": 64, "patch_image_size": 64, "epochs": 6, "memory_types": ["h", "p", "hcp"]}}
            """.write(to: sweep, atomically: false, encoding: .utf8)
        let run = try runProgram("/usr/bin/env", ["python3", Self.root.appendingPathComponent("ops/bench/chaos").path, "--sweep", sweep.path,
                                                  "--spread", "4", "--lease", "2", "--seed", "2", "--limit", "600",
                                                  "--bin", Cluster.binaries.path])
        #expect(run.status == 0, "\(run.output)")
        let line = try #require(run.output.split(separator: "\n").last { $0.hasPrefix("{") })
        let report = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(report["results_equal_clean_run"] as? Bool == true && report["results_rows"] as? Int == 15, "\(report)")
        #expect(report["jobs_without_exactly_one_done_attempt"] as? Int == 0)
        let faults = ["worker_kills", "coordinator_kills", "network_holds"].compactMap { report[$0] as? Int }.reduce(0, +)
        #expect(faults >= 2, "\(report)")
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
                .write(to: dir.url.appendingPathComponent(unit), atomically: false, encoding: .utf8)
        }
        let (status, text) = try runProgram("/usr/bin/systemd-analyze", ["verify", "--man=no", "psad-nightly.service", "psad-nightly.timer"], in: dir.url)
        #expect(status == 0 && !text.contains("psad-nightly"), "\(text)")
    }

    /// The worker script under a real one-node Slurm (slurmctld, slurmd and
    /// munged from Debian's slurm-wlm and munge, started in a temporary
    /// folder): sbatch runs a worker against a real coordinator; mid-stage
    /// the job's tasks get SIGTERM as `--signal=TERM@N` sends it (scancel -s
    /// TERM: the steps, not the batch shell); the worker hands its stage
    /// back and leaves with status 0; another worker finishes the sweep, and
    /// every job ends with exactly one counted attempt.
    @Test(.enabled(if: SlurmNode.available, "needs root and slurm-wlm + munge (ops/setup installs them)"), .timeLimit(.minutes(3)))
    func theSlurmScriptDrainsItsWorkersOnThePreemptionSignal() throws {
        let cluster = try Cluster(leaseSeconds: 5)
        let slurm = try SlurmNode(cluster.state.url.appendingPathComponent("slurm"))
        defer { slurm.stop() }
        let keys = cluster.state.url.appendingPathComponent("keys"), allowed = cluster.state.url.appendingPathComponent("allowed")
        try cluster.command(["keys", "--out", keys.path, "coordinator", "worker"], withState: false)
        try FileManager.default.createDirectory(at: allowed, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: keys.appendingPathComponent("worker.pub"), to: allowed.appendingPathComponent("worker.pub"))
        try cluster.startCoordinator(["--curve-secret", keys.appendingPathComponent("coordinator.key").path, "--allow", allowed.path])
        try cluster.submit(#"{"name": "s", "max_attempts": 1, "diagnostic": {"jobs": 3, "seconds": 6}}"#)
        let output = cluster.state.url.appendingPathComponent("slurm-job.out")
        let submitted = try slurm.run(["sbatch", "--parsable", "--mem=512M", "--cpus-per-task=1", "--output=\(output.path)",
                                       Self.root.appendingPathComponent("ops/slurm/psad-workers.sbatch").path],
                                      environment: ["PSAD_COORDINATOR": cluster.endpoint, "PSAD_BIN": Cluster.binaries.path, "PSAD_KEYS": keys.path,
                                                    "PSAD_CACHE": cluster.state.url.appendingPathComponent("cache").path, "PSAD_DRAIN_SECONDS": "1"])
        let job = submitted.trimmingCharacters(in: .whitespacesAndNewlines)
        // Mid-stage: the Slurm worker holds a job; the warning comes.
        do {
            _ = try cluster.wait("s", seconds: 60) { ($0["leased"] ?? 0) == 1 }
        } catch {
            let queue = (try? slurm.run(["squeue", "-a"])) ?? "?"
            let log = (try? String(contentsOf: slurm.dir.appendingPathComponent("log/slurmctld.log"), encoding: .utf8)) ?? ""
            Issue.record("no job leased by the Slurm worker: \(error)\nsqueue: \(queue)\njob output: \((try? String(contentsOf: output, encoding: .utf8)) ?? "none")\nslurmctld: \(log.suffix(3000))")
            return
        }
        Thread.sleep(forTimeInterval: 1.5)
        try slurm.run(["scancel", "--signal=TERM", job])
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, !(try slurm.run(["squeue", "-h", "-j", job])).trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            Thread.sleep(forTimeInterval: 0.5)
        }
        let text = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
        #expect(text.contains("handed a job back") && text.contains("drained; bye") && text.contains("workers exited with status 0"), "\(text)")
        // Handed back, not lost: ready at once; another worker finishes everything.
        #expect(try cluster.counts("s")["leased"] == nil)
        try cluster.startWorker("b", ["--curve-server-key", keys.appendingPathComponent("coordinator.pub").path,
                                      "--curve-secret", keys.appendingPathComponent("worker.key").path])
        #expect(try cluster.wait("s", seconds: 60) { $0["done"] == 3 } == ["done": 3])
        for key in try RealScaleEndToEndTests.jobKeys(cluster, worker: "b") {
            #expect(try cluster.command(["explain", key]).contains("done, 1 attempt(s)"))
        }
    }
}

/// A one-node Slurm cluster in a folder: munged with its own key and socket,
/// slurmctld and slurmd on free ports, everything as root (SlurmUser=root,
/// no cgroups: proctrack/linuxproc, task/none), stopped with `stop()`.
final class SlurmNode {
    static var available: Bool {
        getuid() == 0 && ["/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged", "/usr/bin/sbatch"]
            .allSatisfy { FileManager.default.isExecutableFile(atPath: $0) }
    }

    let dir: URL
    var conf: URL { dir.appendingPathComponent("slurm.conf") }

    init(_ dir: URL) throws {
        self.dir = dir
        let fm = FileManager.default
        for sub in ["state", "spool", "log", "run", "munge"] { try fm.createDirectory(at: dir.appendingPathComponent(sub), withIntermediateDirectories: true) }
        try fm.setAttributes([.posixPermissions: 0o700], ofItemAtPath: dir.appendingPathComponent("munge").path)
        let key = dir.appendingPathComponent("munge/munge.key")
        try Data((0..<1024).map { _ in UInt8.random(in: 0...255) }).write(to: key)
        try fm.setAttributes([.posixPermissions: 0o400], ofItemAtPath: key.path)
        let m = dir.appendingPathComponent("munge").path
        try Self.launch("/usr/sbin/munged", ["--key-file=\(m)/munge.key", "--socket=\(m)/munge.socket", "--pid-file=\(m)/munged.pid",
                                              "--log-file=\(m)/munged.log", "--seed-file=\(m)/munged.seed", "--force"])
        // The short host name, as slurmd finds its node by; addresses given, so nothing needs DNS.
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count)
        let host = String(cString: name).split(separator: ".").first.map(String.init) ?? "localhost"
        let d = dir.path
        try """
            ClusterName=psadtest
            SlurmctldHost=\(host)(127.0.0.1)
            SlurmUser=root
            SlurmctldPort=\(Self.freePort())
            SlurmdPort=\(Self.freePort())
            AuthType=auth/munge
            AuthInfo=socket=\(m)/munge.socket
            CredType=cred/munge
            StateSaveLocation=\(d)/state
            SlurmdSpoolDir=\(d)/spool
            SlurmctldPidFile=\(d)/run/slurmctld.pid
            SlurmdPidFile=\(d)/run/slurmd.pid
            SlurmctldLogFile=\(d)/log/slurmctld.log
            SlurmdLogFile=\(d)/log/slurmd.log
            ProctrackType=proctrack/linuxproc
            TaskPlugin=task/none
            SelectType=select/cons_tres
            SelectTypeParameters=CR_Core_Memory
            ReturnToService=2
            MpiDefault=none
            JobCompType=jobcomp/none
            AccountingStorageType=accounting_storage/none
            NodeName=\(host) NodeAddr=127.0.0.1 CPUs=\(ProcessInfo.processInfo.activeProcessorCount) RealMemory=2048 State=UNKNOWN
            PartitionName=debug Nodes=\(host) Default=YES MaxTime=INFINITE State=UP
            """.write(to: conf, atomically: false, encoding: .utf8)
        try Self.launch("/usr/sbin/slurmctld", ["-f", conf.path])
        try Self.launch("/usr/sbin/slurmd", ["-f", conf.path])
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if (try? run(["sinfo", "-h", "-o", "%t"]))?.contains("idle") == true { return }
            Thread.sleep(forTimeInterval: 0.3)
        }
        stop()
        throw ClusterError("the Slurm node did not come up: \((try? String(contentsOf: dir.appendingPathComponent("log/slurmctld.log"), encoding: .utf8)) ?? "")")
    }

    /// Stops the daemons: every process whose command line names this
    /// node's folder (they all do), TERM first, KILL what is left after 5 s.
    func stop() {
        func pkill(_ signal: String) -> Int32 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/pkill")
            p.arguments = ["-\(signal)", "-f", dir.path]
            guard (try? p.run()) != nil else { return 1 }
            p.waitUntilExit()
            return p.terminationStatus
        }
        _ = pkill("TERM")
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline, pkill("0") == 0 { Thread.sleep(forTimeInterval: 0.2) }
        _ = pkill("KILL")
    }

    /// A Slurm command against this node; its stdout (an error with its stderr when it fails).
    @discardableResult
    func run(_ arguments: [String], environment: [String: String] = [:]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = arguments
        p.environment = ProcessInfo.processInfo.environment.merging(environment.merging(["SLURM_CONF": conf.path]) { $1 }) { $1 }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile(), problem = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw ClusterError("\(arguments.joined(separator: " ")) exited \(p.terminationStatus): \(String(decoding: problem, as: UTF8.self))")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// Starts a daemon (it forks into the background) and waits for the
    /// launcher with posix_spawn and waitpid, its standard streams on
    /// /dev/null: with Process, munged's launcher was left unreaped and
    /// waitUntilExit never returned.
    static func launch(_ path: String, _ arguments: [String]) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd: Int32 in [0, 1, 2] { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0) }
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, path, &actions, nil, argv, environ)
        guard spawned == 0 else { throw ClusterError("\(path): posix_spawn failed (\(spawned))") }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        guard status == 0 else { throw ClusterError("\(path) exited with wait status \(status)") }
    }

    /// A TCP port free now on loopback.
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
