import Foundation
import GRDB
import Shared

/// Verification of results (a sweep's `verify` share): a sampled job's
/// first accepted run is held, not counted; the job waits in `verifying`
/// for another worker to run it again, and only when the two agree is it
/// done and its readers ready. Workers of one machine kind must agree byte
/// for byte on every output (and every metric); across kinds, where the
/// stage declares a tolerance on its metrics (``StageKind/metricTolerance``),
/// the metrics must agree within it, and a stage without one is re-run only
/// on a worker of the first run's kind. Runs that disagree quarantine the
/// job, both workers named, with everything downstream blocked until
/// ``JobStore/resolve(_:keep:now:)`` keeps one run or runs the job again.
extension JobStore {
    /// One run of a job kept for comparison.
    public struct CheckRun: Codable, Equatable, Sendable {
        public var token: Int64
        public var worker: String
        public var machine: String
        /// Output name -> artifact hash.
        public var outputs: [String: String]
        public var metrics: [String: Double]
    }

    /// What ``resolve(_:keep:now:)`` does with a quarantined job.
    public enum Resolution: Equatable, Sendable {
        /// Keep the run of this attempt: the job is done with its outputs.
        case keep(token: Int64)
        /// Drop both runs: the job runs (and is verified) again.
        case rerun
    }

    public enum ResolveError: Error, CustomStringConvertible, Equatable {
        case notQuarantined(String, state: String)
        case noSuchRun(String, token: Int64, runs: [Int64])

        public var description: String {
            switch self {
            case .notQuarantined(let key, let state): "job \(key) is \(state), not quarantined: nothing to resolve"
            case .noSuchRun(let key, let token, let runs):
                "attempt \(token) is not one of job \(key)'s compared runs (\(runs.map(String.init).joined(separator: ", ")))"
            }
        }
    }

    /// The job's runs kept for comparison, oldest first.
    public func checkRuns(_ key: JobKey) throws -> [CheckRun] {
        try read { db in try Self.checkRuns(db, key: key.hex) }
    }

    static func checkRuns(_ db: Database, key: String) throws -> [CheckRun] {
        let decoder = JSONDecoder.nonConforming
        return try Row.fetchAll(db, cached: "SELECT token, worker, machine, outputs, metrics FROM check_run WHERE job = ? ORDER BY token",
                                arguments: [key]).map { row in
            let what = "verification run of job \(key)"
            let outputs: String = try row.value("outputs", of: what), metrics: String = try row.value("metrics", of: what)
            do {
                return CheckRun(token: try row.value("token", of: what), worker: try row.value("worker", of: what),
                                machine: try row.value("machine", of: what),
                                outputs: try decoder.decode([String: String].self, from: Data(outputs.utf8)),
                                metrics: try decoder.decode([String: Double].self, from: Data(metrics.utf8)))
            } catch {
                throw StoreError.corrupt("\(what): \(error)")
            }
        }
    }

    /// Where two runs differ, in words; nil when they agree.
    static func disagreement(_ a: CheckRun, _ b: CheckRun, kind: StageKind) -> String? {
        if a.machine == b.machine {
            var problems: [String] = []
            let outputs = Set(a.outputs.keys).union(b.outputs.keys).sorted().filter { a.outputs[$0] != b.outputs[$0] }
            if !outputs.isEmpty {
                problems.append("outputs differ: " + outputs.prefix(5).map { name in
                    "\(name) (\(a.outputs[name].map { String($0.prefix(12)) } ?? "none") vs \(b.outputs[name].map { String($0.prefix(12)) } ?? "none"))"
                }.joined(separator: ", ") + (outputs.count > 5 ? " and \(outputs.count - 5) more" : ""))
            }
            if let metrics = metricDifferences(a.metrics, b.metrics, tolerance: 0) { problems.append(metrics) }
            return problems.isEmpty ? nil : problems.joined(separator: "; ")
        }
        guard let tolerance = kind.metricTolerance else {
            return "runs on machine kinds \(a.machine) and \(b.machine), and \(kind.rawValue) declares no tolerance to compare them by"
        }
        return metricDifferences(a.metrics, b.metrics, tolerance: tolerance)
    }

    static func metricDifferences(_ a: [String: Double], _ b: [String: Double], tolerance: Double) -> String? {
        let differing = Set(a.keys).union(b.keys).sorted().filter { name in
            guard let x = a[name], let y = b[name] else { return true }
            return x.isNaN != y.isNaN || !x.isNaN && !(abs(x - y) <= tolerance)
        }
        guard !differing.isEmpty else { return nil }
        let described = differing.prefix(5).map { "\($0) \(a[$0].map { "\($0)" } ?? "none") vs \(b[$0].map { "\($0)" } ?? "none")" }
        return "metrics differ\(tolerance > 0 ? " by more than \(tolerance)" : ""): " + described.joined(separator: ", ")
            + (differing.count > 5 ? " and \(differing.count - 5) more" : "")
    }

