import Foundation
import Testing

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

    func firstDeadKey(_ cluster: Cluster) throws -> String {
        // The dead job is the chain's first: the only one that ever ran.
        let text = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-a.log"), encoding: .utf8)
        guard let range = text.range(of: "key=") else { throw ClusterError("no job in the worker's log") }
        return String(text[range.upperBound...].prefix(12))
    }
}
