import Foundation
import GRDB
import Shared

/// What became of a result or a failure a worker reported.
public enum Verdict: Equatable, Sendable {
    case accepted
    /// The token is not the job's current lease (expired and retried, or
    /// cancelled): the report is refused, the job's state is untouched.
    case stale
}

/// Leases with fencing tokens (DESIGN.md, Coordinator): every dispatch is
/// an attempt whose token (a number that only grows) the worker quotes in
/// heartbeats and reports; a lease not renewed in time expires and the job
/// is retried with backoff, up to its attempt limit, then it is dead and
/// everything downstream is blocked.
extension JobStore {
    /// The job `token` holds the lease of, if it still does.
    public func leasedJob(token: Int64) throws -> JobKey? {
        try read { db in
            try String.fetchOne(db, cached: "SELECT job.key FROM lease JOIN job ON job.id = lease.job WHERE lease.token = ?",
                                arguments: [token]).flatMap(JobKey.init(hex:))
        }
    }

    /// The worker holding the lease of `token` (nil when it holds none).
    public func leaseHolder(token: Int64) throws -> String? {
        try read { db in try String.fetchOne(db, cached: "SELECT worker FROM lease WHERE token = ?", arguments: [token]) }
    }

    /// Renews the lease of `token`; false when the token is no longer the
    /// job's lease (the worker should drop the job).
    public func heartbeat(token: Int64, now: Double, leaseSeconds: Double, progress: WireMessage.Progress? = nil) throws -> Bool {
        try write { db in
            if let progress {
                try db.run("""
                    UPDATE lease SET expires_at = ?, progress_done = ?, progress_total = ?, progress_unit = ?,
                                     progress_base = COALESCE(progress_base, ?), progress_base_at = COALESCE(progress_base_at, ?)
                    WHERE token = ?
                    """, arguments: [now + leaseSeconds, progress.done, progress.total, String(progress.unit.prefix(40)),
                                     progress.done, now, token])
            } else {
                try db.run("UPDATE lease SET expires_at = ? WHERE token = ?", arguments: [now + leaseSeconds, token])
            }
            return db.changesCount == 1
        }
    }

    /// Records a finished attempt: its outputs (name -> hash of an artifact
    /// already stored, or of a small one given here; the server has checked
    /// each stored size against the announced one), its metrics (evaluate jobs), and readies
    /// the jobs that waited on it. With `next`, the worker's next jobs (up
    /// to its count) are leased in the same transaction. `cost` is what the worker measured
    /// (wall seconds, peak MiB), kept on the attempt; `machine` the
    /// worker's machine kind (compared when the job is verified).
    /// `quarantined` says why, when this run disagreed with the job's other.
    public func complete(token: Int64, outputs: [String: String] = [:], metrics: [String: Double] = [:],
                         smallBlobs: [(hash: String, data: Data)] = [], cost: (seconds: Double, peakMiB: Double?)? = nil, machine: String = "",
                         now: Double, next: (worker: String, memoryMiB: Int, kinds: Set<StageKind>, leaseSeconds: Double, count: Int)? = nil)
        throws -> (verdict: Verdict, next: [Assignment], quarantined: String?) {
        try write { db in
            let (report, quarantined) = try Self.complete(db, token: token, outputs: outputs, metrics: metrics, smallBlobs: smallBlobs,
                                                          cost: cost, machine: machine, now: now)
            guard let next else { return (report, [], quarantined) }
            return (report, try Self.dispatch(db, worker: next.worker, machine: machine, memoryMiB: next.memoryMiB, kinds: next.kinds,
                                              now: now, leaseSeconds: next.leaseSeconds, count: next.count), quarantined)
        }
    }

    /// As above, without a next job.
    public func complete(token: Int64, outputs: [String: String] = [:], metrics: [String: Double] = [:],
                         machine: String = "", now: Double) throws -> Verdict {
        try complete(token: token, outputs: outputs, metrics: metrics, smallBlobs: [], machine: machine, now: now, next: nil).0
    }

