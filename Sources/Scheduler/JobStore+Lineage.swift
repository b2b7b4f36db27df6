import Foundation
import GRDB
import Shared

/// A job as export reads it: what it ran, what it read, what it wrote.
public struct JobRecord: Equatable, Sendable {
    public var key: JobKey
    public var kind: StageKind
    public var category: String
    public var state: JobState
    /// The stage's parameters as canonical JSON.
    public var parameters: String
    /// Input role -> the job that gave it.
    public var inputs: [String: JobKey]
    /// Output name -> artifact hash (empty until done).
    public var outputs: [String: String]
}

/// One evaluate job of a sweep and the setting it scores.
public struct SweepEvaluation: Equatable, Sendable {
    public var job: JobKey
    public var category: String
    /// Canonical JSON: field -> value.
    public var setting: String
}

extension JobStore {
    /// A sweep's evaluations of one category, in the order they were planned.
    public func evaluations(sweep name: String, category: String) throws -> [SweepEvaluation] {
        try read { db in
            let id = try sweepID(db, name)
            return try Row.fetchAll(db, sql: """
                SELECT e.job, e.category, e.setting FROM evaluation e JOIN job ON job.key = e.job
                WHERE e.sweep_id = ? AND e.category = ? ORDER BY job.seq
                """, arguments: [id, category]).map { row in
                let key: String = try row.value("job", of: "an evaluation of sweep \(name)")
                guard let job = JobKey(hex: key) else { throw StoreError.corrupt("evaluation of sweep \(name): '\(key)' is not a job key") }
                return SweepEvaluation(job: job, category: try row.value("category", of: "evaluation \(key)"),
                                       setting: try row.value("setting", of: "evaluation \(key)"))
            }
        }
    }

    /// The job, its inputs and its outputs.
    public func record(_ key: JobKey) throws -> JobRecord {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT kind, category, state, parameters FROM job WHERE key = ?", arguments: [key.hex]) else {
                throw StoreError.unknownJob(key.hex)
            }
            let what = "job \(key.hex)"
            var inputs: [String: JobKey] = [:]
            for edge in try Row.fetchAll(db, sql: "SELECT role, parent FROM edge WHERE child = ?", arguments: [key.hex]) {
                let parent: String = try edge.value("parent", of: "\(what)'s input")
                guard let parentKey = JobKey(hex: parent) else { throw StoreError.corrupt("\(what)'s input '\(parent)' is not a job key") }
                inputs[try edge.value("role", of: "\(what)'s input")] = parentKey
            }
            var outputs: [String: String] = [:]
            for output in try Row.fetchAll(db, sql: Self.outputsOfKeySQL, arguments: [key.hex]) {
                outputs[try output.value("name", of: "output of \(what)")] = try output.value("hash", of: "output of \(what)")
            }
            return JobRecord(key: key, kind: try row.value("kind", of: what), category: try row.value("category", of: what),
                             state: try row.value("state", of: what), parameters: try row.value("parameters", of: what),
                             inputs: inputs, outputs: outputs)
        }
    }
}
