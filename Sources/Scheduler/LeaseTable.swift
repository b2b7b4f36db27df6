import Foundation
import GRDB
import Shared

/// Retry delay after a failed attempt: base * 2^(attempt - 1), capped, times
/// a jitter factor drawn uniformly from [1 - jitter, 1 + jitter].
public struct Backoff: Sendable {
    public var base: Double = 1
    public var cap: Double = 60
    public var jitter: Double = 0.5
    public init(base: Double = 1, cap: Double = 60, jitter: Double = 0.5) {
        self.base = base; self.cap = cap; self.jitter = jitter
    }

    public func delay(afterAttempt attempt: Int, unit: Double = Double.random(in: 0..<1)) -> Double {
        let raw = min(cap, base * pow(2, Double(max(0, attempt - 1))))
        return raw * (1 - jitter + 2 * jitter * unit)
    }
}

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

/// What became of a result or a failure a worker reported.
public enum Report: Equatable, Sendable {
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
    /// The highest-priority, oldest ready job whose stage fits the worker,
    /// leased to it; nil when none.
    public func dispatch(worker: String, memoryMiB: Int, kinds runnable: Set<StageKind> = Set(StageKind.allCases),
                         now: Double, leaseSeconds: Double) throws -> Assignment? {
        try pool.write { db in try Self.dispatch(db, worker: worker, memoryMiB: memoryMiB, kinds: runnable, now: now, leaseSeconds: leaseSeconds) }
    }

    static func dispatch(_ db: Database, worker: String, memoryMiB: Int, kinds runnable: Set<StageKind>,
                         now: Double, leaseSeconds: Double) throws -> Assignment? {
        let kinds = StageKind.allCases.filter { runnable.contains($0) }.map(\.rawValue)
        guard !kinds.isEmpty else { return nil }
        let marks = kinds.map { _ in "?" }.joined(separator: ",")
        guard let row = try Row.fetchOne(db, cached: """
            SELECT key, kind, category, parameters FROM job INDEXED BY job_queue
            WHERE state = \(JobState.ready.sql) AND kind IN (\(marks)) AND memory_mib <= ? ORDER BY priority DESC, seq LIMIT 1
            """, arguments: StatementArguments(kinds + [memoryMiB])) else { return nil }
        let key: String = row["key"]
        try db.run("INSERT INTO attempt (job, worker, started_at, outcome) VALUES (?, ?, ?, \(AttemptOutcome.running.sql))",
                   arguments: [key, worker, now])
        let token = db.lastInsertedRowID
        try db.run("UPDATE job SET state = \(JobState.leased.sql), attempts = attempts + 1 WHERE key = ?", arguments: [key])
        try db.run("INSERT OR REPLACE INTO lease (job, token, worker, expires_at) VALUES (?, ?, ?, ?)",
                   arguments: [key, token, worker, now + leaseSeconds])
        var inputs: [String: [String: String]] = [:]
        for edge in try Row.fetchAll(db, cached: "SELECT role, parent FROM edge WHERE child = ?", arguments: [key]) {
            let outputs = try Row.fetchAll(db, cached: "SELECT name, hash FROM job_output WHERE job = ?", arguments: [edge["parent"] as String])
            inputs[edge["role"]] = Dictionary(uniqueKeysWithValues: outputs.map { ($0["name"] as String, $0["hash"] as String) })
        }
        guard let jobKey = JobKey(hex: key), let kind = StageKind(rawValue: row["kind"]) else {
            throw JobStore.StoreError.corrupt("job \(key) has kind '\(row["kind"] as String)' or a malformed key")
        }
        return Assignment(token: token, key: jobKey, kind: kind,
                          category: row["category"], parameters: row["parameters"], inputs: inputs)
    }

    /// The job `token` holds the lease of, if it still does.
    public func leasedJob(token: Int64) throws -> JobKey? {
        try pool.read { db in
            try String.fetchOne(db, cached: "SELECT job FROM lease WHERE token = ?", arguments: [token]).flatMap(JobKey.init(hex:))
        }
    }

