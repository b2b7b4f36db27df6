import Foundation
import GRDB
import Testing
import TestSupport
import Shared
@testable import Scheduler

/// The DAG's state machine on a real SQLite file, with an explicit clock.
@Suite struct JobStoreTests {
    let dir: TemporaryDirectory
    let store: JobStore
    let noJitter = Backoff(base: 10, cap: 100, jitter: 0)

    init() throws {
        dir = try TemporaryDirectory()
        store = try JobStore(path: dir.url.appendingPathComponent("state.sqlite").path)
    }

    static func methodSweep(_ name: String = "s", memory: [String] = ["h", "hcp"]) -> Sweep {
        var s = Sweep(name: name, dataset: "d", categories: ["a"])
        s.grid.memoryTypes = memory.compactMap(MemoryCombination.init)
        s.maxAttempts = 2
        return s
    }

    static func diagnostic(_ name: String, jobs: Int, chained: Bool = false) -> Sweep {
        var s = Sweep(name: name, dataset: "", categories: [])
        var d = Sweep.Diagnostic()
        d.jobs = jobs; d.chained = chained
        s.diagnostic = d
        s.maxAttempts = 2
        return s
    }

    /// Group commit: the calls in a batch commit together; one that fails
    /// undoes only itself; reads in the batch see its changes, other
    /// connections only once it commits.
    @Test func aBatchCommitsItsCallsTogetherAndAFailingCallUndoesOnlyItself() throws {
        struct Refused: Error {}
        let other = try JobStore(path: store.path)
        let (first, second) = (String(repeating: "a", count: 64), String(repeating: "b", count: 64))
        try store.batch {
            try store.storeSmallBlob(hash: first, data: Data([1]))
            #expect(throws: Refused.self) {
                try store.write { db in
                    try db.run("INSERT INTO small_blob (hash, data) VALUES (?, ?)", arguments: [second, Data([2])])
                    throw Refused()
                }
            }
            #expect(try store.smallBlob(first) == Data([1]) && store.smallBlob(second) == nil)
            #expect(try other.smallBlob(first) == nil)
        }
        #expect(try other.smallBlob(first) == Data([1]) && other.smallBlob(second) == nil)
        // Outside a batch each call is its own transaction again.
        try store.storeSmallBlob(hash: second, data: Data([2]))
        #expect(try other.smallBlob(second) == Data([2]))
    }

    @Test func aRowHoldingAValueNoTypeHasIsANamedErrorNotATrap() throws {
        _ = try store.submit(Self.methodSweep(), file: "{}")
        // A damaged or foreign database: a dead job of a stage kind this coordinator does not know.
        try store.pool.write { db in
            try db.execute(sql: "UPDATE job SET kind = 'segment-trian', state = 'dead' WHERE kind = 'segment-train'")
        }
        do {
            _ = try store.resume(sweep: "s")
            Issue.record("resumed a job of an unknown kind")
        } catch JobStore.StoreError.corrupt(let message) {
            #expect(message.contains("column kind holds \"segment-trian\"") && message.contains("not a StageKind"), "\(message)")
        }
        // The refused resume changed nothing (one transaction).
        #expect(try store.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM job WHERE state = 'dead'") } == 1)
    }

    /// Runs every ready job to completion, in dispatch order; returns the kinds run.
    func drain(now: Double = 0) throws -> [StageKind] {
        var ran: [StageKind] = []
        while let a = try store.dispatch(worker: "w", memoryMiB: 1 << 20, now: now, leaseSeconds: 10) {
            ran.append(a.kind)
            #expect(try store.complete(token: a.token, outputs: ["out": String(repeating: "a", count: 64)],
                                       metrics: a.kind == .evaluate ? ["logical_auroc": 0.9] : [:], now: now) == .accepted)
        }
        return ran
    }

    @Test func aSweepRunsInDependencyOrderAndDoneJobsAreReused() throws {
        let first = try store.submit(Self.methodSweep(), file: "{}")
        #expect(first.created == 7 && first.reused == 0)   // preprocess, patch, segment, pseudo, bank, 2 evaluate
        let ran = try drain()
        #expect(ran.first == .preprocess && ran.suffix(2) == [.evaluate, .evaluate])
        #expect(ran.firstIndex(of: .segmentTrain)! < ran.firstIndex(of: .pseudoLabel)!)
        #expect(try store.status(sweep: "s")[0].count(.done) == 7)
        // Adding a memory type reuses everything upstream and adds one evaluate job.
        let second = try store.submit(Self.methodSweep("t", memory: ["h", "hcp", "p"]), file: "{}")
        #expect(second.created == 1 && second.reused == 7)
        #expect(try drain() == [.evaluate])
        #expect(try store.results(sweep: "t").count == 3)
        #expect(try store.status(sweep: "t")[0].finished)
    }

    /// Among equal priorities the head of the longest chain goes first
    /// (StageKind.level), then the oldest: every preprocess, then the
    /// segment-trains, then the pseudo-labels, and the patch-features (older,
    /// but only evaluate waits on them) fill in after; a higher-priority
    /// sweep still goes before any level.
    @Test func theLongestChainsHeadGoesFirstWithinAPriority() throws {
        var two = Self.methodSweep(memory: ["hcp"])
        two.categories = ["a", "b"]
        try store.submit(two, file: "{}")
        let ran = try drain()
        #expect(ran == [.preprocess, .preprocess, .segmentTrain, .segmentTrain, .pseudoLabel, .pseudoLabel,
                        .patchFeatures, .bankFit, .patchFeatures, .bankFit, .evaluate, .evaluate], "\(ran.map(\.rawValue))")
        // A later sweep of higher priority goes first whole.
        var low = Self.methodSweep("low", memory: ["p"])
        low.categories = ["c"]
        var urgent = Self.methodSweep("urgent", memory: ["p"])
        urgent.categories = ["d"]
        urgent.priority = 1
        try store.submit(low, file: "{}")
        try store.submit(urgent, file: "{}")
        var order: [(String, StageKind)] = []
        while let a = try store.dispatch(worker: "w", memoryMiB: 1 << 20, now: 0, leaseSeconds: 10) {
            order.append((a.category, a.kind))
            _ = try store.complete(token: a.token, outputs: ["out": String(repeating: "a", count: 64)],
                                   metrics: a.kind == .evaluate ? ["logical_auroc": 0.9] : [:], now: 0)
        }
        // Every job of the urgent sweep, patch-features (level 1) included, before the other's preprocess (level 5).
        let lastUrgent = try #require(order.lastIndex { $0.0 == "d" })
        let firstLow = try #require(order.firstIndex { $0.0 == "c" })
        #expect(order.count == 12 && lastUrgent == 5 && firstLow == 6, "\(order)")
    }

    /// A state directory from before levels: opening it gives every queued
    /// job its kind's level and the queue's index its new order.
    @Test func aStateFromBeforeLevelsIsGivenThem() throws {
        let old = try TemporaryDirectory()
        let path = old.url.appendingPathComponent("state.sqlite").path
        let pool = try DatabasePool(path: path)
        try StateSchema.migrator.migrate(pool, upTo: "v10-lease-progress-base")
        try pool.write { db in
            for (i, kind) in [StageKind.preprocess, .patchFeatures, .segmentTrain].enumerated() {
                try db.execute(sql: """
                    INSERT INTO job (key, kind, category, parameters, material, state, priority, seq, waiting, max_attempts)
                    VALUES (?, ?, 'a', '{}', '{}', 'ready', 0, ?, 0, 2)
                    """, arguments: [String(repeating: "\(i)", count: 64), kind.rawValue, i])
            }
        }
        try pool.close()
        let store = try JobStore(path: path)
        let levels = try store.pool.read { db in
            try Row.fetchAll(db, sql: "SELECT kind, level FROM job ORDER BY seq").map { [$0["kind"] as String: $0["level"] as Int] }
        }
        #expect(levels == [["preprocess": 5], ["patch-features": 1], ["segment-train": 4]])
        let order = [try store.dispatch(worker: "w", memoryMiB: 1 << 20, now: 0, leaseSeconds: 10),
                     try store.dispatch(worker: "w", memoryMiB: 1 << 20, now: 0, leaseSeconds: 10),
                     try store.dispatch(worker: "w", memoryMiB: 1 << 20, now: 0, leaseSeconds: 10)].map { $0?.kind }
        #expect(order == [.preprocess, .segmentTrain, .patchFeatures])
    }

    /// Schema v12 keeps every job output and lease of a v11 state, in a
    /// job_output that is its primary key alone and a lease table keyed by
    /// token, and drops the unread artifact registry.
    @Test func aStateFromBeforeV12KeepsItsOutputs() throws {
        let old = try TemporaryDirectory()
        let path = old.url.appendingPathComponent("state.sqlite").path
        let pool = try DatabasePool(path: path)
        try StateSchema.migrator.migrate(pool, upTo: "v11-job-level")
        let key = String(repeating: "1", count: 64), running = String(repeating: "2", count: 64)
        let hashes = ["a", "b"].map { String(repeating: $0, count: 64) }
        try pool.write { db in
            try db.execute(sql: """
                INSERT INTO job (key, kind, category, parameters, material, state, priority, seq, waiting, max_attempts)
                VALUES (?, 'preprocess', 'a', '{}', '{}', 'done', 0, 0, 0, 2)
                """, arguments: [key])
            for (name, hash) in zip(["x", "y"], hashes) {
                try db.execute(sql: "INSERT INTO artifact (hash, size, created_at) VALUES (?, 1, 0)", arguments: [hash])
                try db.execute(sql: "INSERT INTO job_output (job, name, hash) VALUES (?, ?, ?)", arguments: [key, name, hash])
            }
            try db.execute(sql: """
                INSERT INTO job (key, kind, category, parameters, material, state, priority, seq, waiting, max_attempts)
                VALUES (?, 'segment-train', 'a', '{}', '{}', 'leased', 0, 1, 0, 2)
                """, arguments: [running])
            try db.execute(sql: "INSERT INTO attempt (job, worker, started_at, outcome) VALUES (?, 'w', 0, 'running')", arguments: [running])
            try db.execute(sql: """
                INSERT INTO lease (job, token, worker, expires_at, progress_done, progress_total, progress_unit, progress_base, progress_base_at)
                VALUES (?, 1, 'w', 30, 7, 100, 'epochs', 2, 5)
                """, arguments: [running])
        }
        try pool.close()
        let store = try JobStore(path: path)
        try store.pool.read { db in
            let outputs = try Row.fetchAll(db, sql: JobStore.outputsOfKeySQL + " ORDER BY name", arguments: [key])
            #expect(outputs.map { [$0["name"] as String, $0["hash"] as String] } == [["x", hashes[0]], ["y", hashes[1]]])
            #expect(try db.tableExists("artifact") == false)
            #expect(try db.indexes(on: "job_output").map(\.columns) == [["job", "name"]])
            #expect(try String.fetchOne(db, sql: "SELECT sql FROM sqlite_master WHERE name = 'job_output'")?.contains("WITHOUT ROWID") == true)
            #expect(try db.primaryKey("lease").rowIDColumn == "token")
            #expect(try db.indexes(on: "lease").map(\.columns) == [["job"]])
            #expect(try db.indexes(on: "evaluation").map(\.columns).contains(["job"]))
        }
        #expect(try store.referencedArtifacts() == Set(hashes))
        // The lease as it was, found by its token; its worker's result completes the job.
        #expect(try store.leasedJob(token: 1)?.hex == running && store.leaseHolder(token: 1) == "w")
        #expect(try store.heartbeat(token: 1, now: 1, leaseSeconds: 10))
        #expect(try store.complete(token: 1, now: 2) == .accepted)
        #expect(try store.leasedJob(token: 1) == nil)
    }

    /// Schema v14 names jobs by integer id in attempt, lease and job_output:
    /// a v13 state keeps its attempts, lease and outputs, each on the right
    /// job (its id is its old rowid), and the fencing tokens go on from the
    /// old sequence (not from the highest token kept).
    @Test func aStateFromBeforeV14KeepsItsAttemptsLeasesAndOutputs() throws {
        let old = try TemporaryDirectory()
        let path = old.url.appendingPathComponent("state.sqlite").path
        let pool = try DatabasePool(path: path)
        try StateSchema.migrator.migrate(pool, upTo: "v13-ready-jobs-by-fit")
        // Inserted out of submit order, so that rowid and seq differ (a submit inserts in seq order).
        let done = String(repeating: "b", count: 64), running = String(repeating: "a", count: 64), ready = String(repeating: "c", count: 64)
        try pool.write { db in
            for (key, state, seq) in [(ready, "ready", 2), (done, "done", 0), (running, "leased", 1)] {
                try db.execute(sql: """
                    INSERT INTO job (key, kind, category, parameters, material, state, priority, seq, waiting, max_attempts, level)
                    VALUES (?, 'preprocess', 'a', '{}', '{}', ?, 0, ?, 0, 2, 5)
                    """, arguments: [key, state, seq])
            }
            try db.execute(sql: "INSERT INTO edge (parent, child, role) VALUES (?, ?, 'input')", arguments: [done, ready])
            try db.execute(sql: "INSERT INTO job_output (job, name, hash) VALUES (?, 'x', ?)", arguments: [done, String(repeating: "d", count: 64)])
            try db.execute(sql: "INSERT INTO attempt (token, job, worker, started_at, outcome, seconds) VALUES (3, ?, 'w', 0, 'done', 1.5)",
                           arguments: [done])
            try db.execute(sql: "INSERT INTO attempt (token, job, worker, started_at, outcome) VALUES (8, ?, 'w', 0, 'running')", arguments: [running])
            try db.execute(sql: "INSERT INTO lease (token, job, worker, expires_at) VALUES (8, ?, 'w', 30)", arguments: [running])
            // An attempt removed since (a restore does): the sequence stays at 9.
            try db.execute(sql: "INSERT INTO attempt (token, job, worker, started_at, outcome) VALUES (9, ?, 'w', 0, 'failed')", arguments: [running])
            try db.execute(sql: "DELETE FROM attempt WHERE token = 9")
        }
        try pool.close()
        let store = try JobStore(path: path)
        try store.pool.read { (db: Database) throws -> Void in
            #expect(try String.fetchAll(db, sql: "SELECT key FROM job ORDER BY id") == [ready, done, running])
            #expect(try Row.fetchAll(db, sql: "SELECT typeof(job) AS t FROM attempt UNION SELECT typeof(job) FROM lease UNION SELECT typeof(job) FROM job_output")
                .map { $0["t"] as String } == ["integer"])
            #expect(try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM pragma_foreign_key_check") == 0)
            #expect(try Double.fetchOne(db, sql: "SELECT seconds FROM attempt JOIN job ON job.id = attempt.job WHERE job.key = ?", arguments: [done]) == 1.5)
            #expect(try db.indexes(on: "job").map(\.name).sorted() == ["job_queue", "job_ready_fit", "sqlite_autoindex_job_1"])
        }
        #expect(try store.leasedJob(token: 8)?.hex == running)
        #expect(try store.complete(token: 8, now: 2) == .accepted)
        let next = try #require(try store.dispatch(worker: "w", memoryMiB: 1 << 20, now: 3, leaseSeconds: 10))
        #expect(next.key.hex == ready && next.token == 10)
        #expect(next.inputs == ["input": ["x": String(repeating: "d", count: 64)]])
    }

    /// A state a newer coordinator migrated is refused by name, untouched,
    /// not served with statements of an older schema.
    @Test func aStateFromANewerCoordinatorIsRefusedByName() throws {
        let dir = try TemporaryDirectory()
        let path = dir.url.appendingPathComponent("state.sqlite").path
        do {
            let newer = try JobStore(path: path)
            try newer.pool.write { db in try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99-future')") }
        }
        do {
            _ = try JobStore(path: path)
            Issue.record("opened a state of a newer schema")
        } catch let error as JobStore.StoreError {
            guard case .newerSchema(let named, let migrations, let known) = error else { throw error }
            #expect(named == path && migrations == ["v99-future"] && known == StateSchema.migrator.migrations.last)
            #expect("\(error)".contains("newer psad-coordinator"), "\(error)")
        }
        let pool = try DatabasePool(path: path)
        #expect(try pool.read { db in try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations") }.contains("v99-future"))
    }

    /// The statements a result runs find their rows through an index:
    /// none scans a table whose size is the sweep's (in a 94,500-evaluation
    /// state each metric's scan of the evaluations took 12-19 ms).
    @Test func aResultsStatementsScanNoSweepSizedTable() throws {
        let statements = [JobStore.recordMetricSQL, JobStore.outputsSQL, JobStore.outputsOfKeySQL, JobStore.leasedJobSQL,
                          JobStore.inputsSQL, "SELECT data FROM small_blob WHERE hash = ?"]
        try store.pool.read { db in
            for sql in statements {
                let values: [any DatabaseValueConvertible] = ["m", 1.0, "k"]
                let arguments = StatementArguments(Array(values.suffix(sql.filter { $0 == "?" }.count)).map { $0.databaseValue })
                let plan = try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + sql, arguments: arguments).map { $0["detail"] as String }
                #expect(!plan.contains { $0.hasPrefix("SCAN") }, "\(sql): \(plan)")
            }
        }
    }

    @Test func resubmittingASweepIsANoOpUnlessItsDataChanged() throws {
        var sweep = Self.methodSweep()
        sweep.dataDigests = ["a": "d1"]
        #expect(try store.submit(sweep, file: "{}").created == 7)
        let same = try store.submit(sweep, file: "{}")
        #expect(same.alreadySubmitted && same.notInSweep == 0 && same.jobs == 7)
        // The same file expanding to other jobs (as after a code version changed): still a
        // no-op, the new jobs counted so the command can say so.
        var expandsOtherwise = sweep
        expandsOtherwise.grid.memoryTypes = ["h", "p"].compactMap(MemoryCombination.init)
        let changed = try store.submit(expandsOtherwise, file: "{}")
        #expect(changed.alreadySubmitted && changed.created == 0 && changed.notInSweep == 1 && changed.jobs == 7)
        // Submitted without reading the data (--no-data-digest): nothing to compare, a no-op.
        var blind = sweep
        blind.dataDigests = [:]
        #expect(try store.submit(blind, file: "{}").alreadySubmitted)
        sweep.dataDigests = ["a": "d2"]
        #expect(throws: JobStore.StoreError.dataChanged("s", categories: ["a"])) { try store.submit(sweep, file: "{}") }
        // Under a new name: new jobs for the new data, none shared with the old.
        sweep.name = "s2"
        let again = try store.submit(sweep, file: "{}")
        #expect(again.created == 7 && again.existing == 0)
    }

    @Test func aStaleTokenIsRefusedAfterTheLeaseExpired() throws {
        try store.submit(Self.diagnostic("d", jobs: 1), file: "{}")
        let first = try #require(try store.dispatch(worker: "w1", memoryMiB: 0, now: 0, leaseSeconds: 5))
        #expect(try store.heartbeat(token: first.token, now: 4, leaseSeconds: 5))       // renewed to 9
        #expect(try store.expireLeases(now: 8, backoff: noJitter).isEmpty)
        #expect(try store.expireLeases(now: 9.5, backoff: noJitter) == [first.key])
        #expect(try store.heartbeat(token: first.token, now: 9.6, leaseSeconds: 5) == false)
        // Failed, retried after the backoff (10 s after attempt 1).
        #expect(try store.dispatch(worker: "w2", memoryMiB: 0, now: 10, leaseSeconds: 5) == nil)
        try store.promoteRetries(now: 19.6)
        let second = try #require(try store.dispatch(worker: "w2", memoryMiB: 0, now: 19.6, leaseSeconds: 5))
        #expect(second.key == first.key && second.token > first.token)
        // The first worker's late result is refused; the second one's stands.
        #expect(try store.complete(token: first.token, now: 20) == .stale)
        #expect(try store.complete(token: second.token, now: 21) == .accepted)
        #expect(try store.explain(first.key).state == "done")
    }

    /// The time left is the pace since the first count the attempt
    /// reported: a stage resumed at epoch 60 of 100 that takes 20 s for 10
    /// epochs has 60 s left, not elapsed x 30 / 70.
    @Test func timeLeftIsMeasuredFromTheFirstCountAnAttemptReports() throws {
        try store.submit(Self.diagnostic("d", jobs: 1), file: "{}")
        let lease = try #require(try store.dispatch(worker: "w1", memoryMiB: 0, now: 0, leaseSeconds: 50))
        func running(_ now: Double) throws -> SweepStatus.Running {
            try #require(try store.status(sweep: "d", now: now).first?.running.first)
        }
        func beat(_ done: Int, at now: Double) throws {
            #expect(try store.heartbeat(token: lease.token, now: now, leaseSeconds: 50,
                                        progress: .init(token: lease.token, done: done, total: 100, unit: "epochs")))
        }
        #expect(try running(5).remainingSeconds == nil, "no count yet")
        try beat(60, at: 10)
        let first = try running(12)
        #expect(first.done == 60 && first.elapsedSeconds == 12 && first.remainingSeconds == nil, "one count: no pace yet")
        try beat(65, at: 20)
        try beat(70, at: 30)
        let later = try running(30)
        #expect(later.baseDone == 60 && later.sinceBaseSeconds == 20)
        #expect(later.remainingSeconds == 60)
    }

    @Test func retriesRunOutThenTheJobIsDeadAndItsDescendantsBlocked() throws {
        try store.submit(Self.diagnostic("d", jobs: 3, chained: true), file: "{}")
        for attempt in 1...2 {
            try store.promoteRetries(now: Double(attempt) * 1000)
            let a = try #require(try store.dispatch(worker: "w", memoryMiB: 0, now: Double(attempt) * 1000, leaseSeconds: 5))
            #expect(try store.fail(token: a.token, error: "boom \(attempt)", permanent: false, now: Double(attempt) * 1000, backoff: noJitter) == .accepted)
        }
        let status = try store.status(sweep: "d")[0]
        #expect(status.count(.dead) == 1 && status.count(.blocked) == 2)
        // resume (the cause removed): the dead job is ready, the blocked ones wait for it, the chain finishes.
        #expect(try store.resume(sweep: "d") == 3)
        let resumed = try store.status(sweep: "d")[0]
        #expect(resumed.count(.ready) == 1 && resumed.count(.pending) == 2)
        #expect(try drain(now: 6000).count == 3)
        #expect(try store.status(sweep: "d")[0].count(.done) == 3)
    }

    @Test func resumeOfSomeKindsLeavesTheOthersDead() throws {
        try store.submit(Self.methodSweep(), file: "{}")
        let a = try #require(try store.dispatch(worker: "w", memoryMiB: 1 << 20, now: 0, leaseSeconds: 5))
        _ = try store.fail(token: a.token, error: "bad input", permanent: true, now: 1)
        #expect(try store.status(sweep: "s")[0].count(.blocked) == 6)
        // Only evaluate jobs: their preprocess input is still dead, so nothing moves.
        #expect(try store.resume(sweep: "s", kinds: [.evaluate]) == 0)
        // The dead preprocess job: requeued, and the jobs it blocked wait for it again.
        #expect(try store.resume(sweep: "s", kinds: [.preprocess]) == 7)
        let status = try store.status(sweep: "s")[0]
        #expect(status.count(.ready) == 1 && status.count(.pending) == 6)
    }

    @Test func aPermanentErrorIsDeadWithoutRetries() throws {
        try store.submit(Self.diagnostic("d", jobs: 1), file: "{}")
        let a = try #require(try store.dispatch(worker: "w", memoryMiB: 0, now: 0, leaseSeconds: 5))
        _ = try store.fail(token: a.token, error: "bad PNG: train/good/000.png is truncated", permanent: true, now: 1)
        let e = try store.explain(a.key)
        #expect(e.state == "dead" && e.attempts == 1 && e.error?.contains("truncated") == true)
    }

    @Test func jobsGoOnlyToWorkersWithTheMemoryTheyNeed() throws {
        try store.submit(Self.methodSweep(), file: "{}")
        let preprocess = try #require(try store.dispatch(worker: "small", memoryMiB: 600, now: 0, leaseSeconds: 5))
        #expect(preprocess.kind == .preprocess)
        _ = try store.complete(token: preprocess.token, now: 1)
        // segment-train (about 1.1 GiB at 256 px) and patch-features (0.9) are ready; a 600 MiB worker gets neither.
        #expect(try store.dispatch(worker: "small", memoryMiB: 600, now: 2, leaseSeconds: 5) == nil)
        let big = try #require(try store.dispatch(worker: "big", memoryMiB: 4096, now: 2, leaseSeconds: 5))
        #expect([.segmentTrain, .patchFeatures].contains(big.kind))
        #expect(big.inputs["preprocessed"]?["out"] == nil)   // preprocess recorded no outputs here
    }

    /// A worker's request (it has nothing in hand, or was told there was
    /// nothing, and asks again every 0.2 s) first looks up whether any ready
    /// job fits it, in the partial index of ready jobs by kind and memory:
    /// a search, not the scan of every ready job that a worker fitting none
    /// of them made before. What it is offered is what the scan offers.
    @Test func aRequestFindsWhetherAnyReadyJobFitsWithoutScanningThem() throws {
        try store.submit(Self.methodSweep(), file: "{}")
        #expect(try store.dispatch(worker: "tiny", memoryMiB: 1, now: 0, leaseSeconds: 5, count: 4).isEmpty)
        let preprocess = try #require(try store.dispatch(worker: "small", memoryMiB: 600, now: 0, leaseSeconds: 5, count: 4).first)
        #expect(preprocess.kind == .preprocess)
        _ = try store.complete(token: preprocess.token, now: 1)
        // segment-train and patch-features are ready, each above 600 MiB.
        #expect(try store.dispatch(worker: "small", memoryMiB: 600, now: 2, leaseSeconds: 5, count: 4).isEmpty)
        #expect(try store.dispatch(worker: "evaluator", memoryMiB: 4096, kinds: [.evaluate], now: 2, leaseSeconds: 5, count: 4).isEmpty)
        let big = try store.dispatch(worker: "big", memoryMiB: 4096, now: 2, leaseSeconds: 5, count: 4)
        #expect(Set(big.map(\.kind)) == [.segmentTrain, .patchFeatures])
        // Leased jobs leave the index: nothing ready fits even a large worker now.
        #expect(try store.dispatch(worker: "big2", memoryMiB: 1 << 20, now: 2, leaseSeconds: 5, count: 4).isEmpty)
        try store.pool.read { db in
            #expect(try !JobStore.anyReadyJobFits(db, memoryMiB: 1 << 20, kinds: Set(StageKind.allCases)))
            let plan = try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + JobStore.anyReadyJobFitsSQL(kinds: 2),
                                        arguments: ["segment-train", "evaluate", 600]).map { $0["detail"] as String }
            #expect(!plan.contains { $0.hasPrefix("SCAN") } && plan.contains { $0.contains("job_ready_fit") }, "\(plan)")
        }
    }

    /// What a done attempt cost is kept with it; a peak above the job's
    /// estimate is listed by status (the estimate is too low for that data).
    @Test func anAttemptsMeasuredCostIsKeptAndAPeakAboveTheEstimateIsListed() throws {
        try store.submit(Self.methodSweep(), file: "{}")
        let preprocess = try #require(try store.dispatch(worker: "w1", memoryMiB: 1 << 20, now: 0, leaseSeconds: 5))
        let estimate = try store.explain(preprocess.key).memoryMiB
        _ = try store.complete(token: preprocess.token, cost: (seconds: 31.5, peakMiB: Double(estimate) - 1), now: 1)
        #expect(try store.explain(preprocess.key).run == .init(worker: "w1", seconds: 31.5, peakMiB: Double(estimate) - 1))
        #expect(try store.status(sweep: "s", now: 1)[0].overEstimates.isEmpty)
        let next = try #require(try store.dispatch(worker: "w2", memoryMiB: 1 << 20, now: 1, leaseSeconds: 5))
        let nextEstimate = try store.explain(next.key).memoryMiB
        _ = try store.complete(token: next.token, cost: (seconds: 2, peakMiB: Double(nextEstimate) + 100), now: 2)
        let over = try store.status(sweep: "s", now: 2)[0].overEstimates
        #expect(over == [.init(key: next.key.hex, kind: next.kind.rawValue, category: "a", worker: "w2",
                               peakMiB: Double(nextEstimate) + 100, estimateMiB: nextEstimate)])
        // A worker that cannot measure its peak says nothing about it.
        let third = try #require(try store.dispatch(worker: "w3", memoryMiB: 1 << 20, now: 2, leaseSeconds: 5))
        _ = try store.complete(token: third.token, cost: (seconds: 3, peakMiB: nil), now: 3)
        #expect(try store.explain(third.key).run == .init(worker: "w3", seconds: 3, peakMiB: nil))
        #expect(try store.status(sweep: "s", now: 3)[0].overEstimates.count == 1)
    }

    /// At a real category's size the same stages need far more: the coordinator
    /// hands them only to a worker that can hold them, and status says why a
    /// ready job is not dispatched when no worker seen could.
    @Test func aJobsMemoryNeedFollowsItsCategorysSize() throws {
        var sweep = Self.methodSweep("loco")
        sweep.grid.imageSizes = [512]
        sweep.grid.patchImageSizes = [512]   // PatchCore at 512 too (its default, 256, fits 4 GiB at this size)
        sweep.dataSizes = ["a": CategorySize(train: 350, test: 400, classes: 26)]
        try store.submit(sweep, file: "loco")
        let preprocess = try #require(try store.dispatch(worker: "w", memoryMiB: 1 << 20, now: 0, leaseSeconds: 5))
        _ = try store.complete(token: preprocess.token, now: 1)
        try store.registerWorker("small", resources: #"{"cores": 2, "memoryBytes": 4294967296, "tags": []}"#, now: 1)
        #expect(try store.dispatch(worker: "small", memoryMiB: 4096, now: 2, leaseSeconds: 5) == nil)
        let problems = try store.status(sweep: "loco", now: 2)[0].problems
        #expect(problems.count == 2 && problems.allSatisfy { $0.error.hasSuffix("the largest worker seen offers 4096 MiB") }, "\(problems)")
        let big = try #require(try store.dispatch(worker: "big", memoryMiB: 48 << 10, now: 2, leaseSeconds: 5))
        let e = try store.explain(big.key)
        let parameters = try JSONDecoder().decode([String: ParameterValue].self, from: Data(big.parameters.utf8))
        #expect(e.memoryMiB == StageMemory.estimateMiB(kind: big.kind, parameters: parameters, size: sweep.dataSizes["a"]))
        #expect(e.memoryMiB > 4096)
    }

    @Test func aWorkerReRegisteringKeepsItsLeasesAndAHandedBackJobIsReadyAgain() throws {
        try store.submit(Self.diagnostic("d", jobs: 2), file: "{}")
        let a = try #require(try store.dispatch(worker: "w", memoryMiB: 0, now: 0, leaseSeconds: 5))
        let b = try #require(try store.dispatch(worker: "w", memoryMiB: 0, now: 0, leaseSeconds: 5))
        try store.resetDeadlines(now: 0, grace: 60, longestBackoff: 60)
        let (adopted, dropped) = try store.readopt(worker: "w", tokens: [a.token, 999], now: 30, leaseSeconds: 5)
        #expect(adopted == [a.token] && dropped == [999])
        #expect(try store.handBack(token: b.token, now: 31) == .accepted)
        let again = try #require(try store.dispatch(worker: "v", memoryMiB: 0, now: 32, leaseSeconds: 5))
        #expect(again.key == b.key)
        #expect(try store.explain(b.key).attempts == 1)   // the handed-back attempt is not counted
    }

    @Test func explainNamesWhatDiffersFromTheNearestDoneJob() throws {
        try store.submit(Self.methodSweep(), file: "{}")
        _ = try drain()
        var other = Self.methodSweep("t")
        other.grid.epochs = [50]
        try store.submit(other, file: "{}")
        let segment = SweepExpander.expand(other).jobs.first { $0.kind == .segmentTrain }!
        let e = try store.explain(segment.key)
        #expect(e.state == "ready" && e.differences == ["epochs": "50 / 100"])
        let bank = SweepExpander.expand(other).jobs.first { $0.kind == .bankFit }!
        #expect(try store.explain(bank.key).differences.keys.sorted() == ["input masks"])
        #expect(try store.resolve(String(segment.key.hex.prefix(10))) == segment.key)
    }

    @Test func cancelEndsLeasesSoLateResultsAreRefused() throws {
        try store.submit(Self.diagnostic("d", jobs: 2), file: "{}")
        let a = try #require(try store.dispatch(worker: "w", memoryMiB: 0, now: 0, leaseSeconds: 5))
        #expect(try store.cancel(sweep: "d", now: 1) == 2)
        #expect(try store.complete(token: a.token, now: 2) == .stale)
        #expect(try store.status(sweep: "d")[0].count(.cancelled) == 2)
    }

    /// Two sweeps sharing unfinished jobs: cancelling one leaves what the
    /// other needs; cancelling the other then cancels the shared jobs (the
    /// first no longer needs them), and resuming a sweep claims them again.
    @Test func jobsSharedByTwoCancelledSweepsAreCancelled() throws {
        try store.submit(Self.methodSweep("first", memory: ["h"]), file: "{first}")
        let second = try store.submit(Self.methodSweep("second", memory: ["h", "hcp"]), file: "{second}")
        let shared = second.jobs - second.created
        #expect(shared > 0 && second.created > 0)
        #expect(try store.cancel(sweep: "first", now: 0) == 0)
        #expect(try store.cancel(sweep: "second", now: 1) == second.jobs)
        #expect(try store.status(sweep: "first")[0].count(.cancelled) == shared)
        // Resumed, the first holds its jobs again: cancelling the second leaves them.
        #expect(try store.resume(sweep: "first") == shared)
        #expect(try store.resume(sweep: "second") == second.jobs - shared)
        #expect(try store.cancel(sweep: "second", now: 2) == second.jobs - shared)
        #expect(try store.status(sweep: "first")[0].count(.cancelled) == 0)
    }

    @Test func aJobCancelledWithOneSweepRunsForTheNextThatNeedsIt() throws {
        try store.submit(Self.methodSweep("first", memory: ["h"]), file: "{first}")
        let cancelled = try store.cancel(sweep: "first", now: 0)
        #expect(cancelled > 0)
        let second = try store.submit(Self.methodSweep("second", memory: ["h", "hcp"]), file: "{second}")
        // Every job of the first sweep is one the second needs: all queued again, none blocked.
        #expect(second.requeued == cancelled && second.existing == cancelled && second.created == second.jobs - cancelled)
        let status = try store.status(sweep: "second")[0]
        #expect(status.count(.blocked) == 0 && status.count(.cancelled) == 0)
        _ = try drain()
        #expect(try store.status(sweep: "second")[0].count(.done) == second.jobs)
        // The first sweep's own jobs were all the second's too, so it is finished as well.
        #expect(try store.status(sweep: "first")[0].count(.done) == cancelled)
    }

    @Test func stateSurvivesReopening() throws {
        try store.submit(Self.diagnostic("d", jobs: 3), file: "{}")
        let a = try #require(try store.dispatch(worker: "w", memoryMiB: 0, now: 0, leaseSeconds: 5))
        _ = try store.complete(token: a.token, now: 1)
        let reopened = try JobStore(path: store.path)
        let status = try reopened.status(sweep: "d")[0]
        #expect(status.count(.done) == 1 && status.count(.ready) == 2)
        #expect(throws: JobStore.StoreError.sweepExists("d")) { try reopened.submit(Self.diagnostic("d", jobs: 1), file: "{other}") }
        let again = try reopened.submit(Self.diagnostic("d", jobs: 3), file: "{}")
        #expect(again.alreadySubmitted && again.reused == 1 && again.existing == 2 && again.created == 0)
    }
}

