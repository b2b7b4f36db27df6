import Foundation
import GRDB
import Shared

/// What a report reads about one sweep: its file, every evaluation with its
/// metrics, and per stage kind how many jobs were reused and what the rest
/// cost. All of it from the database; artifacts are read by hash.
public struct SweepRecord: Sendable {
    public struct Evaluation: Sendable {
        /// The evaluate job's key.
        public var job: String
        public var category: String
        /// The full setting as canonical JSON.
        public var setting: String
        /// Empty until the job is done.
        public var metrics: [String: Double]
    }

    public struct Stage: Codable, Equatable, Sendable {
        public var kind: String
        public var jobs: Int
        public var done: Int
        /// Done before this sweep was submitted: reused, not run for it.
        public var reused: Int
        /// Accepted attempts that ran for this sweep, and their wall time.
        public var ran: Int
        public var seconds: Double
        /// Attempts that failed, expired or were refused.
        public var failedAttempts: Int
    }

    public var name: String
    public var file: String
    public var createdAt: Double
    public var evaluations: [Evaluation]
    public var stages: [Stage]
}

extension JobStore {
    public func sweepRecord(_ name: String) throws -> SweepRecord {
        try read { db in
            let id = try sweepID(db, name)
            guard let sweep = try Row.fetchOne(db, sql: "SELECT file, created_at FROM sweep WHERE id = ?", arguments: [id]) else {
                throw StoreError.corrupt("sweep \(name) (id \(id)) vanished while it was read")
            }
            let createdAt: Double = sweep["created_at"]
            var metrics: [String: [String: Double]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT job, metric, value FROM result WHERE sweep_id = ?", arguments: [id]) {
                metrics[row["job"], default: [:]][row["metric"]] = row["value"]
            }
            let evaluations = try Row.fetchAll(db, sql: "SELECT job, category, setting FROM evaluation WHERE sweep_id = ? ORDER BY category, setting",
                                               arguments: [id]).map { row in
                SweepRecord.Evaluation(job: row["job"], category: row["category"], setting: row["setting"], metrics: metrics[row["job"]] ?? [:])
            }
            var stages: [String: SweepRecord.Stage] = [:]
            for row in try Row.fetchAll(db, sql: """
                SELECT job.kind AS kind, COUNT(*) AS jobs, SUM(job.state = \(JobState.done.sql)) AS done,
                       SUM(job.state = \(JobState.done.sql) AND job.finished_at < ?) AS reused
                FROM sweep_job JOIN job ON job.key = sweep_job.job WHERE sweep_job.sweep_id = ? GROUP BY job.kind
                """, arguments: [createdAt, id]) {
                stages[row["kind"]] = .init(kind: row["kind"], jobs: row["jobs"], done: row["done"], reused: row["reused"],
                                            ran: 0, seconds: 0, failedAttempts: 0)
            }
            for row in try Row.fetchAll(db, sql: """
                SELECT job.kind AS kind, SUM(a.outcome = \(AttemptOutcome.done.sql)) AS ran,
                       TOTAL(CASE WHEN a.outcome = \(AttemptOutcome.done.sql) THEN a.ended_at - a.started_at END) AS seconds,
                       SUM(a.outcome NOT IN (\(AttemptOutcome.done.sql), \(AttemptOutcome.running.sql))) AS failed
                FROM sweep_job JOIN job ON job.key = sweep_job.job JOIN attempt a ON a.job = job.id
                WHERE sweep_job.sweep_id = ? AND a.started_at >= ? GROUP BY job.kind
                """, arguments: [id, createdAt]) {
                stages[row["kind"]]?.ran = row["ran"]
                stages[row["kind"]]?.seconds = row["seconds"]
                stages[row["kind"]]?.failedAttempts = row["failed"]
            }
            let order = StageKind.allCases.map(\.rawValue)
            return SweepRecord(name: name, file: sweep["file"], createdAt: createdAt, evaluations: evaluations,
                               stages: stages.values.sorted { (order.firstIndex(of: $0.kind) ?? 99) < (order.firstIndex(of: $1.kind) ?? 99) })
        }
    }

    /// A done job's outputs: name -> artifact hash.
    public func outputs(of job: String) throws -> [String: String] {
        try read { db in
            Dictionary(uniqueKeysWithValues: try Row.fetchAll(db, sql: Self.outputsOfKeySQL, arguments: [job]).map { ($0["name"], $0["hash"]) })
        }
    }

    /// A job's outputs (name, hash) by the job's key.
    static let outputsOfKeySQL = "SELECT job_output.name, job_output.hash FROM job JOIN job_output ON job_output.job = job.id WHERE job.key = ?"

    /// The job that feeds `job` in `role` (an edge of the DAG).
    public func input(of job: String, role: String) throws -> String? {
        try read { db in try String.fetchOne(db, sql: "SELECT parent FROM edge WHERE child = ? AND role = ?", arguments: [job, role]) }
    }

    /// An artifact's bytes, wherever the coordinator keeps them (small ones
    /// in the database, the rest as verified blobs in `artifacts`).
    public func artifact(_ hash: String, in artifacts: ArtifactStore) throws -> Data {
        if ArtifactStore.isValid(hash), let small = try smallBlob(hash) { return small }
        return try artifacts.read(hash)
    }
}
