import Foundation
import GRDB
import Logging
import Shared

/// WAL checkpoints on a thread and a connection of their own, for the
/// serving coordinator. With SQLite's automatic checkpoint the commit that
/// crosses a thousand WAL pages copies them into the database file and
/// syncs both files on the serving thread: an eighth of that thread's time
/// under a load of short jobs (BENCHMARKS.md, Scheduler). Here a passive
/// checkpoint runs every `interval` seconds beside the serving thread, which
/// never waits for it; the serving connection still checkpoints by itself
/// past ``writerFallbackPages``, should this thread fall behind. A commit is
/// durable in the WAL either way: the checkpoint only moves pages into the
/// database file.
final class BackgroundCheckpoints: @unchecked Sendable {
    /// WAL pages past which the serving connection checkpoints at commit itself.
    static let writerFallbackPages = 10_000

    private let queue: DatabaseQueue
    private let stopping = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

    init(path: String, interval: Double, logger: Logger) throws {
        var configuration = Configuration()
        // A passive checkpoint never waits: one that finds another running skips a round.
        configuration.busyMode = .immediateError
        queue = try DatabaseQueue(path: path, configuration: configuration)
        Thread.detachNewThread { [self] in
            var lastLogged = -Double.infinity
            while stopping.wait(timeout: .now() + interval) == .timedOut {
                do {
                    try queue.writeWithoutTransaction { db in _ = try db.checkpoint(.passive) }
                } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY {
                    continue
                } catch {
                    // A full volume, say: the WAL keeps every commit, and the next round tries again.
                    let now = monotonicSeconds()
                    if now - lastLogged >= 10 {
                        lastLogged = now
                        logger.warning("a WAL checkpoint failed; the commits stay in the WAL and the next checkpoint tries again",
                                       metadata: ["error": "\(error)"])
                    }
                }
            }
            finished.signal()
        }
    }

    /// Stops the thread after its checkpoint in progress, if any.
    func stop() {
        stopping.signal()
        finished.wait()
    }
}
