import Foundation
import GRDB
import Shared

/// A job handed to a worker: the attempt's fencing token, what to run, and
/// the artifacts of its inputs.
public struct Assignment: Equatable, Sendable {
    public let token: Int64
    public let key: JobKey
    public let kind: StageKind
    public let category: String
    /// The stage's parameters as canonical JSON.
    public let parameters: String
    /// Input role -> (output name -> artifact hash).
    public let inputs: [String: [String: String]]
}

/// Dispatch: which ready job a worker gets (DESIGN.md, Coordinator: by
/// priority, then the stage's level (``StageKind/level``: the longest
/// chain's head first), then age, among the jobs whose stage and memory fit it).
extension JobStore {
    /// The highest-priority ready job whose stage fits the worker, of the
    /// highest level among those, the oldest among those, leased to it; nil when none.
    public func dispatch(worker: String, machine: String = "", memoryMiB: Int, kinds runnable: Set<StageKind> = Set(StageKind.allCases),
                         now: Double, leaseSeconds: Double) throws -> Assignment? {
        try write { db in
            try Self.dispatch(db, worker: worker, machine: machine, memoryMiB: memoryMiB, kinds: runnable, now: now, leaseSeconds: leaseSeconds)
        }
    }

    /// Up to `count` jobs for one worker, leased in one transaction (a
    /// worker that holds a window of short jobs asks for several at once).
    /// This is the request of a worker that has nothing in hand or was told
    /// there was nothing (it asks again every fraction of a second), so
    /// whether any ready job fits it at all is looked up first
    /// (``anyReadyJobFits(_:memoryMiB:kinds:)``).
    public func dispatch(worker: String, machine: String = "", memoryMiB: Int, kinds runnable: Set<StageKind> = Set(StageKind.allCases),
                         now: Double, leaseSeconds: Double, count: Int) throws -> [Assignment] {
        try write { db in
            try Self.dispatch(db, worker: worker, machine: machine, memoryMiB: memoryMiB, kinds: runnable, now: now, leaseSeconds: leaseSeconds,
                              count: count, checkingFitFirst: true)
        }
    }

    /// `checkingFitFirst`: the ready jobs are scanned in dispatch order only
    /// when one of them fits the worker. The scan passes every ready job
    /// ahead of the first that fits: for a worker that fits none (a small
    /// machine behind a queue of segment-trains) that was every ready job,
    /// 2-3 ms of the serving thread per request at 1,515 of them, every
    /// 0.2 s per idle worker. Results that ask for the next jobs skip the
    /// check: their worker has just run one, and the check would cost a
    /// lookup per job in the common case where the first ready job fits.
    static func dispatch(_ db: Database, worker: String, machine: String, memoryMiB: Int, kinds runnable: Set<StageKind>,
                         now: Double, leaseSeconds: Double, count: Int, checkingFitFirst: Bool = false) throws -> [Assignment] {
        var jobs: [Assignment] = [], verifying = true
        let scanReady = try !checkingFitFirst || anyReadyJobFits(db, memoryMiB: memoryMiB, kinds: runnable)
        while jobs.count < count, let a = try dispatch(db, worker: worker, machine: machine, memoryMiB: memoryMiB, kinds: runnable,
                                                       now: now, leaseSeconds: leaseSeconds, verifying: &verifying, scanReady: scanReady) {
            jobs.append(a)
        }
        return jobs
    }

    /// Whether any ready job of these kinds needs at most `memoryMiB`:
    /// a seek per kind in `job_ready_fit` (the ready jobs by kind and
    /// memory, a partial index), however many ready jobs there are.
    static func anyReadyJobFits(_ db: Database, memoryMiB: Int, kinds runnable: Set<StageKind>) throws -> Bool {
        let kinds = kindNames(runnable)
        guard !kinds.isEmpty else { return false }
        return try Bool.fetchOne(db, cached: anyReadyJobFitsSQL(kinds: kinds.count), arguments: StatementArguments(kinds + [memoryMiB])) ?? false
    }

    static func anyReadyJobFitsSQL(kinds: Int) -> String {
        """
        SELECT 1 FROM job INDEXED BY job_ready_fit
        WHERE state = \(JobState.ready.sql) AND kind IN (\(marks(kinds))) AND memory_mib <= ? LIMIT 1
        """
    }

