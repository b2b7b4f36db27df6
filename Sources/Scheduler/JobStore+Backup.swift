import Foundation
import GRDB
import Shared

/// The state database's safety net: an online backup taken while the
/// coordinator serves, an integrity check before it serves, and a restore
/// that cannot hand out a fencing token twice.
extension JobStore {
    /// What a backup holds.
    public struct BackupSummary: Equatable, Sendable {
        public var path: String
        public var bytes: Int
        public var jobs: Int
        public var done: Int
    }

    /// SQLite's online backup of the whole database into a new file at
    /// `path`, as of one moment (a read transaction: the coordinator goes
    /// on writing meanwhile). Written beside the target and renamed into
    /// place once complete and checked, so a backup interrupted half-way
    /// leaves no file that looks whole.
    public func backup(to path: String) throws -> BackupSummary {
        let target = URL(fileURLWithPath: path)
        let partial = target.deletingLastPathComponent().appendingPathComponent(".\(target.lastPathComponent).partial-\(getpid())")
        try? FileManager.default.removeItem(at: partial)
        do {
            let destination = try DatabaseQueue(path: partial.path)
            try pool.backup(to: destination)
            let problems = try destination.read { db in try Self.integrityProblems(db, full: false) }
            guard problems.isEmpty else {
                throw StoreError.corrupt("the backup written to \(partial.path) fails its check: \(problems.prefix(3).joined(separator: "; "))")
            }
            let (jobs, done) = try destination.read { db in
                (try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM job") ?? 0,
                 try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM job WHERE state = \(JobState.done.sql)") ?? 0)
            }
            try destination.close()
            let handle = try FileHandle(forUpdating: partial)
            try handle.synchronize()
            try handle.close()
            guard rename(partial.path, target.path) == 0 else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: target.path, NSUnderlyingErrorKey: POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)])
            }
            let bytes = (try? FileManager.default.attributesOfItem(atPath: target.path))?[.size] as? Int ?? 0
            return BackupSummary(path: target.path, bytes: bytes, jobs: jobs, done: done)
        } catch {
            try? FileManager.default.removeItem(at: partial)
            throw error
        }
    }

    /// SQLite's own check of the file (`quick_check`, or the slower
    /// `integrity_check` that also compares every index with its table):
    /// the problems it lists, empty when the file is sound.
    public func integrityProblems(full: Bool = false) throws -> [String] {
        try read { db in try Self.integrityProblems(db, full: full) }
    }

    static func integrityProblems(_ db: Database, full: Bool) throws -> [String] {
        let rows = try String.fetchAll(db, sql: full ? "PRAGMA integrity_check(20)" : "PRAGMA quick_check(20)")
        return rows == ["ok"] ? [] : rows
    }

    /// What a restore did.
    public struct RestoreSummary: Equatable, Sendable {
        /// Where the database it replaced was moved (nil when there was none).
        public var replacedAt: String?
        public var jobs: Int
        public var done: Int
        /// Jobs leased in the backup, ready again (their attempts not counted).
        public var leasesHandedBack: Int
        /// The first fencing token the restored database will issue.
        public var nextToken: Int64
    }

    /// Puts the backup at `backup` in place as the state database at
    /// `path`. The database there (if any, sound or not) is moved aside,
    /// never deleted. Then, in the restored database:
    /// - every lease is handed back (ready again, the attempt not counted):
    ///   the workers that held them answered to the coordinator after the
    ///   backup, which the restored state knows nothing of;
    /// - the attempt sequence jumps past every token the replaced database
    ///   issued (read from it when it can be read, else by 2^32), so no
    ///   fencing token is ever issued twice and a result quoting an old one
    ///   cannot be taken for a new attempt's.
    /// Jobs done after the backup are not done in it: they run again.
    public static func restore(backup: String, into path: String, now: Double = Date().timeIntervalSince1970) throws -> RestoreSummary {
        // The backup must be sound and a state database before anything is moved.
        var readOnly = Configuration()
        readOnly.readonly = true
        let backupTokens: Int64
        do {
            let source = try DatabaseQueue(path: backup, configuration: readOnly)
            backupTokens = try source.read { db -> Int64 in
                let problems = try integrityProblems(db, full: true)
                guard problems.isEmpty else { throw StoreError.corrupt("the backup \(backup) fails SQLite's integrity check: \(problems.prefix(3).joined(separator: "; "))") }
                guard try db.tableExists("job"), try db.tableExists("attempt") else {
                    throw StoreError.corrupt("\(backup) is an SQLite file but not a coordinator's state (no job or attempt table)")
                }
                return try Int64.fetchOne(db, sql: "SELECT MAX(token) FROM attempt") ?? 0
            }
            try source.close()
        } catch let error as DatabaseError {
            throw StoreError.corrupt("the backup \(backup) cannot be read as a state database: \(error.message ?? "\(error)")")
        }
        let replacedTokens: Int64? = FileManager.default.fileExists(atPath: path) ? (try? {
            let old = try DatabaseQueue(path: path, configuration: readOnly)
            defer { try? old.close() }
            return try old.read { db in try Int64.fetchOne(db, sql: "SELECT MAX(token) FROM attempt") ?? 0 }
        }()) : nil

        // Move the current database (and its WAL) aside, copy the backup in.
        let fm = FileManager.default
        var replacedAt: String?
        if fm.fileExists(atPath: path) {
            let stamp = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: now)).replacingOccurrences(of: ":", with: "")
            let aside = "\(path).replaced-\(stamp)"
            for suffix in ["", "-wal", "-shm"] where fm.fileExists(atPath: path + suffix) {
                try fm.moveItem(atPath: path + suffix, toPath: aside + suffix)
            }
            replacedAt = aside
        }
        let partial = path + ".restoring"
        try? fm.removeItem(atPath: partial)
        try fm.copyItem(atPath: backup, toPath: partial)
        try fm.moveItem(atPath: partial, toPath: path)

        let store = try JobStore(path: path)
        let next = max(backupTokens, replacedTokens ?? backupTokens + (1 << 32)) + 1
        let handedBack = try store.pool.write { db -> Int in
            let leased = try Int64.fetchAll(db, sql: "SELECT token FROM lease")
            for token in leased {
                try db.run("UPDATE attempt SET outcome = \(AttemptOutcome.handedBack.sql), ended_at = ?, error = ? WHERE token = ?",
                           arguments: [now, "handed back by a restore from a backup", token])
                try db.run("UPDATE job SET state = \(JobState.runnableSQL), attempts = MAX(0, attempts - 1) WHERE id = (SELECT job FROM lease WHERE token = ?)",
                           arguments: [token])
            }
            try db.run("DELETE FROM lease")
            // AUTOINCREMENT takes the next token from sqlite_sequence (a table without a key: update, else insert).
            try db.run("UPDATE sqlite_sequence SET seq = ? WHERE name = 'attempt'", arguments: [next - 1])
            if db.changesCount == 0 { try db.run("INSERT INTO sqlite_sequence (name, seq) VALUES ('attempt', ?)", arguments: [next - 1]) }
            return leased.count
        }
        let (jobs, done) = try store.read { db in
            (try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM job") ?? 0,
             try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM job WHERE state = \(JobState.done.sql)") ?? 0)
        }
        return RestoreSummary(replacedAt: replacedAt, jobs: jobs, done: done, leasesHandedBack: handedBack, nextToken: next)
    }
}

