import Foundation
import Testing
import TestSupport
import Shared

/// Real processes on loopback: a coordinator, workers, and the CLI.
@Suite(.serialized) struct SweepEndToEndTests {
    static func diagnostic(_ name: String, _ options: String, attempts: Int = 3) -> String {
        #"{"name": "\#(name)", "max_attempts": \#(attempts), "diagnostic": {\#(options)}}"#
    }

    @Test func aChainedSweepCompletesAcrossTwoWorkers() throws {
        let cluster = try Cluster()
        try cluster.startCoordinator()
        // Each job reads the previous one's output: inputs are fetched by hash between workers.
        try cluster.submit(Self.diagnostic("chain", #""jobs": 12, "chained": true"#))
        try cluster.submit(Self.diagnostic("wide", #""jobs": 30"#))
        try cluster.startWorker("a")
        try cluster.startWorker("b")
        _ = try cluster.wait("chain") { $0["done"] == 12 }
        _ = try cluster.wait("wide") { $0["done"] == 30 }
        let status = try cluster.command(["status"])
        #expect(status.contains("sweep chain (priority 0): 12/12 done"), "\(status)")
    }

    @Test func aFailingStageIsRetriedThenDeadAndResumeFinishesIt() throws {
        let cluster = try Cluster()
        let cause = cluster.state.url.appendingPathComponent("cause")
        try Data().write(to: cause)
        try cluster.startCoordinator()
        try cluster.submit(Self.diagnostic("f", #""jobs": 3, "chained": true, "fail_while_exists": "\#(cause.path)""#, attempts: 2))
        try cluster.startWorker("a")
        let dead = try cluster.wait("f") { $0["dead"] == 1 && $0["blocked"] == 2 }
        #expect(dead["done"] == nil)
        let explain = try cluster.command(["explain", try firstDeadKey(cluster)])
        #expect(explain.contains("2 attempt(s)") && explain.contains("fails while"), "\(explain)")
        // The cause removed, resume: the chain finishes.
        try FileManager.default.removeItem(at: cause)
        #expect(try cluster.command(["resume", "f"]).contains("3 jobs requeued"))
        _ = try cluster.wait("f") { $0["done"] == 3 }
    }

    @Test func aJobOfAWorkerKilledMidStageIsRetriedElsewhere() throws {
        let cluster = try Cluster()
        try cluster.startCoordinator()
        try cluster.submit(Self.diagnostic("k", #""jobs": 1, "seconds": 4"#))
        try cluster.startWorker("doomed")
        _ = try cluster.wait("k", seconds: 20) { $0["leased"] == 1 }
        cluster.signalWorker("doomed", SIGKILL)
        try cluster.startWorker("survivor")
        let final = try cluster.wait("k", seconds: 30) { $0["done"] == 1 }
        #expect(final["done"] == 1)
        let log = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-survivor.log"), encoding: .utf8)
        #expect(log.contains("kind=diagnostic"), "the survivor ran the job: \(log)")
    }

    @Test func aRestartedCoordinatorReAdoptsTheJobInFlight() throws {
        let cluster = try Cluster(leaseSeconds: 2)
        try cluster.startCoordinator()
        try cluster.submit(Self.diagnostic("r", #""jobs": 3, "seconds": 1.5"#))
        try cluster.startWorker("a")
        _ = try cluster.wait("r", seconds: 20) { $0["leased"] == 1 }
        cluster.killCoordinator()
        try cluster.startCoordinator()
        _ = try cluster.wait("r", seconds: 40) { $0["done"] == 3 }
        // No job ran twice: one attempt each, the one in flight adopted, not rerun.
        let log = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-a.log"), encoding: .utf8)
        #expect(log.components(separatedBy: "kind=diagnostic").count - 1 == 3, "\(log)")
        let coordinatorLog = try String(contentsOf: cluster.logs[2], encoding: .utf8)
        #expect(coordinatorLog.contains("adopted=[1]"), "\(coordinatorLog)")
    }

    @Test func aStoppedWorkersLateResultIsRefused() throws {
        let cluster = try Cluster(leaseSeconds: 1)
        try cluster.startCoordinator()
        try cluster.submit(Self.diagnostic("z", #""jobs": 1, "seconds": 0.5"#))
        try cluster.startWorker("sleepy")
        _ = try cluster.wait("z", seconds: 20) { $0["leased"] == 1 }
        cluster.signalWorker("sleepy", SIGSTOP)
        Thread.sleep(forTimeInterval: 1.5)           // past the lease
        try cluster.startWorker("b")
        _ = try cluster.wait("z", seconds: 30) { $0["done"] == 1 }
        cluster.signalWorker("sleepy", SIGCONT)
        // The stopped worker wakes up, reports, and is told its attempt is no longer the lease.
        let deadline = Date().addingTimeInterval(10)
        var log = ""
        while Date() < deadline {
            log = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-sleepy.log"), encoding: .utf8)
            if ["abandoned a job", "result refused", "upload refused"].contains(where: log.contains) { break }
            Thread.sleep(forTimeInterval: 0.2)
        }
        #expect(["abandoned a job", "result refused", "upload refused"].contains(where: log.contains), "\(cluster.tail())")
        #expect(try cluster.counts("z") == ["done": 1])
    }

    @Test func sigtermDrainsAWorkerAfterItsJob() throws {
        let cluster = try Cluster()
        try cluster.startCoordinator()
        try cluster.submit(Self.diagnostic("d", #""jobs": 1, "seconds": 1"#))
        try cluster.startWorker("a")
        _ = try cluster.wait("d", seconds: 20) { $0["leased"] == 1 }
        cluster.signalWorker("a", SIGTERM)
        cluster.workers["a"]!.waitUntilExit()
        #expect(cluster.workers["a"]!.terminationStatus == 0)
        #expect(try cluster.counts("d") == ["done": 1])
    }

    /// With --drain-seconds, a stage longer than the warning is handed back:
    /// the worker leaves within the bound, another takes the job at once,
    /// and the handed-back attempt does not count against the job.
    @Test func aDrainingWorkerHandsBackAStageTooLongForItsWarning() throws {
        let cluster = try Cluster()
        try cluster.startCoordinator()
        try cluster.submit(Self.diagnostic("h", #""jobs": 1, "seconds": 3"#, attempts: 1))
        try cluster.startWorker("a", ["--drain-seconds", "0.5"])
        _ = try cluster.wait("h", seconds: 20) { $0["leased"] == 1 }
        let signalled = Date()
        cluster.signalWorker("a", SIGTERM)
        cluster.workers["a"]!.waitUntilExit()
        #expect(cluster.workers["a"]!.terminationStatus == 0 && Date().timeIntervalSince(signalled) < 2.5)
        // Ready again at once (not after a lease expiry), and with max_attempts 1 not dead: the attempt was not counted.
        #expect(try cluster.counts("h") == ["ready": 1])
        try cluster.startWorker("b")
        _ = try cluster.wait("h", seconds: 20) { $0["done"] == 1 }
        let log = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-a.log"), encoding: .utf8)
        #expect(log.contains("handed a job back") && log.contains("accepted=true"), "\(log)")
        #expect(try cluster.command(["explain", try firstDeadKey(cluster)]).contains("done, 1 attempt(s)"))
    }

    /// Without --drain-seconds the first signal lets the stage finish and
    /// says so; a second hands it back at once, as --drain-seconds would.
    @Test func aSecondSignalHandsTheRunningStageBack() throws {
        let cluster = try Cluster()
        try cluster.startCoordinator()
        try cluster.submit(Self.diagnostic("s", #""jobs": 1, "seconds": 60"#, attempts: 1))
        try cluster.startWorker("a")
        _ = try cluster.wait("s", seconds: 20) { $0["leased"] == 1 }
        let log = cluster.state.url.appendingPathComponent("worker-a.log")
        cluster.signalWorker("a", SIGTERM)
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, !((try? String(contentsOf: log, encoding: .utf8)) ?? "").contains("draining:") {
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(cluster.workers["a"]!.isRunning, "one signal drains: the stage runs on")
        let signalled = Date()
        cluster.signalWorker("a", SIGTERM)
        cluster.workers["a"]!.waitUntilExit()
        #expect(cluster.workers["a"]!.terminationStatus == 0 && Date().timeIntervalSince(signalled) < 2.5)
        #expect(try cluster.counts("s") == ["ready": 1])
        let text = try String(contentsOf: log, encoding: .utf8)
        #expect(text.contains("a second SIGTERM or SIGINT hands it back now") && text.contains("handed a job back")
                && text.contains("accepted=true") && text.contains("drained; bye"), "\(text)")
        #expect(try cluster.attempts("s") == ["handed-back": 1])
    }

    /// Short jobs are held ahead (prefetch); those held ahead of a stage
    /// that turns out long are handed back, taken by another worker, and
    /// cost no attempt (max_attempts 1: one spent would leave a job dead).
    @Test func jobsHeldAheadOfALongStageAreHandedBackAtNoCost() throws {
        let cluster = try Cluster()
        try cluster.startCoordinator()
        try cluster.submit(Self.diagnostic("short", #""jobs": 20"#, attempts: 1))
        try cluster.submit(Self.diagnostic("long", #""jobs": 3, "seconds": 2.5"#, attempts: 1))
        try cluster.startWorker("a")
        _ = try cluster.wait("short", seconds: 30) { $0["done"] == 20 }
        _ = try cluster.wait("long", seconds: 20) { $0["leased", default: 0] >= 1 }
        try cluster.startWorker("b")
        _ = try cluster.wait("long", seconds: 30) { $0["done"] == 3 }
        #expect(try cluster.attempts("short") == ["done": 20])
        let long = try cluster.attempts("long")
        #expect(long["done"] == 3 && long["handed-back", default: 0] >= 1 && long.keys.allSatisfy { ["done", "handed-back"].contains($0) }, "\(long)")
        let log = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-a.log"), encoding: .utf8)
        #expect(log.contains("handed back jobs held ahead"), "\(log)")
        let other = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-b.log"), encoding: .utf8)
        #expect(other.contains("kind=diagnostic"), "worker b took a job handed back: \(other)")
    }

    /// A worker of short jobs holding a window of 8 asks for several jobs
    /// at once and sends the results that finished while its last one was
    /// unanswered together, in one message: each job is recorded once.
    @Test func shortJobsResultsGoTogetherAndEachIsRecordedOnce() throws {
        let cluster = try Cluster()
        try cluster.startCoordinator()
        try cluster.submit(Self.diagnostic("many", #""jobs": 400"#, attempts: 1))
        try cluster.startWorker("a", ["--prefetch", "8"])
        _ = try cluster.wait("many", seconds: 60) { $0["done"] == 400 }
        #expect(try cluster.attempts("many") == ["done": 400])
        let log = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-a.log"), encoding: .utf8)
        #expect(log.contains("sent results together"), "\(cluster.tail())")
    }

    /// The coordinator's side, message by message: a ready for 3 gets 3
    /// jobs; a results message of the 3 asking for 2 more gets those 2
    /// first, then an ack for each result (all accepted, recorded done); a
    /// ready for more than are left gets what is left and a no-job.
    @Test func readiesAndResultsCountJobs() throws {
        let cluster = try Cluster()
        try cluster.startCoordinator()
        try cluster.submit(Self.diagnostic("n", #""jobs": 6"#, attempts: 1))
        let socket = try ZeroMQSocket(try ZeroMQContext(), .dealer)
        try socket.connect(cluster.endpoint)
        func receive() throws -> WireMessage {
            guard let parts = try socket.receive(timeoutMilliseconds: 10_000) else { throw CocoaError(.fileReadUnknown) }
            return try WireMessage.decode(parts)
        }
        func jobs(_ messages: [WireMessage]) -> [WireMessage.Job] { messages.compactMap { if case .job(let j) = $0 { j } else { nil } } }
        try socket.send(WireMessage.hello(.init(worker: "raw", resources: WorkerResources(cores: 1, memoryBytes: 1 << 30),
                                                kinds: [.diagnostic], inFlight: [])).encode())
        guard case .welcome = try receive() else { Issue.record("no welcome"); return }
        try socket.send(WireMessage.ready(3).encode())
        let first = jobs(try (0..<3).map { _ in try receive() })
        #expect(first.count == 3 && Set(first.map(\.token)).count == 3)
        let results = first.enumerated().map { i, job in
            WireMessage.Finished(.init(token: job.token, outputs: [:], metrics: [:], seconds: 0.001, next: i == 2 ? 2 : 0), Data())
        }
        try socket.send(WireMessage.results(results).encode())
        let answers = try (0..<5).map { _ in try receive() }
        let acks = answers.compactMap { if case .ack(let a) = $0 { a } else { nil } }
        #expect(acks.map(\.token) == first.map(\.token) && acks.allSatisfy(\.accepted), "\(answers)")
        let second = jobs(answers)
        #expect(second.count == 2, "\(answers)")
        if case .ack = answers[4] {} else { Issue.record("the jobs asked for with the last result come before its ack: \(answers)") }
        #expect(try cluster.counts("n")["done"] == 3)
        try socket.send(WireMessage.ready(4).encode())
        let last = try (0..<2).map { _ in try receive() }
        #expect(jobs(last).count == 1, "\(last)")
        if case .noJob = last[1] {} else { Issue.record("fewer jobs than asked end with a no-job: \(last)") }
    }

    /// Coordinator restarts in the middle of a sweep of short jobs on three
    /// workers (jobs held ahead, results in flight): every job is done and
    /// no attempt is spent on the restarts' bookkeeping.
    @Test func coordinatorRestartsSpendNoAttempts() throws {
        let cluster = try Cluster(leaseSeconds: 3)
        try cluster.startCoordinator()
        try cluster.submit(Self.diagnostic("r", #""jobs": 60, "seconds": 0.2"#, attempts: 1))
        for name in ["a", "b", "c"] { try cluster.startWorker(name) }
        for round in 1...3 {
            _ = try cluster.wait("r", seconds: 30) { $0["done", default: 0] >= 10 * round }
            cluster.killCoordinator()
            try cluster.startCoordinator()
        }
        _ = try cluster.wait("r", seconds: 60) { $0["done"] == 60 }
        let attempts = try cluster.attempts("r")
        #expect(attempts["done"] == 60 && attempts.keys.allSatisfy { ["done", "handed-back"].contains($0) }, "\(attempts)\n\(cluster.tail())")
    }

    /// A backup taken while the coordinator serves; the sweep finishes;
    /// both processes die; the backup is restored and a new coordinator and
    /// worker finish the sweep again: exactly the jobs not done at the
    /// backup run again, nothing else. Restore is refused while serve runs,
    /// and so is a second serve on the same state.
    @Test func aBackupTakenWhileServingIsRestoredAndOnlyWhatFollowedItRunsAgain() throws {
        let cluster = try Cluster()
        try cluster.startCoordinator()
        try cluster.submit(Self.diagnostic("b", #""jobs": 40, "seconds": 0.1"#))
        try cluster.startWorker("a")
        _ = try cluster.wait("b", seconds: 30) { $0["done", default: 0] >= 10 }
        let backup = cluster.state.url.appendingPathComponent("backup.sqlite").path
        #expect(try cluster.command(["backup", "--out", backup]).contains("backed up"))
        let refused = try cluster.run(["restore", backup])
        #expect(refused.status != 0 && refused.errors.contains("coordinator.lock"), "\(refused)")
        let second = try cluster.run(["serve", "--bind", "tcp://127.0.0.1:*"])
        #expect(second.status != 0 && second.errors.contains("coordinator.lock"), "\(second)")
        _ = try cluster.wait("b", seconds: 30) { $0["done"] == 40 }

        // What the backup holds, read through status from a copy of it.
        let copy = try TemporaryDirectory()
        try FileManager.default.copyItem(atPath: backup, toPath: copy.url.appendingPathComponent("state.sqlite").path)
        let json = try cluster.command(["status", "b", "--json", "--state", copy.url.path], withState: false)
        let counts = (try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]])?.first?["counts"] as? [String: [String: Int]]
        let doneAtBackup = try #require(counts?["diagnostic"]?["done"])
        #expect(doneAtBackup >= 10 && doneAtBackup < 40)

        cluster.signalWorker("a", SIGKILL)
        cluster.killCoordinator()
        #expect(try cluster.command(["restore", backup]).contains("restored"))
        try cluster.startCoordinator()
        try cluster.startWorker("again")
        _ = try cluster.wait("b", seconds: 30) { $0["done"] == 40 }
        let log = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-again.log"), encoding: .utf8)
        #expect(log.components(separatedBy: "kind=diagnostic").count - 1 == 40 - doneAtBackup, "\(log)")
        let attempts = try cluster.attempts("b")
        #expect(attempts["done"] == 40 && attempts.keys.allSatisfy { ["done", "handed-back"].contains($0) }, "\(attempts)")
    }

    @Test func aDamagedStateDatabaseStopsServeWithTheWayBack() throws {
        let cluster = try Cluster()
        try Data(repeating: 0x41, count: 8192).write(to: cluster.state.url.appendingPathComponent("state.sqlite"))
        let r = try cluster.run(["serve", "--bind", "tcp://127.0.0.1:*"])
        #expect(r.status != 0 && r.errors.contains("state.sqlite is damaged") && r.errors.contains("psad-coordinator restore"), "\(r)")
    }

    /// The coordinator's wall clock jumps an hour forward, then two hours
    /// back, in the middle of a sweep (libfaketime in the coordinator's
    /// process; its monotonic clock left alone): no lease expires early, no
    /// attempt is spent (max_attempts 1), the sweep completes.
    @Test func wallClockJumpsOnTheCoordinatorExpireNothing() throws {
        let library = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
        try #require(FileManager.default.fileExists(atPath: library), "libfaketime is missing: ops/setup installs it")
        let cluster = try Cluster(leaseSeconds: 2)
        let offset = cluster.state.url.appendingPathComponent("faketime")
        try Data("+0\n".utf8).write(to: offset)
        cluster.coordinatorEnvironment = ["LD_PRELOAD": library, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                                          "FAKETIME_TIMESTAMP_FILE": offset.path, "FAKETIME_NO_CACHE": "1"]
        try cluster.startCoordinator()
        try cluster.submit(Self.diagnostic("clock", #""jobs": 8, "seconds": 1.2"#, attempts: 1))
        try cluster.startWorker("a")
        try cluster.startWorker("b")
        _ = try cluster.wait("clock", seconds: 20) { $0["leased", default: 0] >= 2 }
        try Data("+1h\n".utf8).write(to: offset)
        _ = try cluster.wait("clock", seconds: 20) { $0["done", default: 0] >= 3 }
        try Data("-1h\n".utf8).write(to: offset)
        _ = try cluster.wait("clock", seconds: 30) { $0["done"] == 8 }
        #expect(try cluster.attempts("clock") == ["done": 8])
    }

    /// A tmpfs of `mib` MiB mounted on a new folder `name` of the cluster's directory (needs root); the caller unmounts it.
    static func tmpfs(in cluster: Cluster, _ name: String, mib: Int) throws -> URL {
        let volume = cluster.state.url.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: volume, withIntermediateDirectories: true)
        let mounted = try runProgram("/bin/mount", ["-t", "tmpfs", "-o", "size=\(mib)m", "tmpfs", volume.path])
        try #require(mounted.status == 0, "mount: \(mounted.output)")
        return volume
    }

    /// Writes `file` until its volume refuses another byte.
    static func fill(_ file: URL) throws {
        _ = FileManager.default.createFile(atPath: file.path, contents: nil)
        let handle = try FileHandle(forWritingTo: file)
        while (try? handle.write(contentsOf: Data(repeating: 7, count: 64 << 10))) != nil {}
        while (try? handle.write(contentsOf: Data(repeating: 7, count: 512))) != nil {}
        try? handle.close()
    }

    /// The log's text once it contains `line` (or after `seconds`, as it is then).
    static func waitForLog(_ log: URL, containing line: String, seconds: Double = 20) throws -> String {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline, !(try String(contentsOf: log, encoding: .utf8)).contains(line) { Thread.sleep(forTimeInterval: 0.2) }
        return try String(contentsOf: log, encoding: .utf8)
    }

    /// The coordinator's state volume (a 16 MiB tmpfs) filled up in the
    /// middle of a sweep: the coordinator says so, naming the volume; nothing
    /// committed is lost and no attempt fails (max_attempts 1); once the
    /// filler is removed the sweep completes. Needs root for the mount.
    @Test(.enabled(if: getuid() == 0, "mounts a tmpfs (root)")) func aFullStateVolumeLosesNothingAndTheSweepFinishesOnceThereIsRoom() throws {
        let cluster = try Cluster(leaseSeconds: 2)
        let volume = try Self.tmpfs(in: cluster, "volume", mib: 16)
        defer { _ = try? runProgram("/bin/umount", ["-l", volume.path]) }
        cluster.stateDirectory = volume
        try cluster.startCoordinator()
        try cluster.submit(Self.diagnostic("full", #""jobs": 300, "seconds": 0.02"#, attempts: 1))
        try cluster.startWorker("a")
        _ = try cluster.wait("full", seconds: 30) { $0["done", default: 0] >= 20 }
        // Fill the volume to the last byte.
        let filler = volume.appendingPathComponent("filler")
        try Self.fill(filler)
        let log = cluster.logs[0]
        let text = try Self.waitForLog(log, containing: "the state volume is full")
        #expect(text.contains("the state volume is full: \(volume.path)") && text.contains("MiB free"), "\(cluster.tail())")
        // Stalled, not failing: nothing dead, nothing failed.
        let stalled = try cluster.counts("full")
        #expect(stalled["dead"] == nil && stalled["failed"] == nil && stalled["done", default: 0] < 300, "\(stalled)")
        // Full for longer than a lease: the heartbeats meanwhile are not recorded, yet no lease may expire for it.
        Thread.sleep(forTimeInterval: 2 * cluster.leaseSeconds)
        try FileManager.default.removeItem(at: filler)
        _ = try cluster.wait("full", seconds: 90) { $0["done"] == 300 }
        #expect(try cluster.attempts("full").keys.allSatisfy { ["done", "handed-back"].contains($0) })
        let after = try String(contentsOf: log, encoding: .utf8)
        #expect(after.contains("the state volume has room again"), "\(cluster.tail())")
        cluster.signalWorker("a", SIGKILL)
        cluster.killCoordinator()
    }

    /// The coordinator's state volume full while workers upload large
    /// outputs (1 MiB blobs, in chunks to blobs/): the uploads are not
    /// refused (which would fail their attempts) but go unanswered; the
    /// workers send them again, and once there is room the sweep completes
    /// with every attempt done. Needs root for the mount.
    @Test(.enabled(if: getuid() == 0, "mounts a tmpfs (root)")) func uploadsIntoAFullStateVolumeWaitForRoomAndFailNothing() throws {
        let cluster = try Cluster(leaseSeconds: 2)
        let volume = try Self.tmpfs(in: cluster, "volume", mib: 24)
        defer { _ = try? runProgram("/bin/umount", ["-l", volume.path]) }
        cluster.stateDirectory = volume
        try cluster.startCoordinator()
        try cluster.submit(Self.diagnostic("big", #""jobs": 8, "seconds": 0.1, "output_bytes": 1048576"#, attempts: 1))
        try cluster.startWorker("a")
        _ = try cluster.wait("big", seconds: 30) { $0["done", default: 0] >= 2 }
        // Fill the volume, leaving SQLite's WAL its old space: the blob files are what cannot be written.
        let filler = volume.appendingPathComponent("filler")
        try Self.fill(filler)
        #expect(try Self.waitForLog(cluster.logs[0], containing: "the state volume is full").contains("the state volume is full: \(volume.path)"),
                "\(cluster.tail())")
        Thread.sleep(forTimeInterval: 2 * cluster.leaseSeconds)
        let stalled = try cluster.counts("big")
        #expect(stalled["dead"] == nil && stalled["failed"] == nil && stalled["done", default: 0] < 8, "\(stalled)")
        try FileManager.default.removeItem(at: filler)
        _ = try cluster.wait("big", seconds: 60) { $0["done"] == 8 }
        let attempts = try cluster.attempts("big")
        #expect(attempts.keys.allSatisfy { ["done", "handed-back"].contains($0) }, "\(attempts)\n\(cluster.tail())")
        let workerLog = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-a.log"), encoding: .utf8)
        #expect(workerLog.contains("request=put"), "the worker sent an upload again: \(cluster.tail())")
        cluster.signalWorker("a", SIGKILL)
        cluster.killCoordinator()
    }

    /// A worker's cache volume (a 4 MiB tmpfs) full: first of stale cached
    /// blobs (the worker clears its cache, hands the job back and goes on),
    /// then of something else (it hands the job back and asks for nothing
    /// for a while, saying so, until there is room). No attempt is failed
    /// (max_attempts 1) and the sweep completes. Needs root for the mount.
    @Test(.enabled(if: getuid() == 0, "mounts a tmpfs (root)")) func aFullCacheVolumeIsClearedAndTheJobHandedBackNotFailed() throws {
        let cluster = try Cluster()
        let volume = try Self.tmpfs(in: cluster, "cache-volume", mib: 4)
        defer { _ = try? runProgram("/bin/umount", ["-l", volume.path]) }
        let cache = volume.appendingPathComponent("cache")
        for folder in ["blobs/aa", "incoming"] {
            try FileManager.default.createDirectory(at: cache.appendingPathComponent(folder), withIntermediateDirectories: true)
        }
        // A stale cached blob fills the volume before the worker starts.
        try Self.fill(cache.appendingPathComponent("blobs/aa/" + String(repeating: "a", count: 64)))
        try cluster.startCoordinator()
        // Chained: every job but the first fetches its input into the cache.
        try cluster.submit(Self.diagnostic("cache", #""jobs": 30, "chained": true, "seconds": 0.05"#, attempts: 1))
        try cluster.startWorker("a", ["--cache", cache.path])
        _ = try cluster.wait("cache", seconds: 30) { $0["done", default: 0] >= 10 }
        let workerLog = cluster.state.url.appendingPathComponent("worker-a.log")
        var text = try String(contentsOf: workerLog, encoding: .utf8)
        #expect(text.contains("the cache volume of worker a is full: \(cache.path)") && text.contains("there is room again"), "\(cluster.tail())")
        // Then something else fills it: the worker pauses, says so, and fails nothing.
        let filler = volume.appendingPathComponent("filler")
        try Self.fill(filler)
        text = try Self.waitForLog(workerLog, containing: "still no room")
        #expect(text.contains("still no room") && text.contains("MiB free"), "\(cluster.tail())")
        let stalled = try cluster.counts("cache")
        #expect(stalled["dead"] == nil && stalled["failed"] == nil && stalled["done", default: 0] < 30, "\(stalled)")
        try FileManager.default.removeItem(at: filler)
        _ = try cluster.wait("cache", seconds: 90) { $0["done"] == 30 }
        let attempts = try cluster.attempts("cache")
        #expect(attempts["done"] == 30 && attempts["handed-back", default: 0] >= 2 && attempts.keys.allSatisfy { ["done", "handed-back"].contains($0) },
                "\(attempts)")
        cluster.signalWorker("a", SIGKILL)
        cluster.killCoordinator()
    }

    /// A partition between one worker and the coordinator (a proxy holding
    /// the traffic both ways): the worker stops its stage within two leases,
    /// the job runs on another worker, and after healing the cut-off
    /// worker's late messages change nothing: one accepted attempt.
    @Test func aWorkerCutOffStopsItsWorkAndOneAttemptIsAccepted() throws {
        let cluster = try Cluster(leaseSeconds: 2)
        try cluster.startCoordinator()
        let proxy = try FaultProxy(to: cluster.endpoint)
        try cluster.submit(Self.diagnostic("p", #""jobs": 1, "seconds": 6"#))
        try cluster.startWorker("far", via: proxy.endpoint)
        _ = try cluster.wait("p", seconds: 20) { $0["leased"] == 1 }
        proxy.hold([.toCoordinator, .toWorkers])
        let cut = Date()
        try cluster.startWorker("near")
        let far = cluster.state.url.appendingPathComponent("worker-far.log")
        while Date().timeIntervalSince(cut) < 15, !(try String(contentsOf: far, encoding: .utf8)).contains("has not been heard from") {
            Thread.sleep(forTimeInterval: 0.1)
        }
        let stopped = Date().timeIntervalSince(cut)
        // Two leases of silence (a restarted coordinator's grace), then the next 50 ms poll.
        #expect(stopped < 3 * cluster.leaseSeconds, "stopped after \(stopped) s: \(cluster.tail())")
        #expect(try String(contentsOf: far, encoding: .utf8).contains("abandoned a job"))
        _ = try cluster.wait("p", seconds: 30) { $0["done"] == 1 }
        proxy.heal()
        Thread.sleep(forTimeInterval: 2)   // the far worker's held messages arrive now
        let attempts = try cluster.attempts("p")
        #expect(attempts["done"] == 1 && attempts["expired"] == 1 && attempts.values.reduce(0, +) == 2, "\(attempts)")
        let near = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-near.log"), encoding: .utf8)
        #expect(near.contains("kind=diagnostic"), "the other worker ran it: \(near)")
    }

    /// One way only: the coordinator hears the worker but the worker hears
    /// nothing. The worker stops its stage within two leases and asks for no
    /// job it could never receive; healed, it takes work again.
    @Test func aWorkerThatCannotHearTheCoordinatorStopsAndAsksForNothingUntilHealed() throws {
        let cluster = try Cluster(leaseSeconds: 2)
        try cluster.startCoordinator()
        let proxy = try FaultProxy(to: cluster.endpoint)
        try cluster.submit(Self.diagnostic("o", #""jobs": 6, "seconds": 1.5"#, attempts: 2))
        try cluster.startWorker("deaf", via: proxy.endpoint)
        _ = try cluster.wait("o", seconds: 20) { $0["leased"] == 1 }
        proxy.hold([.toWorkers])
        Thread.sleep(forTimeInterval: 5 * cluster.leaseSeconds)
        let deaf = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-deaf.log"), encoding: .utf8)
        #expect(deaf.contains("has not been heard from"), "\(cluster.tail())")
        // Only the job in hand expired: no job was leased to it across the deaf link (each would expire, an attempt spent).
        let meanwhile = try cluster.attempts("o")
        #expect(meanwhile["expired"] == 1 && meanwhile["running"] == nil, "\(meanwhile)")
        proxy.heal()
        _ = try cluster.wait("o", seconds: 40) { $0["done"] == 6 }
        #expect(try cluster.counts("o") == ["done": 6])
    }

    func firstDeadKey(_ cluster: Cluster) throws -> String {
        // The dead job is the chain's first: the only one that ever ran.
        let text = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-a.log"), encoding: .utf8)
        guard let range = text.range(of: "key=") else { throw ClusterError("no job in the worker's log") }
        return String(text[range.upperBound...].prefix(12))
    }
}