    /// The stage kinds a worker runs, by name, in a fixed order (so a cached statement is reused).
    static func kindNames(_ runnable: Set<StageKind>) -> [String] {
        StageKind.allCases.filter { runnable.contains($0) }.map(\.rawValue)
    }

    /// `count` SQL parameter marks for an IN list.
    static func marks(_ count: Int) -> String { Array(repeating: "?", count: count).joined(separator: ",") }

    /// Jobs waiting for verification go first (their readers wait on them),
    /// to a worker that may verify them (``verifyingJob(_:worker:machine:kinds:memoryMiB:)``).
    static func dispatch(_ db: Database, worker: String, machine: String, memoryMiB: Int, kinds runnable: Set<StageKind>,
                         now: Double, leaseSeconds: Double) throws -> Assignment? {
        var verifying = true
        return try dispatch(db, worker: worker, machine: machine, memoryMiB: memoryMiB, kinds: runnable, now: now, leaseSeconds: leaseSeconds,
                            verifying: &verifying)
    }

    /// `verifying`: whether a job waiting for verification may be there for
    /// this worker; set false once none is (within one transaction none appears).
    /// `scanReady`: false when no ready job fits (only a verification may).
    static func dispatch(_ db: Database, worker: String, machine: String, memoryMiB: Int, kinds runnable: Set<StageKind>,
                         now: Double, leaseSeconds: Double, verifying: inout Bool, scanReady: Bool = true) throws -> Assignment? {
        let kinds = kindNames(runnable)
        guard !kinds.isEmpty else { return nil }
        let verify = verifying ? try verifyingJob(db, worker: worker, machine: machine, kinds: kinds, memoryMiB: memoryMiB) : nil
        verifying = verify != nil
        guard scanReady || verify != nil else { return nil }
        guard let row = try verify ?? Row.fetchOne(db, cached: """
            SELECT id, key, kind, category, parameters FROM job INDEXED BY job_queue
            WHERE state = \(JobState.ready.sql) AND kind IN (\(marks(kinds.count))) AND memory_mib <= ? ORDER BY priority DESC, level DESC, seq LIMIT 1
            """, arguments: StatementArguments(kinds + [memoryMiB])) else { return nil }
        let job = try JobRef(row, of: "a ready job"), key = job.key
        let what = "job \(key)"
        let kind: StageKind = try row.value("kind", of: what)
        guard let jobKey = JobKey(hex: key) else { throw JobStore.StoreError.corrupt("\(what): the key is not 64 hex digits") }
        try db.run("INSERT INTO attempt (job, worker, started_at, outcome) VALUES (?, ?, ?, \(AttemptOutcome.running.sql))",
                   arguments: [job.id, worker, now])
        let token = db.lastInsertedRowID
        try db.run("UPDATE job SET state = \(JobState.leased.sql), attempts = attempts + 1 WHERE id = ?", arguments: [job.id])
        try db.run("INSERT OR REPLACE INTO lease (job, token, worker, expires_at) VALUES (?, ?, ?, ?)",
                   arguments: [job.id, token, worker, now + leaseSeconds])
        var inputs: [String: [String: String]] = [:]
        for edge in try Row.fetchAll(db, cached: inputsSQL, arguments: [key]) {
            let parent: String = try edge.value("parent", of: "\(what)'s input"), role: String = try edge.value("role", of: "\(what)'s input")
            var named: [String: String] = [:]
            for output in try Row.fetchAll(db, cached: outputsSQL, arguments: [try edge.value("id", of: "\(what)'s input") as Int64]) {
                named[try output.value("name", of: "output of job \(parent)")] = try output.value("hash", of: "output of job \(parent)")
            }
            inputs[role] = named
        }
        return Assignment(token: token, key: jobKey, kind: kind, category: try row.value("category", of: what),
                          parameters: try row.value("parameters", of: what), inputs: inputs)
    }

    /// A job's inputs by its key: role, the input's key and its id.
    static let inputsSQL = "SELECT edge.role, edge.parent, job.id FROM edge JOIN job ON job.key = edge.parent WHERE edge.child = ?"
    /// A job's outputs by its id.
    static let outputsSQL = "SELECT name, hash FROM job_output WHERE job = ?"
}
