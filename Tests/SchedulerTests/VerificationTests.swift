import Foundation
import GRDB
import Testing
import TestSupport
import Shared
@testable import Scheduler

/// Verification of results in the state machine: a sampled job's run is
/// held until another worker's agrees; runs that disagree quarantine it.
@Suite struct VerificationTests {
    let dir: TemporaryDirectory
    let store: JobStore
    static let zen = "x86_64 OpenBLAS Zen", haswell = "x86_64 OpenBLAS Haswell"

    init() throws {
        dir = try TemporaryDirectory()
        store = try JobStore(path: dir.url.appendingPathComponent("state.sqlite").path)
    }

    /// A chain of `jobs` diagnostic jobs, every one verified.
    func submitChain(jobs: Int, verify: Double = 1, maxAttempts: Int = 2) throws {
        var s = Sweep(name: "v", dataset: "", categories: [])
        var d = Sweep.Diagnostic()
        d.jobs = jobs; d.chained = true
        s.diagnostic = d
        s.maxAttempts = maxAttempts
        s.verify = verify
        try store.submit(s, file: "v")
    }

    static func hash(_ c: Character) -> String { String(repeating: c, count: 64) }

    func run(_ worker: String, machine: String = zen, output: Character = "a", metric: Double = 1, now: Double = 1) throws -> (Assignment, String?)? {
        guard let a = try store.dispatch(worker: worker, machine: machine, memoryMiB: 1 << 20, now: now, leaseSeconds: 10) else { return nil }
        let result = try store.complete(token: a.token, outputs: ["echo.json": Self.hash(output)], metrics: ["index": metric],
                                        smallBlobs: [], machine: machine, now: now)
        #expect(result.verdict == .accepted)
        return (a, result.quarantined)
    }

    func state(_ key: JobKey) throws -> String {
        try store.pool.read { db in try String.fetchOne(db, sql: "SELECT state FROM job WHERE key = ?", arguments: [key.hex]) ?? "none" }
    }

    func outputs(_ key: JobKey) throws -> [String: String] {
        try store.pool.read { db in
            Dictionary(uniqueKeysWithValues: try Row.fetchAll(db, sql: JobStore.outputsOfKeySQL, arguments: [key.hex])
                .map { ($0["name"] as String, $0["hash"] as String) })
        }
    }

    @Test func aRunIsHeldUntilAnotherWorkersRunAgreesAndOnlyThenItsReaderIsReady() throws {
        try submitChain(jobs: 2)
        let (first, _) = try #require(try run("w1"))
        #expect(try state(first.key) == "verifying")
        #expect(try outputs(first.key).isEmpty, "a held run's outputs are not the job's yet")
        // Its reader is not ready, and the same worker is not given the job again.
        #expect(try store.dispatch(worker: "w1", machine: Self.zen, memoryMiB: 1 << 20, now: 2, leaseSeconds: 10) == nil)
        let (second, quarantined) = try #require(try run("w2", now: 3))
        #expect(second.key == first.key && quarantined == nil)
        #expect(try state(first.key) == "done")
        #expect(try outputs(first.key) == ["echo.json": Self.hash("a")])
        let status = try store.status(sweep: "v")[0]
        #expect(status.verified == 1 && status.attempts["done"] == 2)
        // The reader runs now (on either worker) and is verified in turn.
        let (reader, _) = try #require(try run("w1", now: 4))
        #expect(reader.key != first.key && reader.inputs["previous"] == ["echo.json": Self.hash("a")])
    }