    static func complete(_ db: Database, token: Int64, outputs: [String: String], metrics: [String: Double],
                         smallBlobs: [(hash: String, data: Data)], cost: (seconds: Double, peakMiB: Double?)?, machine: String,
                         now: Double) throws -> (Verdict, String?) {
        guard let lease = try Row.fetchOne(db, cached: Self.leasedJobSQL, arguments: [token]) else {
            try db.run("UPDATE attempt SET outcome = \(AttemptOutcome.refused.sql), ended_at = ? WHERE token = ? AND outcome = \(AttemptOutcome.running.sql)", arguments: [now, token])
            return (.stale, nil)
        }
        let job = try JobRef(lease, of: "lease \(token)"), key = job.key
        for blob in smallBlobs {
            try db.run("INSERT OR IGNORE INTO small_blob (hash, data) VALUES (?, ?)", arguments: [blob.hash, blob.data])
        }
        try db.run("DELETE FROM lease WHERE token = ?", arguments: [token])
        // The attempt's outcome and its cost (as the worker measured it) in one statement.
        try db.run("UPDATE attempt SET outcome = \(AttemptOutcome.done.sql), ended_at = ?, seconds = coalesce(?, seconds), peak_mib = coalesce(?, peak_mib) WHERE token = ?",
                   arguments: [now, cost?.seconds, cost?.peakMiB, token])
        if try lease.value("verify", of: "job \(key)") as Int > 0 {
            return (.accepted, try recordCheckRun(db, job: job, kind: try lease.value("kind", of: "job \(key)"), token: token, machine: machine,
                                                  outputs: outputs, metrics: metrics, now: now))
        }
        try finish(db, job: job, outputs: outputs, metrics: metrics, now: now)
        return (.accepted, nil)
    }

    /// The job a lease (by token) holds: its id, key, kind and verification state.
    static let leasedJobSQL = "SELECT job.id, job.key, job.kind, job.verify FROM lease JOIN job ON job.id = lease.job WHERE lease.token = ?"

    /// A metric of a finished job, recorded for every sweep that evaluates
    /// it (found through `evaluation_job`: without it, a scan of every
    /// evaluation per metric, 12-19 ms each in a 94,500-evaluation state).
    static let recordMetricSQL = """
        INSERT OR REPLACE INTO result (sweep_id, job, category, setting, metric, value)
        SELECT sweep_id, job, category, setting, ?, ? FROM evaluation WHERE job = ?
        """

    /// A job is done with these outputs and metrics: they are recorded and
    /// the jobs that waited on it are ready once nothing else holds them.
    static func finish(_ db: Database, job: JobRef, outputs: [String: String], metrics: [String: Double], now: Double) throws {
        try db.run("UPDATE job SET state = \(JobState.done.sql), error = NULL, finished_at = ? WHERE id = ?", arguments: [now, job.id])
        for (name, hash) in outputs {
            try db.run("INSERT OR REPLACE INTO job_output (job, name, hash) VALUES (?, ?, ?)", arguments: [job.id, name, hash])
        }
        for (metric, value) in metrics {
            try db.run(recordMetricSQL, arguments: [metric, value, job.key])
        }
        // Its children wait for one parent fewer; those pending and waiting for none are ready.
        try db.run("""
            UPDATE job SET waiting = waiting - 1,
                state = CASE WHEN state = \(JobState.pending.sql) AND waiting - 1 <= 0 THEN \(JobState.ready.sql) ELSE state END
            WHERE key IN (SELECT child FROM edge WHERE parent = ?)
            """, arguments: [job.key])
    }

    /// Records a failed attempt. A transient failure is retried after a
    /// backoff while attempts remain; a permanent one (bad input) is dead at once.
    public func fail(token: Int64, error: String, permanent: Bool, now: Double, backoff: Backoff = Backoff()) throws -> Verdict {
        try write { db in
            guard let lease = try Row.fetchOne(db, cached: Self.leasedJobSQL, arguments: [token]) else {
                try db.run("UPDATE attempt SET outcome = \(AttemptOutcome.refused.sql), ended_at = ?, error = ? WHERE token = ? AND outcome = \(AttemptOutcome.running.sql)",
                               arguments: [now, error, token])
                return .stale
            }
            try db.run("UPDATE attempt SET outcome = \(AttemptOutcome.failed.sql), ended_at = ?, error = ? WHERE token = ?", arguments: [now, error, token])
            try Self.failLeased(db, job: try JobRef(lease, of: "lease \(token)"), error: error, permanent: permanent, now: now, backoff: backoff)
            return .accepted
        }
    }

    /// Ends every lease that expired by `now` (missed heartbeats): each job
    /// is failed as a transient error. Returns the jobs concerned.
    @discardableResult
    public func expireLeases(now: Double, backoff: Backoff = Backoff()) throws -> [JobKey] {
        try write { db in
            let expired = try Row.fetchAll(db, cached: """
                SELECT job.id, job.key, lease.token, lease.worker FROM lease JOIN job ON job.id = lease.job WHERE lease.expires_at < ?
                """, arguments: [now])
            for lease in expired {
                let token: Int64 = try lease.value("token", of: "an expired lease"), worker: String = try lease.value("worker", of: "lease \(token)")
                try db.run("UPDATE attempt SET outcome = \(AttemptOutcome.expired.sql), ended_at = ? WHERE token = ?", arguments: [now, token])
                try Self.failLeased(db, job: try JobRef(lease, of: "lease \(token)"), error: "lease expired: worker \(worker) missed its heartbeats",
                                    permanent: false, now: now, backoff: backoff)
            }
            return expired.compactMap { JobKey(hex: $0["key"]) }
        }
    }

