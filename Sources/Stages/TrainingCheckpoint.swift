import AtomicWrite
import Foundation
import Shared
import Tensor

/// A training stage's state at the end of an epoch: everything a run resumed
/// from it needs to go on as the uninterrupted run would.
public struct TrainingState: Equatable {
    /// Epochs done.
    public var epoch: Int
    /// The random generator's state (``SeededGenerator/state``).
    public var rng: [UInt64]
    /// The optimiser's parameters' values, in its order.
    public var parameters: [Tensor]
    /// Other tensors the run changes as it trains (a UNet's batch norms' running statistics), by name.
    public var buffers: [String: Tensor]
    public var optimizer: AdamW.State
    /// Each epoch's mean loss so far (`epoch` of them).
    public var epochLosses: [Float]
    /// The run's counters (labelled views drawn, fresh views), by name.
    public var counters: [String: Int]

    public init(epoch: Int, rng: [UInt64], parameters: [Tensor], buffers: [String: Tensor] = [:], optimizer: AdamW.State,
                epochLosses: [Float], counters: [String: Int] = [:]) {
        self.epoch = epoch; self.rng = rng; self.parameters = parameters; self.buffers = buffers
        self.optimizer = optimizer; self.epochLosses = epochLosses; self.counters = counters
    }
}

/// Where a training stage (segment-train, unet-train) keeps its last
/// epoch's state, so that a job stopped part of the way — its worker killed,
/// its lease lost, its node preempted — goes on from that epoch when it runs
/// again instead of from the first. At LOCO's size a segment-train job is
/// 20-45 minutes of one core.
///
/// One file per job, written whole or not at all (``AtomicFile``): a SHA-256
/// line of the rest, then a safetensors file (the tensors and the optimiser's
/// moments; the epoch, the generator, the losses and the owner in its
/// metadata). A file that is damaged, of another job (`owner`, the job's
/// key), or of another shape is not taken: the run starts from the first
/// epoch, and `log` says why (and says where a run resumed).
public struct TrainingCheckpoints: Sendable {
    public let file: URL
    /// What the state belongs to (the job's key).
    public let owner: String
    /// A save at the end of the first epoch at least this many seconds after
    /// the last save (or the start); 0: every epoch.
    public let interval: Double
    /// Told where a run resumed, and what was found and not taken.
    public let log: @Sendable (String) -> Void

    static let format = "psad-training-state 1"

    public init(file: URL, owner: String, interval: Double = 60, log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.file = file; self.owner = owner; self.interval = interval; self.log = log
    }

    /// The saved state, if there is one this run can take.
    public func load() -> TrainingState? {
        guard FileManager.default.fileExists(atPath: file.path) else { return nil }
        do {
            return try decode(try Data(contentsOf: file))
        } catch {
            log("\(file.path): not resumed from, starting from the first epoch: \(error)")
            return nil
        }
    }

    public func save(_ state: TrainingState) throws {
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try AtomicFile.write(encode(state), to: file)
    }

    /// Forgets the state (the stage finished), and what is left of this
    /// job's writes that never finished (a worker killed while it saved
    /// leaves its `AtomicFile` partial behind).
    public func remove() {
        try? FileManager.default.removeItem(at: file)
        AtomicFile.removePartials(of: file)
    }