    @Test func runsThatDisagreeQuarantineTheJobNamingBothWorkersAndBlockItsReaders() throws {
        try submitChain(jobs: 3)
        let (first, _) = try #require(try run("honest"))
        let (_, quarantined) = try #require(try run("liar", output: "b", metric: 1.01, now: 2))
        let reason = try #require(quarantined)
        #expect(reason.contains("worker honest") && reason.contains("worker liar") && reason.contains("echo.json")
                && reason.contains("index"), "\(reason)")
        #expect(try state(first.key) == "quarantined")
        let status = try store.status(sweep: "v")[0]
        #expect(status.count(.blocked) == 2 && status.finished && status.problems.first?.error == reason)
        #expect(try store.dispatch(worker: "third", machine: Self.zen, memoryMiB: 1 << 20, now: 3, leaseSeconds: 10) == nil)
        // Resolved by keeping the honest run: done with its outputs, the readers wait on it again.
        let runs = try store.checkRuns(first.key)
        #expect(runs.map(\.worker) == ["honest", "liar"])
        #expect(throws: JobStore.ResolveError.self) { try store.resolve(first.key, keep: .keep(token: 999)) }
        #expect(try store.resolve(first.key, keep: .keep(token: runs[0].token)) == 2)
        #expect(try state(first.key) == "done" && outputs(first.key) == ["echo.json": Self.hash("a")])
        #expect(try store.status(sweep: "v")[0].count(.ready) == 1)
        #expect(throws: JobStore.ResolveError.self) { try store.resolve(first.key, keep: .rerun) }
    }

    @Test func aQuarantinedJobRunAgainIsVerifiedAfresh() throws {
        try submitChain(jobs: 2)
        let (first, _) = try #require(try run("honest"))
        _ = try run("liar", output: "b", now: 2)
        #expect(try store.resolve(first.key, keep: .rerun) == 1)
        #expect(try state(first.key) == "ready" && store.checkRuns(first.key).isEmpty)
        _ = try run("honest", now: 3)
        let (_, quarantined) = try #require(try run("other", now: 4))
        #expect(try quarantined == nil && state(first.key) == "done")
    }

    /// Across machine kinds bytes differ by rounding: a stage with a
    /// declared tolerance compares its metrics within it; one without is
    /// re-run only on the first run's kind.
    @Test func acrossMachineKindsMetricsAreComparedWithinTheStagesTolerance() throws {
        try submitChain(jobs: 1)
        let (first, _) = try #require(try run("zen"))
        // The diagnostic stage's tolerance is 0: a Haswell run with other bytes but the same metric agrees.
        let (_, quarantined) = try #require(try run("haswell", machine: Self.haswell, output: "c", now: 2))
        #expect(try quarantined == nil && state(first.key) == "done")
        // Metrics beyond the tolerance disagree; a stage without one is never paired across kinds.
        let a = JobStore.CheckRun(token: 1, worker: "a", machine: Self.zen, outputs: ["roc.json": Self.hash("a")], metrics: ["logical_auroc": 0.9])
        var b = JobStore.CheckRun(token: 2, worker: "b", machine: Self.haswell, outputs: ["roc.json": Self.hash("b")], metrics: ["logical_auroc": 0.9004])
        #expect(JobStore.disagreement(a, b, kind: .evaluate) == nil)
        b.metrics["logical_auroc"] = 0.92
        #expect(JobStore.disagreement(a, b, kind: .evaluate)?.contains("logical_auroc 0.9 vs 0.92") == true)
        #expect(JobStore.disagreement(a, b, kind: .segmentTrain)?.contains("declares no tolerance") == true)
        b.machine = Self.zen
        b.metrics["logical_auroc"] = 0.9
        #expect(JobStore.disagreement(a, b, kind: .evaluate)?.contains("roc.json") == true, "one kind: bytes")
    }

    @Test func aStageWithoutToleranceWaitsForAWorkerOfTheFirstRunsKind() throws {
        var s = Sweep(name: "m", dataset: "d", categories: ["a"])
        s.grid.memoryTypes = ["h"].compactMap(MemoryCombination.init)
        s.verify = 1
        try store.submit(s, file: "m")
        let preprocess = try #require(try store.dispatch(worker: "zen", machine: Self.zen, memoryMiB: 1 << 20, now: 1, leaseSeconds: 10))
        #expect(preprocess.kind == .preprocess)
        _ = try store.complete(token: preprocess.token, outputs: ["x": Self.hash("a")], machine: Self.zen, now: 1)
        #expect(try store.dispatch(worker: "haswell", machine: Self.haswell, memoryMiB: 1 << 20, now: 2, leaseSeconds: 10) == nil)
        #expect(try store.dispatch(worker: "zen2", machine: Self.zen, memoryMiB: 1 << 20, now: 2, leaseSeconds: 10)?.key == preprocess.key)
    }

    /// A failed or handed-back verification run goes back to waiting for
    /// another worker (not to ready: the first worker must not take it), and
    /// its failures are counted afresh, not on top of the first run's.
    @Test func aFailedVerificationRunWaitsForAnotherWorkerAgain() throws {
        try submitChain(jobs: 1, maxAttempts: 1)
        let (first, _) = try #require(try run("w1"))
        let second = try #require(try store.dispatch(worker: "w2", machine: Self.zen, memoryMiB: 1 << 20, now: 2, leaseSeconds: 10))
        #expect(try store.handBack(token: second.token, now: 3) == .accepted)
        #expect(try state(first.key) == "verifying")
        #expect(try store.dispatch(worker: "w1", machine: Self.zen, memoryMiB: 1 << 20, now: 4, leaseSeconds: 10) == nil)
        let third = try #require(try store.dispatch(worker: "w3", machine: Self.zen, memoryMiB: 1 << 20, now: 5, leaseSeconds: 10))
        #expect(try store.fail(token: third.token, error: "oops", permanent: false, now: 6) == .accepted)
        #expect(try state(first.key) == "dead", "max_attempts 1 for the verification run")
        // Resumed: both runs again from scratch.
        #expect(try store.resume(sweep: "v") == 1)
        #expect(try state(first.key) == "ready" && store.checkRuns(first.key).isEmpty)
    }

    @Test func theSampleIsAShareOfTheJobsChosenByKeySoTheSameEveryTime() throws {
        var s = Sweep(name: "share", dataset: "", categories: [])
        var d = Sweep.Diagnostic()
        d.jobs = 400
        s.diagnostic = d
        s.verify = 0.25
        try store.submit(s, file: "share")
        let sampled = try store.pool.read { db in try String.fetchAll(db, sql: "SELECT key FROM job WHERE verify = 1 ORDER BY key") }
        // Binomial(400, 0.25): mean 100, sd 8.7; five sd either way.
        #expect((56...144).contains(sampled.count), "\(sampled.count)")
        #expect(sampled.allSatisfy { JobStore.sampled(JobKey(hex: $0)!, share: 0.25) })
        #expect(!JobStore.sampled(JobKey(hex: Self.hash("f"))!, share: 0.99) && JobStore.sampled(JobKey(hex: Self.hash("f"))!, share: 1))
        #expect(!JobStore.sampled(JobKey(hex: Self.hash("0"))!, share: 0) && JobStore.sampled(JobKey(hex: Self.hash("0"))!, share: 1e-9))
    }

    @Test func garbageCollectionKeepsTheRunsKeptForComparison() throws {
        try submitChain(jobs: 1)
        _ = try run("honest")
        _ = try run("liar", output: "b", now: 2)
        #expect(try store.referencedArtifacts().isSuperset(of: [Self.hash("a"), Self.hash("b")]))
    }
}
