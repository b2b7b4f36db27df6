import Foundation
import GRDB
import Logging
import Testing
import TestSupport
@testable import Scheduler

/// The serving coordinator's WAL checkpoints, on a thread of their own.
@Suite struct BackgroundCheckpointsTests {
    static func fileSize(_ path: String) throws -> Int {
        try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
    }

    /// The database and its WAL copied as they lie (no shared-memory index, as after a crash) and opened afresh.
    static func reopenedAfterACrash(_ path: String, in crashed: TemporaryDirectory) throws -> JobStore {
        for suffix in ["", "-wal"] {
            try FileManager.default.copyItem(atPath: path + suffix, toPath: crashed.url.appendingPathComponent("state.sqlite" + suffix).path)
        }
        return try JobStore(path: crashed.url.appendingPathComponent("state.sqlite").path)
    }

    /// Commits the writer would leave in the WAL (under its fallback) reach
    /// the database file through the background thread, and stop() waits
    /// for the thread.
    @Test func commitsReachTheDatabaseFileBesideTheWriter() throws {
        let dir = try TemporaryDirectory()
        let path = dir.url.appendingPathComponent("state.sqlite").path
        let store = try JobStore(path: path)
        try store.setWriterCheckpointPages(BackgroundCheckpoints.writerFallbackPages)
        let before = try Self.fileSize(path)
        for batch in 0..<20 {
            try store.pool.write { db in
                for i in 0..<20 {
                    try db.execute(sql: "INSERT INTO small_blob (hash, data) VALUES (?, ?)",
                                   arguments: ["\(batch)-\(i)", Data(repeating: UInt8(i), count: 2048)])
                }
            }
        }
        // 400 rows of 2 KiB: about 200 pages, in the WAL only.
        #expect(try Self.fileSize(path) == before)
        let checkpoints = try BackgroundCheckpoints(path: path, interval: 0.01, logger: Logger(label: "test"))
        let deadline = Date().addingTimeInterval(10)
        while try Self.fileSize(path) < before + 400 * 2048, Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        checkpoints.stop()
        #expect(try Self.fileSize(path) >= before + 400 * 2048)
        let rows = try store.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM small_blob") }
        #expect(rows == 400)
    }

    /// The zeros the serving coordinator writes ahead into the WAL
    /// (``JobStore/reserveWAL(pages:)``) end the log for SQLite: the
    /// commits before and after them survive a crash (the files copied as
    /// they lie, without the shared-memory index, and opened afresh), and
    /// the commits after them write over the zeros rather than past them.
    @Test func aReservedWALKeepsEveryCommitAcrossACrash() throws {
        let dir = try TemporaryDirectory()
        let path = dir.url.appendingPathComponent("state.sqlite").path
        let store = try JobStore(path: path)
        try store.setWriterCheckpointPages(BackgroundCheckpoints.writerFallbackPages)
        func insert(_ range: Range<Int>) throws {
            for i in range {
                try store.pool.write { db in
                    try db.execute(sql: "INSERT INTO small_blob (hash, data) VALUES (?, ?)", arguments: ["\(i)", Data(repeating: UInt8(i % 256), count: 1000)])
                }
            }
        }
        try insert(0..<50)
        let grown = try Self.fileSize(path + "-wal")
        let pages = 400, want = 32 + pages * (24 + 4096)
        #expect(grown < want)
        #expect(try store.reserveWAL(pages: pages) == want - grown)
        #expect(try Self.fileSize(path + "-wal") == want)
        #expect(try store.reserveWAL(pages: pages) == 0)
        try insert(50..<100)
        // Fifty one-row commits after the first fifty fit the reserved room.
        #expect(try Self.fileSize(path + "-wal") == want)
        let crashed = try TemporaryDirectory()
        let reopened = try Self.reopenedAfterACrash(path, in: crashed)
        let rows = try reopened.pool.read { db in try Row.fetchAll(db, sql: "SELECT hash, data FROM small_blob ORDER BY CAST(hash AS INTEGER)") }
        #expect(rows.count == 100)
        #expect(rows.enumerated().allSatisfy { i, row in row["hash"] == "\(i)" && row["data"] == Data(repeating: UInt8(i % 256), count: 1000) })
    }

    /// The reservation waits for another connection's write transaction
    /// (here one that another process's `submit` would hold) and writes no
    /// zeros meanwhile: that transaction's frames, appended at its commit,
    /// are not zeroed after it.
    @Test func theWALIsReservedOnlyUnderTheWriteLock() throws {
        let dir = try TemporaryDirectory()
        let path = dir.url.appendingPathComponent("state.sqlite").path
        let store = try JobStore(path: path)
        try store.setWriterCheckpointPages(BackgroundCheckpoints.writerFallbackPages)
        try store.pool.write { db in try db.execute(sql: "INSERT INTO small_blob (hash, data) VALUES ('first', x'01')") }
        let other = try DatabaseQueue(path: path)
        let before = try Self.fileSize(path + "-wal")
        let reserved = DispatchSemaphore(value: 0)
        try other.writeWithoutTransaction { db in
            try db.execute(sql: "BEGIN IMMEDIATE")
            Thread.detachNewThread {
                _ = try? store.reserveWAL(pages: 400)
                reserved.signal()
            }
            #expect(reserved.wait(timeout: .now() + 0.5) == .timedOut, "reserved while another connection held the write lock")
            #expect(try Self.fileSize(path + "-wal") == before)
            for i in 0..<20 {
                try db.execute(sql: "INSERT INTO small_blob (hash, data) VALUES (?, ?)", arguments: ["\(i)", Data(repeating: 7, count: 3000)])
            }
            try db.execute(sql: "COMMIT")
        }
        #expect(reserved.wait(timeout: .now() + 30) == .success)
        #expect(try Self.fileSize(path + "-wal") == 32 + 400 * (24 + 4096))
        let crashed = try TemporaryDirectory()
        let reopened = try Self.reopenedAfterACrash(path, in: crashed)
        #expect(try reopened.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM small_blob") } == 21)
    }
}
