import Foundation
import GRDB
import Shared

/// Artifacts in the database: small blobs (up to ``inlineBlobLimit``, one
/// row instead of a file each) and what job outputs refer to.
extension JobStore {
    /// Largest artifact kept inside the database rather than as a file.
    public static let inlineBlobLimit = 64 << 10

    /// Stores a small blob (its hash already verified by the caller).
    public func storeSmallBlob(hash: String, data: Data) throws {
        try write { db in try db.run("INSERT OR IGNORE INTO small_blob (hash, data) VALUES (?, ?)", arguments: [hash, data]) }
    }

    public func smallBlob(_ hash: String) throws -> Data? {
        try read { db in try Data.fetchOne(db.cachedStatement(sql: "SELECT data FROM small_blob WHERE hash = ?"), arguments: [hash]) }
    }

    public func smallBlobSize(_ hash: String) throws -> Int? {
        try read { db in try Int.fetchOne(db, cached: "SELECT length(data) FROM small_blob WHERE hash = ?", arguments: [hash]) }
    }

    /// Removes small blobs no job output refers to; returns how many went.
    public func collectSmallBlobs() throws -> Int {
        try write { db in
            try db.execute(sql: "DELETE FROM small_blob WHERE hash NOT IN (SELECT hash FROM job_output) AND hash NOT IN (\(Self.checkRunHashesSQL))")
            return db.changesCount
        }
    }

    /// Every artifact hash a job output or a run kept for verification refers to (what `gc` keeps).
    public func referencedArtifacts() throws -> Set<String> {
        try read { db in Set(try String.fetchAll(db, cached: "SELECT DISTINCT hash FROM job_output UNION SELECT hash FROM (\(Self.checkRunHashesSQL))")) }
    }

    /// The output hashes of the runs kept for verification (held or compared).
    static let checkRunHashesSQL = "SELECT json_each.value AS hash FROM check_run, json_each(check_run.outputs)"

}

