import Foundation
import GRDB
import Shared

/// Progress of one sweep: job counts per stage kind and state.
public struct SweepStatus: Codable, Equatable, Sendable {
    public var sweep: String
    public var priority: Int
    /// kind -> state -> count.
    public var counts: [String: [String: Int]]
    /// Unfinished jobs whose last attempt failed (retrying, failed or dead),
    /// with why: the first `problemLimit` by stage order.
    public var problems: [Problem] = []

    public struct Problem: Codable, Equatable, Sendable {
        public var key: String, kind: String, category: String, state: String
        public var attempts: Int, maxAttempts: Int
        public var error: String
    }

    /// Jobs leased now: who runs them, for how long, and how far they say they are.
    public var running: [Running] = []

    public struct Running: Codable, Equatable, Sendable {
        public var key: String, kind: String, category: String, worker: String
        public var elapsedSeconds: Double
        /// The stage's own count (epochs, images), when it reports one.
        public var done: Int?, total: Int?, unit: String?
        /// The first count this attempt reported, and the seconds since the
        /// coordinator heard it: the pace is measured from there (a stage
        /// resumed from a checkpoint starts its count part of the way).
        public var baseDone: Int? = nil, sinceBaseSeconds: Double? = nil
        /// The time the rest takes at the pace since the first count, once
        /// the count has moved on from it.
        public var remainingSeconds: Double? {
            guard let done, let total, total >= done, let baseDone, let sinceBaseSeconds, done > baseDone else { return nil }
            return sinceBaseSeconds * Double(total - done) / Double(done - baseDone)
        }
    }

    /// Done jobs whose peak resident memory, as their worker measured it,
    /// went above the estimate they were dispatched by (the estimate is
    /// then too low for this data: a worker could be sent more than it holds).
    public var overEstimates: [OverEstimate] = []

    /// Attempts over the sweep's jobs by outcome (done, failed, expired,
    /// refused, handed-back, cancelled, running): what the sweep cost,
    /// retries included.
    public var attempts: [String: Int] = [:]

    /// Jobs run twice by different workers and found to agree (the sweep's `verify` share).
    public var verified = 0

    public struct OverEstimate: Codable, Equatable, Sendable {
        public var key: String, kind: String, category: String, worker: String
        public var peakMiB: Double, estimateMiB: Int
    }

    public var total: Int { counts.values.flatMap(\.values).reduce(0, +) }
    public func count(_ state: JobState) -> Int { counts.values.compactMap { $0[state.rawValue] }.reduce(0, +) }
    public var finished: Bool { count(.pending) + count(.ready) + count(.leased) + count(.failed) + count(.verifying) == 0 }
}

/// Why a job is or is not reused: how its key differs from the nearest done
/// job of the same stage kind and category.
public struct Explanation: Codable, Equatable, Sendable {
    public var key: String
    public var kind: String
    public var category: String
    public var state: String
    public var attempts: Int
    public var error: String?
    /// What a worker must offer to be given the job, MiB.
    public var memoryMiB: Int = 0
    public var parameters: [String: ParameterValue]
    /// role -> (input key, its state).
    public var inputs: [String: String]
    public var inputStates: [String: String]
    /// The nearest done job of the same kind and category, when this one is not done.
    public var nearestDone: String?
    /// Parameter name -> "this value / nearest value"; input role -> "this key / nearest key".
    public var differences: [String: String]
    /// The accepted attempt, when the job is done.
    public var run: Run?
    /// Runs kept for verification (held, compared, or in quarantine), oldest first.
    public var checkRuns: [JobStore.CheckRun] = []

    public struct Run: Codable, Equatable, Sendable {
        public var worker: String
        /// Wall seconds and peak resident memory (MiB) as the worker measured them; nil where it did not say.
        public var seconds: Double?, peakMiB: Double?
    }
}

extension JobStore {
    /// How many failing jobs `status` lists per sweep.
    public static let problemLimit = 20

