import Foundation
import GRDB

/// The workers seen: their resources and when (status's memory check reads them).
extension JobStore {
    /// Records a worker's hello (resources as JSON).
    public func registerWorker(_ id: String, resources: String, now: Double) throws {
        try write { db in
            try db.run("""
                INSERT INTO worker (id, resources, first_seen, last_seen) VALUES (?, ?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET resources = excluded.resources, last_seen = excluded.last_seen
                """, arguments: [id, resources, now, now])
        }
    }
}