/// Backup, restore and the check before serving, on real SQLite files.
@Suite struct StateBackupTests {
    let dir: TemporaryDirectory
    var path: String { dir.url.appendingPathComponent("state.sqlite").path }

    init() throws { dir = try TemporaryDirectory() }

    /// A backup taken with a job leased and one done; two more done after
    /// it; the restore brings the backup's state back with its lease handed
    /// back (ready, the attempt not counted), keeps the replaced file, and
    /// issues no token the replaced database issued.
    @Test func aRestoredBackupRunsAgainWhatWasDoneAfterItAndReissuesNoToken() throws {
        var store: JobStore? = try JobStore(path: path)
        try store!.submit(JobStoreTests.diagnostic("d", jobs: 5), file: "{}")
        let first = try #require(try store!.dispatch(worker: "w", memoryMiB: 0, now: 0, leaseSeconds: 60))
        #expect(try store!.complete(token: first.token, now: 1) == .accepted)
        let leased = try #require(try store!.dispatch(worker: "w", memoryMiB: 0, now: 2, leaseSeconds: 60))
        let backup = dir.url.appendingPathComponent("backup.sqlite").path
        let taken = try store!.backup(to: backup)
        #expect(taken.jobs == 5 && taken.done == 1 && taken.bytes > 0)
        #expect(try store!.complete(token: leased.token, now: 3) == .accepted)
        let later = try #require(try store!.dispatch(worker: "w", memoryMiB: 0, now: 4, leaseSeconds: 60))
        #expect(try store!.complete(token: later.token, now: 5) == .accepted)
        #expect(try store!.status(sweep: "d", now: 6)[0].count(.done) == 3)
        store = nil

        let restored = try JobStore.restore(backup: backup, into: path, now: 10)
        #expect(restored.jobs == 5 && restored.done == 1 && restored.leasesHandedBack == 1 && restored.nextToken == later.token + 1)
        #expect(FileManager.default.fileExists(atPath: try #require(restored.replacedAt)))
        let back = try JobStore(path: path)
        let status = try back.status(sweep: "d", now: 11)[0]
        #expect(status.count(.done) == 1 && status.count(.ready) == 4 && status.count(.leased) == 0)
        #expect(try back.explain(leased.key).attempts == 0)
        let next = try #require(try back.dispatch(worker: "v", memoryMiB: 0, now: 12, leaseSeconds: 60))
        #expect(next.token == later.token + 1)
        // A result quoting a token of the replaced database is stale, not taken for a new attempt's.
        #expect(try back.complete(token: later.token, now: 13) == .stale)
    }

