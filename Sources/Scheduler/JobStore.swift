import Foundation
import GRDB
import Shared

/// The coordinator's durable state: sweeps, the job DAG, attempts, leases,
/// workers, artifacts and results, in one SQLite file (`state.sqlite` in
/// the state directory). Every method is one transaction.
public final class JobStore: Sendable {
    let pool: DatabasePool
    public let path: String

    public init(path: String) throws {
        var configuration = Configuration()
        configuration.busyMode = .timeout(30)
        configuration.foreignKeysEnabled = true
        configuration.prepareDatabase { db in
            // WAL with synchronous=NORMAL: a committed change survives the
            // process being killed (not a power cut, which FULL would add).
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            // Statement journals (each batched call's savepoint) and sorts in
            // memory: as files, each was created and unlinked in /var/tmp,
            // several times a second per worker.
            try db.execute(sql: "PRAGMA temp_store = MEMORY")
        }
        pool = try DatabasePool(path: path, configuration: configuration)
        self.path = path
        // A state a newer coordinator migrated past this one's schema: its
        // statements would name jobs as that schema no longer does.
        let migrator = StateSchema.migrator
        let unknown = try pool.read { db in
            try migrator.hasBeenSuperseded(db) ? try migrator.appliedIdentifiers(db).subtracting(migrator.migrations) : []
        }
        guard unknown.isEmpty else { throw StoreError.newerSchema(path: path, migrations: unknown.sorted(), known: migrator.migrations.last ?? "none") }
        try migrator.migrate(pool)
    }

    /// SQLite's default: the commit that takes the WAL past this many pages checkpoints.
    static let defaultCheckpointPages = 1000

    /// Sets the page count past which the writer connection's commits checkpoint the WAL.
    func setWriterCheckpointPages(_ pages: Int) throws {
        try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_autocheckpoint = \(pages)") }
    }

    /// Extends the WAL file with zeros to the size `pages` frames take, so
    /// that commits overwrite file pages already there instead of growing
    /// the file. Growing it zero-fills every new block on the committing
    /// thread (ext4): 8% of the serving thread's time over the first 10,000
    /// pages after a start. Past the last valid frame SQLite reads zeros as
    /// the end of the log (a frame's salt and checksum must match the
    /// header's), and a reset log is rewritten from its start, so the space
    /// is reused as it would be once grown. The space is also the room that
    /// commits still have when the volume fills. Returns the bytes added:
    /// 0 when the file is that large already, or when they would take more
    /// than a quarter of the volume's free space. A write that fails throws
    /// and leaves the file as it was, valid frames untouched.
    ///
    /// It holds the database's write lock meanwhile (an empty immediate
    /// transaction), so no connection, of this process or another (a
    /// `submit` beside `serve`), appends frames where the zeros go.
    @discardableResult
    func reserveWAL(pages: Int) throws -> Int {
        var added = 0
        try pool.writeWithoutTransaction { db in
            try db.inTransaction(.immediate) {
                let pageSize = try Int.fetchOne(db, sql: "PRAGMA page_size") ?? 4096
                added = try Self.extendWAL(path + "-wal", to: 32 + pages * (24 + pageSize))
                return .commit
            }
        }
        return added
    }