    /// The worker holding the lease of `token` (nil when it holds none).
    public func leaseHolder(token: Int64) throws -> String? {
        try pool.read { db in try String.fetchOne(db, cached: "SELECT worker FROM lease WHERE token = ?", arguments: [token]) }
    }

    /// Renews the lease of `token`; false when the token is no longer the
    /// job's lease (the worker should drop the job).
    public func heartbeat(token: Int64, now: Double, leaseSeconds: Double, progress: WireMessage.Progress? = nil) throws -> Bool {
        try pool.write { db in
            if let progress {
                try db.run("UPDATE lease SET expires_at = ?, progress_done = ?, progress_total = ?, progress_unit = ? WHERE token = ?",
                           arguments: [now + leaseSeconds, progress.done, progress.total, String(progress.unit.prefix(40)), token])
            } else {
                try db.run("UPDATE lease SET expires_at = ? WHERE token = ?", arguments: [now + leaseSeconds, token])
            }
            return db.changesCount == 1
        }
    }

    /// Records a finished attempt: its outputs (artifacts already stored,
    /// or small ones given here), its metrics (evaluate jobs), and readies
    /// the jobs that waited on it. With `next`, the worker's next job is
    /// leased in the same transaction. `cost` is what the worker measured
    /// (wall seconds, peak MiB), kept on the attempt.
    public func complete(token: Int64, outputs: [String: (hash: String, size: Int)] = [:], metrics: [String: Double] = [:],
                         smallBlobs: [(hash: String, data: Data)] = [], cost: (seconds: Double, peakMiB: Double?)? = nil, now: Double,
                         next: (worker: String, memoryMiB: Int, kinds: Set<StageKind>, leaseSeconds: Double)? = nil) throws -> (Report, Assignment?) {
        try pool.write { db in
            let report = try Self.complete(db, token: token, outputs: outputs, metrics: metrics, smallBlobs: smallBlobs, now: now)
            if report == .accepted, let cost {
                try db.run("UPDATE attempt SET seconds = ?, peak_mib = ? WHERE token = ?", arguments: [cost.seconds, cost.peakMiB, token])
            }
            guard let next else { return (report, nil) }
            return (report, try Self.dispatch(db, worker: next.worker, memoryMiB: next.memoryMiB, kinds: next.kinds,
                                              now: now, leaseSeconds: next.leaseSeconds))
        }
    }

    /// As above, without a next job.
    public func complete(token: Int64, outputs: [String: (hash: String, size: Int)] = [:], metrics: [String: Double] = [:],
                         now: Double) throws -> Report {
        try complete(token: token, outputs: outputs, metrics: metrics, smallBlobs: [], now: now, next: nil).0
    }

    static func complete(_ db: Database, token: Int64, outputs: [String: (hash: String, size: Int)], metrics: [String: Double],
                         smallBlobs: [(hash: String, data: Data)], now: Double) throws -> Report {
        guard let key = try String.fetchOne(db, cached: "SELECT job FROM lease WHERE token = ?", arguments: [token]) else {
            try db.run("UPDATE attempt SET outcome = \(AttemptOutcome.refused.sql), ended_at = ? WHERE token = ? AND outcome = \(AttemptOutcome.running.sql)", arguments: [now, token])
            return .stale
        }
        for blob in smallBlobs {
            try db.run("INSERT OR IGNORE INTO small_blob (hash, data) VALUES (?, ?)", arguments: [blob.hash, blob.data])
        }
        try db.run("DELETE FROM lease WHERE job = ?", arguments: [key])
        try db.run("UPDATE attempt SET outcome = \(AttemptOutcome.done.sql), ended_at = ? WHERE token = ?", arguments: [now, token])
        try db.run("UPDATE job SET state = \(JobState.done.sql), error = NULL, finished_at = ? WHERE key = ?", arguments: [now, key])
        for (name, artifact) in outputs {
            try db.run("INSERT OR IGNORE INTO artifact (hash, size, created_at) VALUES (?, ?, ?)", arguments: [artifact.hash, artifact.size, now])
            try db.run("INSERT OR REPLACE INTO job_output (job, name, hash) VALUES (?, ?, ?)", arguments: [key, name, artifact.hash])
        }
        for (metric, value) in metrics {
            try db.run("""
                INSERT OR REPLACE INTO result (sweep_id, job, category, setting, metric, value)
                SELECT sweep_id, job, category, setting, ?, ? FROM evaluation WHERE job = ?
                """, arguments: [metric, value, key])
        }
        try db.run("UPDATE job SET waiting = waiting - 1 WHERE key IN (SELECT child FROM edge WHERE parent = ?)", arguments: [key])
        try db.run("""
            UPDATE job SET state = \(JobState.ready.sql) WHERE state = \(JobState.pending.sql) AND waiting <= 0
            AND key IN (SELECT child FROM edge WHERE parent = ?)
            """, arguments: [key])
        return .accepted
    }

