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
}
