import GRDB
import Shared

/// A job's state in the coordinator's DAG (DESIGN.md, Stages and the DAG).
public enum JobState: String, Codable, CaseIterable, Sendable {
    /// Waiting for inputs that are not done yet.
    case pending
    /// May be dispatched.
    case ready
    /// Dispatched: an attempt holds the lease.
    case leased
    case done
    /// The last attempt failed; it becomes ready again after its backoff.
    case failed
    /// Failed on every allowed attempt, or with a permanent error.
    case dead
    /// An input is dead: it cannot run until that input is resumed.
    case blocked
    case cancelled
    /// Sampled for verification: one run is held (not counted yet) until a
    /// second worker's run of it agrees; only another worker may take it.
    case verifying
    /// Two runs disagreed: nothing downstream runs until `resolve` keeps
    /// one of them or runs the job again.
    case quarantined
}

/// How an attempt ended.
public enum AttemptOutcome: String, Codable, Sendable {
    case running, done, failed, expired, refused, handedBack = "handed-back", cancelled
}

extension JobState {
    /// The state as an SQL string literal: statements name states through the type, never by spelling them.
    var sql: String { "'\(rawValue)'" }

    /// Where a job goes when it may run again (a retry, a hand-back): a job
    /// holding a run for verification waits for another worker's, any other is ready.
    static let runnableSQL = "CASE WHEN verify = 2 THEN \(JobState.verifying.sql) ELSE \(JobState.ready.sql) END"
}

extension AttemptOutcome {
    /// The outcome as an SQL string literal (see ``JobState/sql``).
    var sql: String { "'\(rawValue)'" }
}

// Columns hold these types' raw values; rows decode them typed (``Row/value(_:of:)``).
extension JobState: DatabaseValueConvertible {}
extension AttemptOutcome: DatabaseValueConvertible {}
extension StageKind: DatabaseValueConvertible {}

extension Row {
    /// A column's value as `V`; a NULL or a value `V` cannot hold is
    /// ``JobStore/StoreError/corrupt(_:)`` naming the row and column, never a trap.
    func value<V: DatabaseValueConvertible>(_ column: String, of row: @autoclosure () -> String) throws -> V {
        do { return try decode(V.self, forColumn: column) } catch {
            throw JobStore.StoreError.corrupt("\(row()): column \(column) holds \(self[column] as DatabaseValue), not a \(V.self)")
        }
    }
}

/// A job as the tables name it: by its integer id in those every job
/// writes to (attempt, lease, job_output), by its key in the others.
struct JobRef: Sendable {
    let id: Int64
    let key: String

    init(id: Int64, key: String) {
        self.id = id
        self.key = key
    }

    /// From a row with `id` and `key` columns.
    init(_ row: Row, of what: @autoclosure () -> String) throws {
        id = try row.value("id", of: what())
        key = try row.value("key", of: what())
    }

    /// The job with this key, if there is one.
    static func find(_ db: Database, key: String) throws -> JobRef? {
        try Int64.fetchOne(db, cached: "SELECT id FROM job WHERE key = ?", arguments: [key]).map { JobRef(id: $0, key: key) }
    }
}
