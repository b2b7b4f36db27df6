import CSQLite

/// SQLite's process-wide settings for a serving coordinator.
enum SQLiteSettings {
    /// Turns off SQLite's memory statistics, which nothing here reads: with
    /// them SQLite takes a global mutex around each allocation and free,
    /// 2.5% of the serving thread's samples. Takes effect only before the
    /// process's first connection opens (false after, nothing changed).
    @discardableResult
    static func disableMemoryStatistics() -> Bool { psad_sqlite_disable_memory_statistics() == 0 }
}