    /// Removes the states in `folder` last written more than `days` ago
    /// (jobs finished elsewhere, or cancelled), and what is left of writes
    /// that never finished; `log` names each.
    public static func prune(_ folder: URL, olderThanDays days: Double, log: (String) -> Void) {
        let keys: [URLResourceKey] = [.contentModificationDateKey, .isRegularFileKey]
        guard let names = try? FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: keys) else { return }
        let cutoff = Date().addingTimeInterval(-days * 86_400)
        for file in names {
            guard let values = try? file.resourceValues(forKeys: Set(keys)), values.isRegularFile == true,
                  let written = values.contentModificationDate, written < cutoff else { continue }
            if (try? FileManager.default.removeItem(at: file)) != nil {
                log("removed \(file.path), a training state last written \(Int(-written.timeIntervalSinceNow / 86_400)) days ago")
            }
        }
    }

    func encode(_ s: TrainingState) -> Data {
        var tensors: [String: Tensor] = ["losses": Tensor(shape: [s.epochLosses.count], storage: s.epochLosses)]
        for (i, p) in s.parameters.enumerated() { tensors["parameter.\(i)"] = p }
        for (name, t) in s.buffers { tensors["buffer.\(name)"] = t }
        for (i, m) in s.optimizer.m.enumerated() { tensors["adam.m.\(i)"] = Tensor(shape: [m.count], storage: m) }
        for (i, v) in s.optimizer.v.enumerated() { tensors["adam.v.\(i)"] = Tensor(shape: [v.count], storage: v) }
        let counters = s.counters.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        let body = SafetensorsFile.encode(tensors, metadata: [
            "format": Self.format, "owner": owner, "epoch": "\(s.epoch)", "parameters": "\(s.parameters.count)",
            "rng": s.rng.map { String($0, radix: 16) }.joined(separator: ","), "adam_step": "\(s.optimizer.step)", "counters": counters,
        ])
        return Data((ArtifactStore.hash(body) + "\n").utf8) + body
    }

    struct Unusable: Error, CustomStringConvertible { let description: String }

    func decode(_ data: Data) throws -> TrainingState {
        guard data.count > 65, data[data.startIndex + 64] == UInt8(ascii: "\n") else { throw Unusable(description: "too short for a checkpoint") }
        let body = data.dropFirst(65)
        guard String(decoding: data.prefix(64), as: UTF8.self) == ArtifactStore.hash(Data(body)) else {
            throw Unusable(description: "its SHA-256 does not match its contents (damaged)")
        }
        let file = try SafetensorsFile(data: Data(body), source: self.file.lastPathComponent)
        let meta = file.metadata
        guard meta["format"] == Self.format else { throw Unusable(description: "format \(meta["format"] ?? "none"), not \(Self.format)") }
        guard meta["owner"] == owner else { throw Unusable(description: "it belongs to \(meta["owner"] ?? "nobody"), not \(owner)") }
        guard let epoch = meta["epoch"].flatMap({ Int($0) }), epoch >= 1, let count = meta["parameters"].flatMap({ Int($0) }),
              let step = meta["adam_step"].flatMap({ Int($0) }),
              let rng = meta["rng"].flatMap({ text in Optional(text.split(separator: ",").compactMap { UInt64($0, radix: 16) }) }),
              rng.count == 4
        else { throw Unusable(description: "its metadata is incomplete") }
        var counters: [String: Int] = [:]
        for pair in (meta["counters"] ?? "").split(separator: ",") {
            let parts = pair.split(separator: "=")
            guard parts.count == 2, let value = Int(parts[1]) else { throw Unusable(description: "bad counter '\(pair)'") }
            counters[String(parts[0])] = value
        }
        let losses = try file.tensor("losses").storage
        guard losses.count == epoch else { throw Unusable(description: "\(losses.count) epoch losses for \(epoch) epochs") }
        let names = Set(file.entries.map(\.name))
        var buffers: [String: Tensor] = [:]
        for name in names where name.hasPrefix("buffer.") { buffers[String(name.dropFirst(7))] = try file.tensor(name) }
        return TrainingState(
            epoch: epoch, rng: rng, parameters: try (0..<count).map { try file.tensor("parameter.\($0)") }, buffers: buffers,
            optimizer: AdamW.State(step: step, m: try (0..<count).map { try file.tensor("adam.m.\($0)").storage },
                                   v: try (0..<count).map { try file.tensor("adam.v.\($0)").storage }),
            epochLosses: losses, counters: counters)
    }

    /// Restores `state`'s parameters and moments into `optimizer`'s
    /// parameters; false (nothing changed) where their number or a shape differs.
    static func restore(_ state: TrainingState, into optimizer: AdamW) -> Bool {
        guard state.parameters.map(\.shape) == optimizer.parameters.map(\.value.shape) else { return false }
        let before = optimizer.parameters.map(\.value)
        for (p, t) in zip(optimizer.parameters, state.parameters) { p.value = t }
        if optimizer.restore(state.optimizer) { return true }
        for (p, t) in zip(optimizer.parameters, before) { p.value = t }
        return false
    }
}

/// When a training loop saves: at the end of an epoch once `interval` has
/// passed since the last save, and at the end of the epoch a stop was asked
/// at (the caller saves before it rethrows).
struct CheckpointClock {
    let checkpoints: TrainingCheckpoints?
    private var last = Date()

    init(_ checkpoints: TrainingCheckpoints?) { self.checkpoints = checkpoints }

    /// At the end of an epoch: saves `state()` when due, then calls
    /// `report` (the stage's progress); where that throws (the job is no
    /// longer wanted) saves first if it has not, then rethrows.
    mutating func epochEnded(_ state: () -> TrainingState, report: () throws -> Void) rethrows {
        let saved = save(state)
        do {
            try report()
        } catch {
            if !saved { save(force: true, state) }
            throw error
        }
    }

    /// Saves `state()` when due (or `force`); a failed save is said and
    /// training goes on. Whether it saved.
    @discardableResult
    mutating func save(force: Bool = false, _ state: () -> TrainingState) -> Bool {
        guard let checkpoints, force || Date().timeIntervalSince(last) >= checkpoints.interval else { return false }
        last = Date()
        do {
            try checkpoints.save(state())
            return true
        } catch {
            checkpoints.log("\(checkpoints.file.path): could not save the training state (training goes on): \(error)")
            return false
        }
    }
}
