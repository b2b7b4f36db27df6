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

    func firstDeadKey(_ cluster: Cluster) throws -> String {
        // The dead job is the chain's first: the only one that ever ran.
        let text = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-a.log"), encoding: .utf8)
        guard let range = text.range(of: "key=") else { throw ClusterError("no job in the worker's log") }
        return String(text[range.upperBound...].prefix(12))
    }
}