    /// A run of a sampled job, accepted (its lease ended here): the first is
    /// held and the job waits for another worker; the second is compared
    /// with it: agreeing, the job is done with the first run's outputs;
    /// disagreeing, it is quarantined and its descendants blocked (the
    /// reason, naming both workers, is returned).
    static func recordCheckRun(_ db: Database, job: JobRef, kind: StageKind, token: Int64, machine: String,
                               outputs: [String: String], metrics: [String: Double], now: Double) throws -> String? {
        let key = job.key
        guard let worker = try String.fetchOne(db, cached: "SELECT worker FROM attempt WHERE token = ?", arguments: [token]) else {
            throw StoreError.corrupt("attempt \(token) of job \(key) is not in the attempt table")
        }
        let run = CheckRun(token: token, worker: worker, machine: machine, outputs: outputs, metrics: metrics)
        try db.run("INSERT INTO check_run (token, job, worker, machine, outputs, metrics) VALUES (?, ?, ?, ?, ?, ?)",
                   arguments: [token, key, worker, machine, CanonicalJSON.object(outputs.mapValues { .string($0) }),
                               String(decoding: try JSONEncoder.sortedKeys.encode(metrics), as: UTF8.self)])
        let runs = try checkRuns(db, key: key)
        guard let first = runs.first, first.token != token else {
            // The first run: held; the attempts start again for the second (a failure of it retries it, not the job).
            try db.run("UPDATE job SET state = \(JobState.verifying.sql), verify = 2, attempts = 0, error = NULL WHERE key = ?", arguments: [key])
            return nil
        }
        try db.run("UPDATE job SET verify = 3 WHERE key = ?", arguments: [key])
        if let problem = disagreement(first, run, kind: kind) {
            let error = "verification failed: worker \(first.worker) (attempt \(first.token), \(first.machine)) and worker \(run.worker) "
                + "(attempt \(run.token), \(run.machine)) disagree: \(problem). Resolve with `psad-coordinator resolve \(key.prefix(12)) "
                + "--keep ATTEMPT` or `--rerun`"
            try db.run("UPDATE job SET state = \(JobState.quarantined.sql), error = ?, finished_at = ? WHERE key = ?", arguments: [error, now, key])
            try blockDescendants(db, of: key)
            return error
        }
        try finish(db, job: job, outputs: first.outputs, metrics: first.metrics, now: now)
        return nil
    }

    /// Resolves a quarantined job: keeps one of its runs (the job is done
    /// with it) or drops both (the job runs and is verified again); either
    /// way the jobs it blocked wait on it again. Returns how many were released.
    @discardableResult
    public func resolve(_ key: JobKey, keep resolution: Resolution, now: Double = Date().timeIntervalSince1970) throws -> Int {
        try write { db in
            guard let job = try JobRef.find(db, key: key.hex),
                  let state = try String.fetchOne(db, sql: "SELECT state FROM job WHERE id = ?", arguments: [job.id]) else {
                throw StoreError.unknownJob(key.hex)
            }
            guard state == JobState.quarantined.rawValue else { throw ResolveError.notQuarantined(key.hex, state: state) }
            switch resolution {
            case .keep(let token):
                let runs = try Self.checkRuns(db, key: key.hex)
                guard let run = runs.first(where: { $0.token == token }) else {
                    throw ResolveError.noSuchRun(key.hex, token: token, runs: runs.map(\.token))
                }
                try Self.finish(db, job: job, outputs: run.outputs, metrics: run.metrics, now: now)
                try db.run("UPDATE job SET verify = 4 WHERE key = ?", arguments: [key.hex])
            case .rerun:
                let waiting = try Int.fetchOne(db, sql: """
                    SELECT COUNT(*) FROM edge JOIN job ON job.key = edge.parent WHERE edge.child = ? AND job.state != \(JobState.done.sql)
                    """, arguments: [key.hex]) ?? 0
                try Self.requeue(db, key: key.hex, state: waiting == 0 ? .ready : .pending, waiting: waiting)
            }
            return try Self.releaseDescendants(db, of: key.hex)
        }
    }

    /// Jobs downstream of `key` that are blocked but whose inputs no longer
    /// block them wait again (pending or ready), parents before children.
    static func releaseDescendants(_ db: Database, of key: String) throws -> Int {
        let below = try String.fetchAll(db, sql: """
            WITH RECURSIVE below(key) AS (
                SELECT child FROM edge WHERE parent = ?
                UNION SELECT edge.child FROM edge JOIN below ON edge.parent = below.key)
            SELECT job.key FROM job JOIN below ON below.key = job.key WHERE job.state = \(JobState.blocked.sql) ORDER BY job.seq
            """, arguments: [key])
        var released = 0
        for child in below {
            let inputs = try JobState.fetchAll(db, sql: "SELECT job.state FROM edge JOIN job ON job.key = edge.parent WHERE edge.child = ?",
                                               arguments: [child])
            let (state, waiting) = queueState(inputs: inputs)
            guard state != .blocked else { continue }
            try requeue(db, key: child, state: state, waiting: waiting)
            released += 1
        }
        return released
    }

    /// The oldest job waiting for verification that this worker may run:
    /// not one it ran already, and of its machine kind unless the stage
    /// compares metrics across kinds.
    static func verifyingJob(_ db: Database, worker: String, machine: String, kinds: [String], memoryMiB: Int) throws -> Row? {
        let tolerant = StageKind.allCases.filter { $0.metricTolerance != nil }.map(\.sql).joined(separator: ",")
        return try Row.fetchOne(db, cached: """
            SELECT id, key, kind, category, parameters FROM job INDEXED BY job_queue
            WHERE state = \(JobState.verifying.sql) AND kind IN (\(marks(kinds.count))) AND memory_mib <= ?
            AND NOT EXISTS (SELECT 1 FROM check_run c WHERE c.job = job.key
                            AND (c.worker = ? OR (c.machine != ? AND job.kind NOT IN (\(tolerant)))))
            ORDER BY priority DESC, level DESC, seq LIMIT 1
            """, arguments: StatementArguments(kinds.map { $0 as any DatabaseValueConvertible } + [memoryMiB, worker, machine]))
    }
}

extension StageKind {
    /// The kind as an SQL string literal.
    var sql: String { "'\(rawValue)'" }
}

extension JSONEncoder {
    /// Keys sorted (the same value always encodes to the same text); NaN and infinities as strings.
    static var sortedKeys: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return encoder
    }
}

extension JSONDecoder {
    /// Reads what ``JSONEncoder/sortedKeys`` writes.
    static var nonConforming: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return decoder
    }
}