extension JobStore {
    /// Opens the state database at `path` for serving: SQLite's quick check
    /// first, so that a damaged file stops the coordinator with what is
    /// wrong and what to do, before any worker is answered from it.
    public static func openChecked(path: String) throws -> JobStore {
        do {
            let store = try JobStore(path: path)
            let problems = try store.integrityProblems()
            guard problems.isEmpty else { throw StoreError.damagedFile(path: path, problems: problems) }
            return store
        } catch let error as DatabaseError where [.SQLITE_CORRUPT, .SQLITE_NOTADB].contains(error.resultCode) {
            throw StoreError.damagedFile(path: path, problems: [error.message ?? "\(error)"])
        }
    }
}

/// One coordinator per state directory: `serve` and `restore` hold an
/// exclusive lock on `coordinator.lock` there (released by the kernel when
/// the process ends, however it ends); a second one is refused, naming the
/// process that holds it.
public final class StateLock {
    let descriptor: Int32

    public struct Held: Error, CustomStringConvertible {
        public let directory: String, holder: String
        public var description: String {
            "another coordinator process (\(holder)) holds \(directory)/coordinator.lock: one serve or restore at a time per state directory"
        }
    }

    public init(directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = directory.appendingPathComponent("coordinator.lock").path
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path]) }
        // Only "held by another" refuses: a file system without locks (some NFS mounts: ENOLCK) serves unguarded, as before.
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK else {
            let holder = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            close(descriptor)
            throw Held(directory: directory.path, holder: holder.map { $0.isEmpty ? "unknown pid" : "pid \($0)" } ?? "unknown pid")
        }
        _ = ftruncate(descriptor, 0)
        let pid = Array("\(getpid())\n".utf8)
        _ = pid.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) }
    }

    deinit { close(descriptor) }
}