    private static func extendWAL(_ wal: String, to want: Int) throws -> Int {
        let descriptor = open(wal, O_WRONLY | O_CLOEXEC)
        // No WAL file yet: SQLite creates it at the first write.
        guard descriptor >= 0 else { return 0 }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw StoreError.walReservation(path: wal, errno: errno) }
        let have = Int(status.st_size)
        guard have < want else { return 0 }
        // Never more than a quarter of the room left: on a nearly full volume the WAL takes space only as commits need it.
        var volume = statvfs()
        guard fstatvfs(descriptor, &volume) == 0 else { throw StoreError.walReservation(path: wal, errno: errno) }
        guard Int(volume.f_bavail) * Int(volume.f_frsize) >= 4 * (want - have) else { return 0 }
        let zeros = [UInt8](repeating: 0, count: 1 << 20)
        var offset = have
        while offset < want {
            let n = min(zeros.count, want - offset)
            let written = zeros.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, n, off_t(offset)) }
            guard written > 0 else {
                let code = errno
                // Back to the size it had: only zeros past the log's end are dropped.
                _ = ftruncate(descriptor, off_t(have))
                throw StoreError.walReservation(path: wal, errno: code)
            }
            offset += written
        }
        return want - have
    }

    /// A transaction that several of this store's calls share (``batch(_:)``).
    struct OpenBatch: @unchecked Sendable {
        let store: ObjectIdentifier
        let db: Database
    }
    @TaskLocal static var openBatch: OpenBatch?

    /// Runs `body` in one write transaction: every call of this store that
    /// it makes (on this thread) joins it, each in its own savepoint, so a
    /// call that fails undoes only itself. One commit for many small
    /// changes: the coordinator handles the messages waiting on its socket
    /// in one batch (group commit) and answers them once it is durable.
    public func batch<T>(_ body: () throws -> T) throws -> T {
        try pool.write { db in
            try Self.$openBatch.withValue(OpenBatch(store: ObjectIdentifier(self), db: db)) { try body() }
        }
    }

    /// A write transaction, or a savepoint in the open ``batch(_:)``.
    func write<T>(_ updates: (Database) throws -> T) throws -> T {
        guard let open = Self.openBatch, open.store == ObjectIdentifier(self) else { return try pool.write(updates) }
        return try Self.inSavepoint(open.db) { try updates(open.db) }
    }

    /// `body` in a savepoint of the open transaction: undone alone if it
    /// throws. As GRDB's `inSavepoint`, with its three statements compiled
    /// once per connection: GRDB prepares them afresh on every call, which
    /// was half the savepoints' cost, at one savepoint per worker report.
    static func inSavepoint<T>(_ db: Database, _ body: () throws -> T) throws -> T {
        try db.run("SAVEPOINT psad_call")
        let result: T
        do {
            result = try body()
        } catch {
            // As GRDB: the first error is the one thrown. Should the rollback fail too (SQLite
            // has already rolled the whole transaction back, as on a full disk), the batch's
            // commit fails and every call in it is answered as not recorded.
            try? db.run("ROLLBACK TO SAVEPOINT psad_call")
            try? db.run("RELEASE SAVEPOINT psad_call")
            throw error
        }
        try db.run("RELEASE SAVEPOINT psad_call")
        return result
    }

    /// A read, inside the open ``batch(_:)`` where there is one (so that it sees the batch's changes).
    func read<T>(_ value: (Database) throws -> T) throws -> T {
        guard let open = Self.openBatch, open.store == ObjectIdentifier(self) else { return try pool.read(value) }
        return try value(open.db)
    }

    /// What submitting a sweep did.
    public struct SubmitSummary: Equatable, Sendable {
        public var sweep: String
        public var jobs = 0
        /// Jobs new to this state directory.
        public var created = 0
        /// Jobs whose key was already done: reused, not run again.
        public var reused = 0
        /// Jobs already known and not done (queued, running, failed ...).
        public var existing = 0
        /// Of `existing`: jobs cancelled with another sweep (or blocked by one)
        /// that this sweep needs, queued again.
        public var requeued = 0
        /// The same sweep file was submitted before: nothing was added.
        public var alreadySubmitted = false
        /// Of a sweep submitted before: jobs its file expands to today that it
        /// does not hold (the code or a stage's defaults changed since).
        public var notInSweep = 0
    }

    public enum StoreError: Error, CustomStringConvertible, Equatable {
        case unknownSweep(String)
        case unknownJob(String)
        case ambiguousJob(String, matches: Int)
        case sweepExists(String)
        case dataChanged(String, categories: [String])
        /// A row the schema promises is missing or holds a value no type here has (a damaged or foreign database).
        case corrupt(String)
        /// SQLite's own check of the file failed.
        case damagedFile(path: String, problems: [String])
        /// The file was migrated by a newer coordinator than this one.
        case newerSchema(path: String, migrations: [String], known: String)
        /// The WAL file could not be extended (``reserveWAL(pages:)``).
        case walReservation(path: String, errno: Int32)

        public var description: String {
            switch self {
            case .dataChanged(let s, let categories):
                "sweep '\(s)' was submitted before with other data in \(categories.joined(separator: ", ")): its results are "
                    + "from the files as they were; submit it under a new name (--name) to compute from the files as they are"
            case .corrupt(let what): "the state database is damaged: \(what)"
            case .newerSchema(let path, let migrations, let known):
                "\(path) was written by a newer psad-coordinator (schema \(migrations.joined(separator: ", ")); this one knows up to "
                    + "\(known)): run the newer coordinator on it, or restore a backup taken before it"
            case .damagedFile(let path, let problems):
                "\(path) is damaged (SQLite: \(problems.prefix(5).joined(separator: "; "))): the coordinator will not serve from it. "
                    + "Restore the last backup with `psad-coordinator restore BACKUP --state DIR` (the damaged file is kept beside it, renamed)"
            case .walReservation(let path, let code):
                "could not reserve room in \(path) (\(String(cString: strerror(code)))): commits grow the file as they go"
            case .unknownSweep(let s): "no sweep named '\(s)'"
            case .unknownJob(let k): "no job whose key starts with '\(k)'"
            case .ambiguousJob(let k, let n): "'\(k)' matches \(n) jobs; give more digits"
            case .sweepExists(let s): "a different sweep named '\(s)' was already submitted (rename the new one)"
            }
        }
    }

    /// Where a job waits given its inputs' states: blocked while one is dead,
    /// blocked or cancelled, else ready once all are done, else pending on
    /// `waiting` of them.
    static func queueState(inputs: [JobState]) -> (state: JobState, waiting: Int) {
        let waiting = inputs.filter { $0 != .done }.count
        if inputs.contains(where: { [.dead, .blocked, .cancelled].contains($0) }) { return (.blocked, waiting) }
        return (waiting == 0 ? .ready : .pending, waiting)
    }

    /// Whether a job is among a sweep's `share` verified: by its key (the
    /// first 32 bits, uniform for SHA-256), so the same jobs every time.
    static func sampled(_ key: JobKey, share: Double) -> Bool {
        guard share > 0, let high = UInt32(key.hex.prefix(8), radix: 16) else { return false }
        return Double(high) < share * 4_294_967_296
    }

    /// Queues a job again from scratch: its state and waiting count (from
    /// `queueState`), attempts and error cleared, a run held for
    /// verification dropped (it is verified afresh).
    static func requeue(_ db: Database, key: String, state: JobState, waiting: Int) throws {
        try db.run("""
            UPDATE job SET state = ?, waiting = ?, attempts = 0, error = NULL, not_before = 0, finished_at = NULL,
            verify = MIN(verify, 1) WHERE key = ?
            """, arguments: [state, waiting, key])
        try db.run("DELETE FROM check_run WHERE job = ?", arguments: [key])
    }

    /// Adds a sweep's jobs. A job whose key exists is not added again: if
    /// it is done, it is reused. New jobs wait for their inputs (pending),
    /// or are ready, or blocked when an input is dead.
    @discardableResult
    public func submit(_ sweep: Sweep, file: String, now: Double = Date().timeIntervalSince1970) throws -> SubmitSummary {
        try write { db in
            // A large sweep is one transaction of ~200 MB: with SQLite's
            // default 2 MB page cache its dirty pages spill into the WAL and
            // are looked up there again (half of a 100,000-job submit). 64 MiB
            // keeps most in memory; back to the default afterwards.
            try db.execute(sql: "PRAGMA cache_size = -65536")
            defer { try? db.execute(sql: "PRAGMA cache_size = -2000") }
            let digests = sweep.dataDigests.isEmpty ? "" : CanonicalJSON.object(sweep.dataDigests.mapValues { .string($0) })
            if let previous = try Row.fetchOne(db, sql: "SELECT file, data_digests FROM sweep WHERE name = ?", arguments: [sweep.name]) {
                // The same file again is a no-op (a demo or a nightly run submits every time),
                // unless the data it was submitted with has changed since (where both times knew it).
                guard previous["file"] as String == file else { throw StoreError.sweepExists(sweep.name) }
                let before: String = previous["data_digests"]
                if !before.isEmpty, !digests.isEmpty, before != digests {
                    let old = (try? JSONDecoder().decode([String: String].self, from: Data(before.utf8))) ?? [:]
                    let changed = Set(old.keys).union(sweep.dataDigests.keys).filter { old[$0] != sweep.dataDigests[$0] }
                    throw StoreError.dataChanged(sweep.name, categories: changed.sorted())
                }
                var summary = SubmitSummary(sweep: sweep.name, alreadySubmitted: true)
                for row in try Row.fetchAll(db, sql: """
                    SELECT job.state AS state, COUNT(*) AS n FROM sweep_job JOIN sweep ON sweep.id = sweep_job.sweep_id
                    JOIN job ON job.key = sweep_job.job WHERE sweep.name = ? GROUP BY job.state
                    """, arguments: [sweep.name]) {
                    let n: Int = try row.value("n", of: "sweep \(sweep.name)'s job count")
                    summary.jobs += n
                    if try row.value("state", of: "sweep \(sweep.name)'s job count") as JobState == .done { summary.reused += n } else { summary.existing += n }
                }
                // Its results stay those of its jobs as they were; count what today's expansion adds.
                let held = try db.makeStatement(sql: """
                    SELECT 1 FROM sweep_job JOIN sweep ON sweep.id = sweep_job.sweep_id WHERE sweep.name = ? AND sweep_job.job = ?
                    """)
                var failure: (any Error)?
                SweepExpander.stream(sweep, job: { job in
                    guard failure == nil else { return }
                    do { if try Int.fetchOne(held, arguments: [sweep.name, job.key.hex]) == nil { summary.notInSweep += 1 } }
                    catch { failure = error }
                }, evaluation: { _ in })
                if let failure { throw failure }
                return summary
            }
            try db.execute(sql: "INSERT INTO sweep (name, file, priority, max_attempts, created_at, data_digests, verify) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           arguments: [sweep.name, file, sweep.priority, sweep.maxAttempts, now, digests, sweep.verify])
            let sweepID = db.lastInsertedRowID
            var seq = try Int.fetchOne(db, sql: "SELECT COALESCE(MAX(seq), 0) FROM job") ?? 0
            var summary = SubmitSummary(sweep: sweep.name)
            let insertJob = try db.makeStatement(sql: """
                INSERT INTO job (key, kind, category, parameters, material, state, priority, level, seq, waiting, max_attempts, memory_mib, verify)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """)
            let sample = try db.makeStatement(sql: "UPDATE job SET verify = 1 WHERE key = ? AND verify = 0 AND state != \(JobState.done.sql)")
            let insertEdge = try db.makeStatement(sql: "INSERT OR IGNORE INTO edge (parent, child, role) VALUES (?, ?, ?)")
            let linkSweep = try db.makeStatement(sql: "INSERT OR IGNORE INTO sweep_job (sweep_id, job) VALUES (?, ?)")
            let stateOf = try db.makeStatement(sql: "SELECT state FROM job WHERE key = ?")
            let raisePriority = try db.makeStatement(sql: "UPDATE job SET priority = MAX(priority, ?) WHERE key = ?")
            let insertEvaluation = try db.makeStatement(sql: "INSERT OR IGNORE INTO evaluation (sweep_id, job, category, setting) VALUES (?, ?, ?, ?)")
            var states: [JobKey: JobState] = [:]
            func add(_ job: PlannedJob) throws {
                summary.jobs += 1
                if var known = try String.fetchOne(stateOf, arguments: [job.key.hex]).flatMap(JobState.init) {
                    // A job cancelled with another sweep runs again for this one that needs it, and a
                    // job blocked only by such a job is released (inputs come first, so theirs are known).
                    if known == .cancelled || known == .blocked {
                        let queued = Self.queueState(inputs: job.inputs.values.map { states[$0] ?? .pending })
                        if known == .cancelled || queued.state != .blocked {
                            known = queued.state
                            try Self.requeue(db, key: job.key.hex, state: queued.state, waiting: queued.waiting)
                            summary.requeued += 1
                        }
                    }
                    states[job.key] = known
                    if known == .done { summary.reused += 1 } else { summary.existing += 1 }
                    // A later sweep may raise a queued job's priority, never lower it; and sample it for verification.
                    try raisePriority.execute(arguments: [sweep.priority, job.key.hex])
                    if Self.sampled(job.key, share: sweep.verify) { try sample.execute(arguments: [job.key.hex]) }
                    try linkSweep.execute(arguments: [sweepID, job.key.hex])
                    return
                }
                // Inputs come before their readers, so their states are known here.
                let (state, waiting) = Self.queueState(inputs: job.inputs.values.map { states[$0] ?? .pending })
                seq += 1
                let material = KeyMaterial(kind: job.kind.rawValue, version: job.kind.codeVersion, parameters: job.parameters,
                                           inputs: job.inputs.mapValues(\.hex))
                let row: [any DatabaseValueConvertible] = [job.key.hex, job.kind.rawValue, job.category, CanonicalJSON.object(job.parameters),
                                                           material.canonicalText, state.rawValue, sweep.priority, job.kind.level, seq, waiting,
                                                           sweep.maxAttempts,
                                                           StageMemory.estimateMiB(kind: job.kind, parameters: job.parameters,
                                                                                   size: sweep.dataSizes[job.category]),
                                                           Self.sampled(job.key, share: sweep.verify) ? 1 : 0]
                try insertJob.execute(arguments: StatementArguments(row))
                for (role, parent) in job.inputs { try insertEdge.execute(arguments: [parent.hex, job.key.hex, role]) }
                try linkSweep.execute(arguments: [sweepID, job.key.hex])
                states[job.key] = state
                summary.created += 1
            }
            // Streamed: the expansion hands each job over as it finds it, so the
            // plan of a large sweep is never held whole.
            var failure: (any Error)?
            SweepExpander.stream(sweep, job: { job in
                guard failure == nil else { return }
                do { try add(job) } catch { failure = error }
            }, evaluation: { evaluation in
                guard failure == nil else { return }
                do { try insertEvaluation.execute(arguments: [sweepID, evaluation.key.hex, evaluation.category, evaluation.setting]) }
                catch { failure = error }
            })
            if let failure { throw failure }
            // Results of reused evaluate jobs belong to this sweep too.
            try db.execute(sql: """
                INSERT OR IGNORE INTO result (sweep_id, job, category, setting, metric, value)
                SELECT e.sweep_id, e.job, e.category, e.setting, r.metric, r.value
                FROM evaluation e JOIN result r ON r.job = e.job
                WHERE e.sweep_id = ? GROUP BY e.job, r.metric
                """, arguments: [sweepID])
            return summary
        }
    }

    /// The full key of a job given a unique prefix of it.
    public func resolve(_ prefix: String) throws -> JobKey {
        try read { db in
            let matches = try String.fetchAll(db, sql: "SELECT key FROM job WHERE key >= ? AND key < ? LIMIT 2",
                                              arguments: [prefix, prefix + "g"])
            guard let first = matches.first, let key = JobKey(hex: first) else { throw StoreError.unknownJob(prefix) }
            if matches.count > 1 { throw StoreError.ambiguousJob(prefix, matches: matches.count) }
            return key
        }
    }

    func sweepID(_ db: Database, _ name: String) throws -> Int64 {
        guard let id = try Int64.fetchOne(db, sql: "SELECT id FROM sweep WHERE name = ?", arguments: [name]) else {
            throw StoreError.unknownSweep(name)
        }
        return id
    }
}