    /// The replaced database unreadable: tokens jump by 2^32 past the backup's.
    @Test func aRestoreOverAnUnreadableDatabaseStillNeverReissuesATokenItCannotSee() throws {
        let store = try JobStore(path: path)
        try store.submit(JobStoreTests.diagnostic("d", jobs: 2), file: "{}")
        let a = try #require(try store.dispatch(worker: "w", memoryMiB: 0, now: 0, leaseSeconds: 60))
        let backup = dir.url.appendingPathComponent("backup.sqlite").path
        _ = try store.backup(to: backup)
        let garbage = dir.url.appendingPathComponent("other")
        try FileManager.default.createDirectory(at: garbage, withIntermediateDirectories: true)
        let target = garbage.appendingPathComponent("state.sqlite").path
        try Data(repeating: 0x5a, count: 8192).write(to: URL(fileURLWithPath: target))
        let restored = try JobStore.restore(backup: backup, into: target, now: 1)
        #expect(restored.nextToken == a.token + (1 << 32) + 1)
        #expect(try Data(contentsOf: URL(fileURLWithPath: try #require(restored.replacedAt))) == Data(repeating: 0x5a, count: 8192))
    }

    /// A backup that is not a state database is refused before anything is moved.
    @Test func aBackupThatIsNotAStateDatabaseIsRefusedAndNothingMoves() throws {
        let store = try JobStore(path: path)
        try store.submit(JobStoreTests.diagnostic("d", jobs: 1), file: "{}")
        let bogus = dir.url.appendingPathComponent("bogus.sqlite")
        try Data("not a database".utf8).write(to: bogus)
        #expect { try JobStore.restore(backup: bogus.path, into: path) } throws: { "\($0)".contains("cannot be read as a state database") }
        #expect(try JobStore(path: path).status(sweep: "d")[0].total == 1)
    }