    public func status(sweep name: String? = nil, now: Double = Date().timeIntervalSince1970) throws -> [SweepStatus] {
        try read { db in
            let sweeps = try Row.fetchAll(db, sql: "SELECT id, name, priority FROM sweep \(name == nil ? "" : "WHERE name = ?") ORDER BY id",
                                          arguments: name.map { [$0] } ?? [])
            if let name, sweeps.isEmpty { throw StoreError.unknownSweep(name) }
            return try sweeps.map { sweep in
                var counts: [String: [String: Int]] = [:]
                for row in try Row.fetchAll(db, sql: """
                    SELECT job.kind, job.state, COUNT(*) AS n FROM sweep_job JOIN job ON job.key = sweep_job.job
                    WHERE sweep_job.sweep_id = ? GROUP BY job.kind, job.state
                    """, arguments: [sweep["id"] as Int64]) {
                    counts[row["kind"], default: [:]][row["state"]] = row["n"]
                }
                let problems = try Row.fetchAll(db, sql: """
                    SELECT job.key, job.kind, job.category, job.state, job.attempts, job.max_attempts, job.error
                    FROM sweep_job JOIN job ON job.key = sweep_job.job
                    WHERE sweep_job.sweep_id = ? AND job.error IS NOT NULL AND job.state NOT IN (\(JobState.done.sql), \(JobState.cancelled.sql))
                    ORDER BY job.seq LIMIT ?
                    """, arguments: [sweep["id"] as Int64, Self.problemLimit]).map { row in
                    SweepStatus.Problem(key: row["key"], kind: row["kind"], category: row["category"], state: row["state"],
                                        attempts: row["attempts"], maxAttempts: row["max_attempts"], error: row["error"])
                }
                // Ready jobs no worker seen in the last 10 minutes could hold: they would wait forever in silence.
                var waiting: [SweepStatus.Problem] = []
                let largest = try String.fetchAll(db, sql: "SELECT resources FROM worker WHERE last_seen >= ?", arguments: [now - 600])
                    .compactMap { try? JSONDecoder().decode(WorkerResources.self, from: Data($0.utf8)) }.map { Int($0.memoryBytes >> 20) }.max()
                if let largest {
                    waiting = try Row.fetchAll(db, sql: """
                        SELECT job.key, job.kind, job.category, job.state, job.attempts, job.max_attempts, job.memory_mib
                        FROM sweep_job JOIN job ON job.key = sweep_job.job
                        WHERE sweep_job.sweep_id = ? AND job.state = \(JobState.ready.sql) AND job.memory_mib > ? ORDER BY job.seq LIMIT ?
                        """, arguments: [sweep["id"] as Int64, largest, Self.problemLimit]).map { row in
                        SweepStatus.Problem(key: row["key"], kind: row["kind"], category: row["category"], state: row["state"],
                                            attempts: row["attempts"], maxAttempts: row["max_attempts"],
                                            error: "needs \(row["memory_mib"] as Int) MiB; the largest worker seen offers \(largest) MiB")
                    }
                }
                let running = try Row.fetchAll(db, sql: """
                    SELECT job.key, job.kind, job.category, lease.worker, attempt.started_at,
                           lease.progress_done, lease.progress_total, lease.progress_unit,
                           lease.progress_base, lease.progress_base_at
                    FROM sweep_job JOIN job ON job.key = sweep_job.job JOIN lease ON lease.job = job.id
                    JOIN attempt ON attempt.token = lease.token
                    WHERE sweep_job.sweep_id = ? ORDER BY attempt.started_at
                    """, arguments: [sweep["id"] as Int64]).map { row in
                    SweepStatus.Running(key: row["key"], kind: row["kind"], category: row["category"], worker: row["worker"],
                                        elapsedSeconds: max(0, now - (row["started_at"] as Double)),
                                        done: row["progress_done"], total: row["progress_total"], unit: row["progress_unit"],
                                        baseDone: row["progress_base"],
                                        sinceBaseSeconds: (row["progress_base_at"] as Double?).map { max(0, now - $0) })
                }
                let overEstimates = try Row.fetchAll(db, sql: """
                    SELECT job.key, job.kind, job.category, job.memory_mib, attempt.worker, attempt.peak_mib
                    FROM sweep_job JOIN job ON job.key = sweep_job.job JOIN attempt ON attempt.job = job.id
                    WHERE sweep_job.sweep_id = ? AND attempt.outcome = \(AttemptOutcome.done.sql) AND attempt.peak_mib > job.memory_mib
                    ORDER BY job.seq LIMIT ?
                    """, arguments: [sweep["id"] as Int64, Self.problemLimit]).map { row in
                    SweepStatus.OverEstimate(key: row["key"], kind: row["kind"], category: row["category"], worker: row["worker"],
                                             peakMiB: row["peak_mib"], estimateMiB: row["memory_mib"])
                }
                var status = SweepStatus(sweep: sweep["name"], priority: sweep["priority"], counts: counts, problems: problems + waiting,
                                         running: running)
                status.overEstimates = overEstimates
                for row in try Row.fetchAll(db, sql: """
                    SELECT attempt.outcome, COUNT(*) AS n FROM sweep_job JOIN job ON job.key = sweep_job.job JOIN attempt ON attempt.job = job.id
                    WHERE sweep_job.sweep_id = ? GROUP BY attempt.outcome
                    """, arguments: [sweep["id"] as Int64]) {
                    status.attempts[row["outcome"]] = row["n"]
                }
                status.verified = try Int.fetchOne(db, sql: """
                    SELECT COUNT(*) FROM sweep_job JOIN job ON job.key = sweep_job.job
                    WHERE sweep_job.sweep_id = ? AND job.verify = 3 AND job.state = \(JobState.done.sql)
                    """, arguments: [sweep["id"] as Int64]) ?? 0
                return status
            }
        }
    }