    /// Failed jobs whose backoff has passed become ready again.
    @discardableResult
    public func promoteRetries(now: Double) throws -> Int {
        try write { db in
            try db.run("UPDATE job SET state = \(JobState.runnableSQL) WHERE state = \(JobState.failed.sql) AND not_before <= ?", arguments: [now])
            return db.changesCount
        }
    }

    /// A draining worker gives a job back unfinished: ready again at once,
    /// the attempt not counted against the job.
    public func handBack(token: Int64, now: Double) throws -> Verdict {
        try write { db in
            guard let job = try Int64.fetchOne(db, cached: "SELECT job FROM lease WHERE token = ?", arguments: [token]) else { return .stale }
            try db.run("DELETE FROM lease WHERE token = ?", arguments: [token])
            try db.run("UPDATE attempt SET outcome = \(AttemptOutcome.handedBack.sql), ended_at = ? WHERE token = ?", arguments: [now, token])
            try db.run("UPDATE job SET state = \(JobState.runnableSQL), attempts = MAX(0, attempts - 1) WHERE id = ?", arguments: [job])
            return .accepted
        }
    }

    /// A worker (re)registering names the attempts it is still running:
    /// those that still hold their job's lease are adopted (lease renewed),
    /// the others are returned so the worker drops them.
    public func readopt(worker: String, tokens: [Int64], now: Double, leaseSeconds: Double) throws -> (adopted: [Int64], dropped: [Int64]) {
        try write { db in
            var adopted: [Int64] = [], dropped: [Int64] = []
            for token in tokens {
                try db.run("UPDATE lease SET expires_at = ?, worker = ? WHERE token = ?", arguments: [now + leaseSeconds, worker, token])
                if db.changesCount == 1 { adopted.append(token) } else { dropped.append(token) }
            }
            return (adopted, dropped)
        }
    }

    /// Every lease gets at least `grace` more seconds (after an outage in
    /// which heartbeats could not be recorded).
    public func extendLeases(now: Double, grace: Double) throws {
        try write { db in try db.run("UPDATE lease SET expires_at = MAX(expires_at, ?)", arguments: [now + grace]) }
    }

    /// On coordinator start, with `now` from its new clock: every lease
    /// gets exactly `grace` seconds for its worker to re-register before it
    /// can expire, and no retry waits longer than `longestBackoff`. The
    /// stored deadlines came from the clock of the run before; a wall-clock
    /// jump while the coordinator was down (an hour back, say) would
    /// otherwise hold a dead worker's lease or a retry that long.
    public func resetDeadlines(now: Double, grace: Double, longestBackoff: Double) throws {
        try write { db in
            try db.run("UPDATE lease SET expires_at = ?", arguments: [now + grace])
            try db.run("UPDATE job SET not_before = MIN(not_before, ?) WHERE state = \(JobState.failed.sql)", arguments: [now + longestBackoff])
        }
    }

    static func failLeased(_ db: Database, job: JobRef, error: String, permanent: Bool, now: Double, backoff: Backoff) throws {
        try db.run("DELETE FROM lease WHERE job = ?", arguments: [job.id])
        guard let row = try Row.fetchOne(db, cached: "SELECT attempts, max_attempts FROM job WHERE id = ?", arguments: [job.id]) else { return }
        let attempts: Int = try row.value("attempts", of: "job \(job.key)"), limit: Int = try row.value("max_attempts", of: "job \(job.key)")
        if permanent || attempts >= limit {
            try db.run("UPDATE job SET state = \(JobState.dead.sql), error = ?, finished_at = ? WHERE id = ?", arguments: [error, now, job.id])
            try blockDescendants(db, of: job.key)
        } else {
            try db.run("UPDATE job SET state = \(JobState.failed.sql), error = ?, not_before = ? WHERE id = ?",
                           arguments: [error, now + backoff.delay(afterAttempt: attempts), job.id])
        }
    }

    /// Every job downstream of `key` that has not finished becomes blocked.
    static func blockDescendants(_ db: Database, of key: String) throws {
        try db.run("""
            WITH RECURSIVE below(key) AS (
                SELECT child FROM edge WHERE parent = ?
                UNION SELECT edge.child FROM edge JOIN below ON edge.parent = below.key)
            UPDATE job SET state = \(JobState.blocked.sql)
            WHERE key IN (SELECT key FROM below) AND state IN (\(JobState.pending.sql), \(JobState.ready.sql), \(JobState.failed.sql))
            """, arguments: [key])
    }
}
