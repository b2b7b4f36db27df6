import ArgumentParser
import Foundation
import Scheduler

/// `backup`: SQLite's online backup of the state database, safe while `serve` runs.
struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy the state database into a file, consistent as of one moment (safe while serve runs).",
        discussion: """
            Blobs (state/blobs/) are content-addressed and never rewritten: keep the folder, and do not run `gc` between \
            a backup and its restore (it may remove blobs the backup still refers to).
            """)
    @OptionGroup var state: StateOption
    @Option(help: "The backup file to write (replaced once the new one is complete).") var out: String

    func run() throws {
        let database = state.url.appendingPathComponent("state.sqlite").path
        guard FileManager.default.fileExists(atPath: database) else { throw ValidationError("no state database at \(database)") }
        let started = Date()
        let summary = try state.open().backup(to: out)
        say("backed up \(database) to \(summary.path): \(summary.bytes) bytes, \(summary.jobs) jobs (\(summary.done) done), "
            + String(format: "%.1f s", Date().timeIntervalSince(started)))
    }
}

/// `restore`: a backup put back in place of the state database.
struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Put a backup in place of the state database (serve must not be running).",
        discussion: """
            The database it replaces is kept beside it (state.sqlite.replaced-TIME). Jobs leased in the backup are \
            ready again, their attempts not counted; jobs done after the backup run again; fencing tokens continue past \
            every one the replaced database issued.
            """)
    @OptionGroup var state: StateOption
    @Argument(help: "The backup file (from `psad-coordinator backup`).") var backup: String

    func run() throws {
        guard FileManager.default.fileExists(atPath: backup) else { throw ValidationError("no backup file at \(backup)") }
        let lock = try StateLock(directory: state.url)
        let summary = try JobStore.restore(backup: backup, into: state.url.appendingPathComponent("state.sqlite").path)
        withExtendedLifetime(lock) {}
        say("restored \(backup): \(summary.jobs) jobs (\(summary.done) done), \(summary.leasesHandedBack) leases handed back, "
            + "tokens from \(summary.nextToken)" + (summary.replacedAt.map { "; the database it replaced is at \($0)" } ?? ""))
    }
}