    /// Records a failed attempt. A transient failure is retried after a
    /// backoff while attempts remain; a permanent one (bad input) is dead at once.
    public func fail(token: Int64, error: String, permanent: Bool, now: Double, backoff: Backoff = Backoff()) throws -> Report {
        try pool.write { db in
            guard let key = try String.fetchOne(db, cached: "SELECT job FROM lease WHERE token = ?", arguments: [token]) else {
                try db.run("UPDATE attempt SET outcome = \(AttemptOutcome.refused.sql), ended_at = ?, error = ? WHERE token = ? AND outcome = \(AttemptOutcome.running.sql)",
                               arguments: [now, error, token])
                return .stale
            }
            try db.run("UPDATE attempt SET outcome = \(AttemptOutcome.failed.sql), ended_at = ?, error = ? WHERE token = ?", arguments: [now, error, token])
            try Self.failLeased(db, key: key, error: error, permanent: permanent, now: now, backoff: backoff)
            return .accepted
        }
    }

    /// Ends every lease that expired by `now` (missed heartbeats): each job
    /// is failed as a transient error. Returns the jobs concerned.
    @discardableResult
    public func expireLeases(now: Double, backoff: Backoff = Backoff()) throws -> [JobKey] {
        try pool.write { db in
            let expired = try Row.fetchAll(db, cached: "SELECT job, token, worker FROM lease WHERE expires_at < ?", arguments: [now])
            for lease in expired {
                let key: String = lease["job"], worker: String = lease["worker"]
                try db.run("UPDATE attempt SET outcome = \(AttemptOutcome.expired.sql), ended_at = ? WHERE token = ?", arguments: [now, lease["token"] as Int64])
                try Self.failLeased(db, key: key, error: "lease expired: worker \(worker) missed its heartbeats",
                                    permanent: false, now: now, backoff: backoff)
            }
            return expired.compactMap { JobKey(hex: $0["job"]) }
        }
    }

    /// Failed jobs whose backoff has passed become ready again.
    @discardableResult
    public func promoteRetries(now: Double) throws -> Int {
        try pool.write { db in
            try db.run("UPDATE job SET state = \(JobState.ready.sql) WHERE state = \(JobState.failed.sql) AND not_before <= ?", arguments: [now])
            return db.changesCount
        }
    }

    /// A draining worker gives a job back unfinished: ready again at once,
    /// the attempt not counted against the job.
    public func handBack(token: Int64, now: Double) throws -> Report {
        try pool.write { db in
            guard let key = try String.fetchOne(db, cached: "SELECT job FROM lease WHERE token = ?", arguments: [token]) else { return .stale }
            try db.run("DELETE FROM lease WHERE job = ?", arguments: [key])
            try db.run("UPDATE attempt SET outcome = \(AttemptOutcome.handedBack.sql), ended_at = ? WHERE token = ?", arguments: [now, token])
            try db.run("UPDATE job SET state = \(JobState.ready.sql), attempts = MAX(0, attempts - 1) WHERE key = ?", arguments: [key])
            return .accepted
        }
    }