    public func sweepNames() throws -> [String] {
        try read { db in try String.fetchAll(db, sql: "SELECT name FROM sweep ORDER BY id") }
    }

    /// Requeues a sweep's failed, dead, blocked and cancelled jobs (only of
    /// `kinds` when given) with their attempts reset. A job whose input is
    /// still dead stays blocked. Returns how many jobs were requeued.
    @discardableResult
    public func resume(sweep name: String, kinds: [StageKind]? = nil) throws -> Int {
        try write { db in
            let id = try sweepID(db, name)
            try db.execute(sql: "UPDATE sweep SET cancelled_at = NULL WHERE id = ?", arguments: [id])
            let keys = try String.fetchAll(db, sql: """
                SELECT job.key FROM sweep_job JOIN job ON job.key = sweep_job.job
                WHERE sweep_job.sweep_id = ? AND job.state IN (\(JobState.failed.sql), \(JobState.dead.sql), \(JobState.blocked.sql), \(JobState.cancelled.sql)) ORDER BY job.seq
                """, arguments: [id])
            let allowed = kinds.map(Set.init)
            var requeued = 0
            for key in keys {
                guard let row = try Row.fetchOne(db, sql: "SELECT kind, state FROM job WHERE key = ?", arguments: [key]) else {
                    throw StoreError.corrupt("sweep \(name) lists job \(key), which is not in the job table")
                }
                let what = "job \(key)"
                let kind: StageKind = try row.value("kind", of: what), current: JobState = try row.value("state", of: what)
                let parentStates = try JobState.fetchAll(db, sql: """
                    SELECT job.state FROM edge JOIN job ON job.key = edge.parent WHERE edge.child = ?
                    """, arguments: [key])
                let (state, waiting) = Self.queueState(inputs: parentStates)
                if let allowed, !allowed.contains(kind) {
                    // Not a kind to requeue: only a blocked job whose inputs are now fine is released.
                    if state == .blocked || current != .blocked { continue }
                }
                try Self.requeue(db, key: key, state: state, waiting: waiting)
                if state != .blocked { requeued += 1 }
            }
            return requeued
        }
    }