    /// A damaged file stops serving with what is wrong and what to do.
    @Test func aDamagedStateFileIsNamedWithTheWayBack() throws {
        let store = try JobStore(path: path)
        try store.submit(JobStoreTests.diagnostic("d", jobs: 400), file: "{}")
        #expect(try JobStore.openChecked(path: path).integrityProblems().isEmpty)
        let backup = dir.url.appendingPathComponent("backup.sqlite").path
        _ = try store.backup(to: backup)
        // Overwrite the middle of the (checkpointed) backup's pages, then check it as a state file.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: backup))
        let page = 4096, middle = bytes.count / page / 2
        bytes.replaceSubrange((middle * page)..<((middle + 2) * page), with: Data(repeating: 0xff, count: 2 * page))
        let damaged = dir.url.appendingPathComponent("damaged.sqlite").path
        try bytes.write(to: URL(fileURLWithPath: damaged))
        #expect { try JobStore.openChecked(path: damaged) } throws: { error in
            let text = "\(error)"
            return text.contains(damaged) && text.contains("is damaged") && text.contains("psad-coordinator restore")
        }
        let notADatabase = dir.url.appendingPathComponent("text.sqlite").path
        try Data(repeating: 0x41, count: 4096).write(to: URL(fileURLWithPath: notADatabase))
        #expect { try JobStore.openChecked(path: notADatabase) } throws: { "\($0)".contains("is damaged") }
    }
}

