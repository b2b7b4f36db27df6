import Foundation
import Synchronization
import Testing
@testable import Worker

/// The worker's stage threads: one thread serves jobs run one after
/// another; a stage still running when the next job starts leaves that job
/// to another thread instead of making it wait.
@Suite struct StageThreadsTests {
    /// Runs `body` as a stage and waits until its outcome is told; returns the thread it ran on.
    static func runAndWait(_ threads: StageThreads, _ body: @escaping @Sendable () -> Void = {}) -> String {
        let told = DispatchSemaphore(value: 0), ranOn = Mutex("")
        threads.run {
            body()
            ranOn.withLock { $0 = "\(pthread_self())" }
            return { told.signal() }
        }
        told.wait()
        return ranOn.withLock { $0 }
    }

    @Test func jobsOneAfterAnotherShareOneThread() {
        let threads = StageThreads()
        let names = (0..<50).map { _ in Self.runAndWait(threads) }
        #expect(threads.started == 1)
        #expect(Set(names).count == 1)
        #expect(names[0] != "\(pthread_self())")
    }

    @Test func aStageStillRunningDoesNotHoldTheNextJob() {
        let threads = StageThreads()
        let release = DispatchSemaphore(value: 0), stuckTold = DispatchSemaphore(value: 0)
        threads.run {
            release.wait()
            return { stuckTold.signal() }
        }
        // The first stage holds its thread; the next runs at once on a second.
        let second = Self.runAndWait(threads)
        #expect(threads.started == 2)
        release.signal()
        stuckTold.wait()
        // Both idle now: later jobs start no third thread.
        let later = (0..<10).map { _ in Self.runAndWait(threads) }
        #expect(threads.started == 2)
        #expect(later.allSatisfy { !$0.isEmpty } && !second.isEmpty)
    }
}
