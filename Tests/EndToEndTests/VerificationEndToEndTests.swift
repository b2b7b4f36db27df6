import Foundation
import Testing
import TestSupport
import Vision

/// A worker that computes wrong results and hashes them correctly, caught
/// by verification: real processes on loopback.
@Suite(.serialized) struct VerificationEndToEndTests {
    /// Every job run twice; one of three workers lies (an extra byte in
    /// every output, 0.01 on every metric, all hashed correctly), one
    /// reports another machine kind. Every job the liar ran is quarantined
    /// with both workers named and nothing it produced is used; the honest
    /// pairs agree, across machine kinds by the stage's metrics. With the
    /// liar gone, `resolve` keeps an honest run or runs the job again, and
    /// the sweep completes.
    @Test func aLyingWorkerIsCaughtAndItsJobsQuarantinedUntilResolved() throws {
        let cluster = try Cluster()
        try cluster.startCoordinator()
        try cluster.submit(#"{"name": "v", "verify": 1, "diagnostic": {"jobs": 12, "seconds": 0.05}}"#)
        // The liar alone first: its runs are held (no worker may verify its own) ...
        try cluster.startWorker("liar", ["--wrong-results-for-fault-tests"])
        _ = try cluster.wait("v", seconds: 30) { $0["verifying", default: 0] >= 3 }
        #expect(try cluster.counts("v")["done"] == nil, "nothing the liar ran alone counts")
        // ... then two honest workers, one of another machine kind.
        try cluster.startWorker("honest-a")
        try cluster.startWorker("honest-b", ["--machine-kind", "test-kind Haswell"])
        let settled = try cluster.wait("v", seconds: 60) { $0["done", default: 0] + $0["quarantined", default: 0] == 12 }
        let quarantined = settled["quarantined", default: 0]
        #expect(quarantined >= 3, "\(settled)")
        let status = try cluster.statusJSON("v")
        #expect(status["verified"] as? Int == settled["done", default: 0], "every done job was verified: \(status)")
        let problems = status["problems"] as? [[String: Any]] ?? []
        #expect(problems.count == quarantined)
        for problem in problems {
            let error = problem["error"] as? String ?? ""
            #expect(error.contains("verification failed: worker") && error.contains("liar") && error.contains("honest-"), "\(error)")
        }
        let log = try String(contentsOf: cluster.logs[0], encoding: .utf8)
        #expect(log.contains("quarantined a job"), "\(cluster.tail())")
        // The liar leaves; the first quarantined job keeps its honest run, the rest run again.
        cluster.signalWorker("liar", SIGKILL)
        for (i, problem) in problems.enumerated() {
            let key = try #require(problem["key"] as? String)
            let explanation = try JSONSerialization.jsonObject(with: Data(try cluster.command(["explain", key, "--json"]).utf8)) as? [String: Any]
            let runs = explanation?["checkRuns"] as? [[String: Any]] ?? []
            #expect(runs.count == 2 && Set(runs.compactMap { $0["worker"] as? String }).contains("liar"), "\(runs)")
            if i == 0 {
                let honest = try #require(runs.first { $0["worker"] as? String != "liar" }?["token"] as? Int)
                #expect(try cluster.command(["resolve", key, "--keep", "\(honest)"]).contains("done with attempt \(honest)'s run"))
            } else {
                #expect(try cluster.command(["resolve", key, "--rerun"]).contains("queued to run again"))
            }
        }
        _ = try cluster.wait("v", seconds: 60) { $0["done"] == 12 }
        #expect(try cluster.statusJSON("v")["verified"] as? Int == 12 - 1, "all but the kept run were verified by two honest workers")
        let refused = try cluster.run(["resolve", String((problems.first?["key"] as? String ?? "").prefix(12)), "--rerun"])
        #expect(refused.status != 0 && refused.errors.contains("not quarantined"), "\(refused)")
    }

    /// Verification rests on the stages being deterministic on one machine
    /// kind: a small method sweep with every job run on both of two workers
    /// (separate processes, separate caches) agrees byte for byte on every
    /// output of every stage.
    @Test func everyMethodStageGivesTheSameBytesOnTwoWorkersOfOneKind() throws {
        let cluster = try Cluster(leaseSeconds: 10)
        let data = cluster.state.url.appendingPathComponent("data")
        try SyntheticBenchmark.write(to: data, seed: 5, size: .small, only: ["pin_grid"])
        try cluster.startCoordinator()
        try cluster.submit("""
            {"name": "m", "dataset": "\(data.path)", "categories": ["pin_grid"], "max_attempts": 1, "verify": 1,
             "grid": {"n_shot": 2, "image_size": 64, "patch_image_size": 64, "epochs": 2, "memory_types": ["hcp"], "unet_epochs": 1}}
            """)
        try cluster.startWorker("a")
        try cluster.startWorker("b")
        // preprocess, patch-features, segment-train, pseudo-label, unet-train, bank-fit, evaluate.
        let counts = try cluster.wait("m", seconds: 600) { $0["done", default: 0] + $0["quarantined", default: 0] + $0["dead", default: 0] == 7 }
        let table = try cluster.command(["status", "m"])
        #expect(counts == ["done": 7], "\(table)\n\(cluster.tail())")
        let status = try cluster.statusJSON("m")
        #expect(status["verified"] as? Int == 7 && (status["attempts"] as? [String: Int])?["done"] == 14, "\(status)")
    }
}