/// Time as the coordinator measures it: wall-clock jumps change nothing it times.
@Suite struct CoordinatorClockTests {
    final class Ticks: @unchecked Sendable { var seconds = 100.0 }

    @Test func theClockAdvancesWithTheMonotonicClockAlone() {
        let ticks = Ticks()
        let clock = CoordinatorClock(wall: 1_000_000, monotonic: { ticks.seconds })
        #expect(clock.now() == 1_000_000)
        ticks.seconds += 2.5
        #expect(clock.now() == 1_000_002.5)
        // The real one is monotonic and counts real time.
        let a = monotonicSeconds()
        Thread.sleep(forTimeInterval: 0.02)
        #expect(monotonicSeconds() - a >= 0.02)
    }

    /// Deadlines written by a run whose clock was an hour ahead (the wall
    /// clock went back while the coordinator was down): on start each lease
    /// gets exactly its grace and no retry waits past the longest backoff.
    @Test func aRestartSetsEveryDeadlineAfreshFromItsOwnClock() throws {
        let dir = try TemporaryDirectory()
        let store = try JobStore(path: dir.url.appendingPathComponent("state.sqlite").path)
        try store.submit(JobStoreTests.diagnostic("d", jobs: 2), file: "{}")
        let ahead = 3600.0
        let leased = try #require(try store.dispatch(worker: "w", memoryMiB: 0, now: ahead, leaseSeconds: 10))
        let failing = try #require(try store.dispatch(worker: "w", memoryMiB: 0, now: ahead, leaseSeconds: 10))
        #expect(try store.fail(token: failing.token, error: "x", permanent: false, now: ahead, backoff: Backoff(base: 30, cap: 30, jitter: 0)) == .accepted)
        try store.resetDeadlines(now: 0, grace: 20, longestBackoff: 45)
        // The retry: ready within the longest backoff, not an hour later.
        #expect(try store.promoteRetries(now: 44.9) == 0)
        #expect(try store.promoteRetries(now: 45.1) == 1)
        // A dead worker's lease expires 20 s into the new run, not an hour later.
        #expect(try store.expireLeases(now: 19.9).isEmpty)
        #expect(try store.expireLeases(now: 20.1) == [leased.key])
    }
}