    /// Cancels a sweep's unfinished jobs that no other sweep needs (a
    /// cancelled sweep needs none: of two sweeps sharing a job, cancelling
    /// both cancels it); their leases end, so a late result from a worker is
    /// refused.
    @discardableResult
    public func cancel(sweep name: String, now: Double) throws -> Int {
        try write { db in
            let id = try sweepID(db, name)
            try db.execute(sql: "UPDATE sweep SET cancelled_at = ? WHERE id = ?", arguments: [now, id])
            let condition = """
                key IN (SELECT job FROM sweep_job WHERE sweep_id = ?)
                AND key NOT IN (SELECT job FROM sweep_job WHERE sweep_id != ? AND sweep_id NOT IN (SELECT id FROM sweep WHERE cancelled_at IS NOT NULL))
                AND state NOT IN (\(JobState.done.sql), \(JobState.dead.sql), \(JobState.cancelled.sql))
                """
            try db.execute(sql: """
                UPDATE attempt SET outcome = \(AttemptOutcome.cancelled.sql), ended_at = ? WHERE outcome = \(AttemptOutcome.running.sql)
                AND job IN (SELECT id FROM job WHERE \(condition))
                """, arguments: [now, id, id])
            try db.execute(sql: "DELETE FROM lease WHERE job IN (SELECT id FROM job WHERE \(condition))", arguments: [id, id])
            try db.execute(sql: "UPDATE job SET state = \(JobState.cancelled.sql) WHERE \(condition)", arguments: [id, id])
            return db.changesCount
        }
    }

    public func explain(_ key: JobKey) throws -> Explanation {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM job WHERE key = ?", arguments: [key.hex]) else {
                throw StoreError.unknownJob(key.hex)
            }
            let decoder = JSONDecoder()
            func material(_ text: String) throws -> KeyMaterial { try decoder.decode(KeyMaterial.self, from: Data(text.utf8)) }
            let mine = try material(row["material"])
            var inputStates: [String: String] = [:]
            for (role, parent) in mine.inputs {
                inputStates[role] = try String.fetchOne(db, sql: "SELECT state FROM job WHERE key = ?", arguments: [parent]) ?? "unknown"
            }
            var explanation = Explanation(key: key.hex, kind: row["kind"], category: row["category"], state: row["state"],
                                          attempts: row["attempts"], error: row["error"], parameters: mine.parameters,
                                          inputs: mine.inputs, inputStates: inputStates, nearestDone: nil, differences: [:])
            explanation.memoryMiB = row["memory_mib"]
            explanation.checkRuns = try Self.checkRuns(db, key: key.hex)
            if let run = try Row.fetchOne(db, sql: "SELECT worker, seconds, peak_mib FROM attempt WHERE job = ? AND outcome = \(AttemptOutcome.done.sql) ORDER BY token DESC",
                                          arguments: [row["id"] as Int64]) {
                explanation.run = .init(worker: run["worker"], seconds: run["seconds"], peakMiB: run["peak_mib"])
            }
            guard explanation.state != JobState.done.rawValue else { return explanation }
            var best: (key: String, differences: [String: String])?
            for other in try Row.fetchAll(db, sql: "SELECT key, material FROM job WHERE kind = ? AND category = ? AND state = \(JobState.done.sql)",
                                          arguments: [explanation.kind, explanation.category]) {
                let theirs = try material(other["material"])
                var differences: [String: String] = [:]
                if theirs.version != mine.version { differences["code_version"] = "\(mine.version) / \(theirs.version)" }
                for name in Set(mine.parameters.keys).union(theirs.parameters.keys) where mine.parameters[name] != theirs.parameters[name] {
                    differences[name] = "\(mine.parameters[name]?.description ?? "-") / \(theirs.parameters[name]?.description ?? "-")"
                }
                for role in Set(mine.inputs.keys).union(theirs.inputs.keys) where mine.inputs[role] != theirs.inputs[role] {
                    differences["input \(role)"] = "\(mine.inputs[role].map { String($0.prefix(12)) } ?? "-") / \(theirs.inputs[role].map { String($0.prefix(12)) } ?? "-")"
                }
                if best == nil || differences.count < best!.differences.count { best = (other["key"], differences) }
            }
            explanation.nearestDone = best?.key
            explanation.differences = best?.differences ?? [:]
            return explanation
        }
    }

    /// Result rows of a sweep: (category, setting JSON, metric, value).
    public func results(sweep name: String) throws -> [(category: String, setting: String, metric: String, value: Double)] {
        try read { db in
            let id = try sweepID(db, name)
            return try Row.fetchAll(db, sql: "SELECT category, setting, metric, value FROM result WHERE sweep_id = ? ORDER BY category, setting, metric",
                                    arguments: [id]).map { ($0["category"], $0["setting"], $0["metric"], $0["value"]) }
        }
    }
}