    /// A worker (re)registering names the attempts it is still running:
    /// those that still hold their job's lease are adopted (lease renewed),
    /// the others are returned so the worker drops them.
    public func readopt(worker: String, tokens: [Int64], now: Double, leaseSeconds: Double) throws -> (adopted: [Int64], dropped: [Int64]) {
        try pool.write { db in
            var adopted: [Int64] = [], dropped: [Int64] = []
            for token in tokens {
                try db.run("UPDATE lease SET expires_at = ?, worker = ? WHERE token = ?", arguments: [now + leaseSeconds, worker, token])
                if db.changesCount == 1 { adopted.append(token) } else { dropped.append(token) }
            }
            return (adopted, dropped)
        }
    }

    /// On coordinator start: every lease gets `grace` seconds for its
    /// worker to re-register before it can expire.
    public func extendLeases(now: Double, grace: Double) throws {
        try pool.write { db in
            try db.run("UPDATE lease SET expires_at = MAX(expires_at, ?)", arguments: [now + grace])
        }
    }

    static func failLeased(_ db: Database, key: String, error: String, permanent: Bool, now: Double, backoff: Backoff) throws {
        try db.run("DELETE FROM lease WHERE job = ?", arguments: [key])
        guard let job = try Row.fetchOne(db, cached: "SELECT attempts, max_attempts FROM job WHERE key = ?", arguments: [key]) else { return }
        let attempts: Int = job["attempts"], limit: Int = job["max_attempts"]
        if permanent || attempts >= limit {
            try db.run("UPDATE job SET state = \(JobState.dead.sql), error = ?, finished_at = ? WHERE key = ?", arguments: [error, now, key])
            try blockDescendants(db, of: key)
        } else {
            try db.run("UPDATE job SET state = \(JobState.failed.sql), error = ?, not_before = ? WHERE key = ?",
                           arguments: [error, now + backoff.delay(afterAttempt: attempts), key])
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

extension JobStore {
    /// Largest artifact kept inside the database rather than as a file.
    public static let inlineBlobLimit = 64 << 10

    /// Stores a small blob (its hash already verified by the caller).
    public func storeSmallBlob(hash: String, data: Data) throws {
        try pool.write { db in try db.run("INSERT OR IGNORE INTO small_blob (hash, data) VALUES (?, ?)", arguments: [hash, data]) }
    }

    public func smallBlob(_ hash: String) throws -> Data? {
        try pool.read { db in try Data.fetchOne(db.cachedStatement(sql: "SELECT data FROM small_blob WHERE hash = ?"), arguments: [hash]) }
    }

    public func smallBlobSize(_ hash: String) throws -> Int? {
        try pool.read { db in try Int.fetchOne(db, cached: "SELECT length(data) FROM small_blob WHERE hash = ?", arguments: [hash]) }
    }

    /// Removes small blobs no job output refers to; returns how many went.
    public func collectSmallBlobs() throws -> Int {
        try pool.write { db in
            try db.execute(sql: "DELETE FROM small_blob WHERE hash NOT IN (SELECT hash FROM job_output)")
            return db.changesCount
        }
    }

    /// Records a worker's hello (resources as JSON).
    public func registerWorker(_ id: String, resources: String, now: Double) throws {
        try pool.write { db in
            try db.run("""
                INSERT INTO worker (id, resources, first_seen, last_seen) VALUES (?, ?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET resources = excluded.resources, last_seen = excluded.last_seen
                """, arguments: [id, resources, now, now])
        }
    }

    /// Every artifact hash a job output refers to (what `gc` keeps).
    public func referencedArtifacts() throws -> Set<String> {
        try pool.read { db in Set(try String.fetchAll(db, cached: "SELECT DISTINCT hash FROM job_output")) }
    }
}
