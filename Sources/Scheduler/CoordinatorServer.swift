import Foundation
import GRDB
import Logging
import Shared

/// The coordinator's serving loop: a ZeroMQ ROUTER that answers workers
/// from the job store (DESIGN.md, Coordinator). One thread; every state
/// change is a store transaction, so killing the process loses nothing
/// committed, and a restart resumes from the store: leases get a grace
/// period for their workers to say hello again and be re-adopted.
public final class CoordinatorServer {
    public struct Settings: Sendable {
        /// e.g. tcp://0.0.0.0:5555, tcp://127.0.0.1:* (any free port), ipc:///tmp/psad.sock
        public var endpoint = "tcp://127.0.0.1:5555"
        /// A lease not renewed for this long expires (several missed heartbeats).
        public var leaseSeconds = 10.0
        public var heartbeatSeconds = 2.0
        /// How long an idle worker waits before asking again.
        public var retryAfterSeconds = 0.2
        public var backoff = Backoff()
        /// CURVE: the coordinator's key pair and the workers' public keys it admits.
        public var curve: (keys: CurveKeyPair, allowed: Set<String>)?
        /// Leases, backoff and attempt times: wall time at start plus monotonic time since.
        public var clock = CoordinatorClock()
        /// Seconds between WAL checkpoints, run beside the serving thread (``BackgroundCheckpoints``).
        public var checkpointSeconds = 0.05
        public init() {}
    }

    struct Peer {
        let worker: String
        let memoryMiB: Int
        let kinds: Set<StageKind>
        /// Its machine kind ("" where it did not say).
        let machine: String
    }

    public let store: JobStore
    public let artifacts: ArtifactStore
    let lock: StateLock
    let settings: Settings
    let socket: ZeroMQSocket
    let authenticator: ZapAuthenticator?
    let logger: Logger
    var peers: [Data: Peer] = [:]
    /// Answers held until the batch that made them is committed (nil: not in a batch).
    var outbox: [[Data]]?
    /// The most messages handled in one transaction.
    static let batchLimit = 64
    static let heartbeatType = Data("heartbeat".utf8)
    static let resultsType = Data("results".utf8)
    let stateDirectory: URL
    /// Since when the state volume has refused writes (full), when that was last logged, and when a write last failed.
    var volumeFull: (since: Double, logged: Double, last: Double)?

    /// Opens (or creates) the state directory: `state.sqlite` and `blobs/`.
    public init(stateDirectory: URL, settings: Settings, logger: Logger) throws {
        self.stateDirectory = stateDirectory
        lock = try StateLock(directory: stateDirectory)
        SQLiteSettings.disableMemoryStatistics()
        store = try JobStore.openChecked(path: stateDirectory.appendingPathComponent("state.sqlite").path)
        artifacts = try ArtifactStore(root: stateDirectory)
        self.settings = settings
        self.logger = logger
        let context = try ZeroMQContext()
        if let curve = settings.curve {
            authenticator = try ZapAuthenticator(context: context, allowed: curve.allowed, logger: logger)
        } else {
            authenticator = nil
        }
        socket = try ZeroMQSocket(context, .router)
        if let curve = settings.curve { try socket.makeCurveServer(secretKey: curve.keys.secretKey) }
        try socket.bind(settings.endpoint)
    }

    deinit { authenticator?.stop() }

    /// The bound endpoint (with the port chosen when the endpoint said `*`).
    public var endpoint: String { socket.lastEndpoint }

    /// Serves until `stop()` returns true (checked at least every 100 ms).
    public func run(until stop: () -> Bool) throws {
        var now = settings.clock.now()
        try store.resetDeadlines(now: now, grace: 2 * settings.leaseSeconds, longestBackoff: settings.backoff.longest)
        // Checkpoints beside the serving thread (the writer connection checkpoints by itself only past a fallback).
        try store.setWriterCheckpointPages(BackgroundCheckpoints.writerFallbackPages)
        do {
            try store.reserveWAL(pages: BackgroundCheckpoints.writerFallbackPages)
        } catch {
            logger.warning("the WAL file was not extended ahead; commits extend it as they go", metadata: ["error": "\(error)"])
        }
        let checkpoints = try BackgroundCheckpoints(path: store.path, interval: settings.checkpointSeconds, logger: logger)
        defer {
            checkpoints.stop()
            try? store.setWriterCheckpointPages(JobStore.defaultCheckpointPages)
        }
        var lastTick = 0.0
        while !stop() {
            if let first = try socket.receive(timeoutMilliseconds: 100) {
                var waiting = [first]
                while waiting.count < Self.batchLimit, let more = try socket.receive(timeoutMilliseconds: 0) { waiting.append(more) }
                handle(waiting)
            }
            now = settings.clock.now()
            if now - lastTick >= 0.25 {
                lastTick = now
                do {
                    // While the volume refuses writes some heartbeats are not recorded (others may be: a write
                    // that fits the WAL file's old space succeeds): no lease expires until a whole lease has
                    // passed without a refused write, and then every lease gets its grace again first.
                    if let full = volumeFull {
                        if now - full.last >= settings.leaseSeconds { try recoverFromFullVolume(now: now) }
                    }
                    if volumeFull == nil {
                        for key in try store.expireLeases(now: now, backoff: settings.backoff) {
                            logger.warning("lease expired", metadata: ["job": "\(key.short)"])
                        }
                    }
                    try store.promoteRetries(now: now)
                } catch {
                    if !noteWriteFailure(error, doing: "expiring leases", now: now) {
                        logger.error("could not expire leases or requeue retries", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
    }

    /// Group commit: the messages waiting together are handled in one
    /// transaction and answered once it is committed; so are the results
    /// of one results message. One other message alone commits its calls
    /// as they go (no savepoints to pay for).
    func handle(_ waiting: [[Data]]) {
        guard waiting.count > 1 || waiting.first.map({ $0.count > 2 && $0[2] == Self.resultsType }) == true else {
            waiting.forEach(handle)
            return
        }
        outbox = []
        do {
            try store.batch { waiting.forEach(handle) }
        } catch {
            if noteWriteFailure(error, doing: "\(waiting.count) messages", now: settings.clock.now()) {
                // Heartbeats are still answered (see respond): nothing else was recorded.
                outbox = outbox?.filter { $0.count > 2 && $0[2] == Self.heartbeatType }
            } else {
                logger.error("could not commit \(waiting.count) messages' changes; their answers are not sent (the workers ask again)",
                             metadata: ["error": "\(error)"])
                outbox = []
            }
        }
        let answers = outbox ?? []
        outbox = nil
        for parts in answers {
            do { try socket.send(parts, dontWait: true) } catch {
                logger.error("could not answer a worker", metadata: ["peer": "\(parts[0].hexPrefix)", "error": "\(error)"])
            }
        }
    }

    func handle(_ parts: [Data]) {
        guard parts.count >= 2 else {
            logger.warning("dropped a message without a routing id")
            return
        }
        let identity = parts[0]
        let message: WireMessage
        do { message = try WireMessage.decode(Array(parts.dropFirst())) } catch {
            refuse(identity, Array(parts.dropFirst()), problem: "\(error)")
            return
        }
        do { try respond(to: identity, message) } catch {
            if !noteWriteFailure(error, doing: message.typeName, now: settings.clock.now()) {
                logger.error("could not answer \(message.typeName)", metadata: ["peer": "\(identity.hexPrefix)", "error": "\(error)"])
            }
        }
    }

    /// A message that did not decode: the sender is told why, and the
    /// attempt it names (if this peer holds it) fails with that reason, so
    /// that neither side waits for the other forever.
    func refuse(_ identity: Data, _ parts: [Data], problem: String) {
        let (type, token) = WireError.describe(parts)
        var failed = false
        if let token, let peer = peers[identity], (try? store.leaseHolder(token: token)) == peer.worker {
            let error = "the coordinator refused the worker's \(type) message: \(problem)"
            failed = (try? store.fail(token: token, error: error, permanent: false, now: settings.clock.now(),
                                      backoff: settings.backoff)) == .accepted
        }
        logger.warning("refused a bad message", metadata: ["peer": "\(identity.hexPrefix)", "type": "\(type.prefix(32))",
                                                           "token": "\(token.map(String.init) ?? "-")", "attempt failed": "\(failed)",
                                                           "problem": "\(problem)"])
        try? send(identity, .refused(.init(type: String(type.prefix(32)), token: token, problem: String(problem.prefix(WireMessage.maximumErrorBytes)))))
    }

    func send(_ identity: Data, _ message: WireMessage) throws {
        let parts = [identity] + message.encode()
        if outbox != nil { outbox!.append(parts) } else { try socket.send(parts, dontWait: true) }
    }

    func respond(to identity: Data, _ message: WireMessage) throws {
        let now = settings.clock.now()
        if case .hello(let hello) = message {
            let resources = String(decoding: try JSONEncoder().encode(hello.resources), as: UTF8.self)
            try store.registerWorker(hello.worker, resources: resources, now: now)
            peers[identity] = Peer(worker: hello.worker, memoryMiB: Int(hello.resources.memoryBytes >> 20), kinds: Set(hello.kinds),
                                   machine: hello.resources.machine ?? "")
            let (adopted, dropped) = try store.readopt(worker: hello.worker, tokens: hello.inFlight, now: now, leaseSeconds: settings.leaseSeconds)
            logger.info("worker registered", metadata: ["worker": "\(hello.worker)", "adopted": "\(adopted)", "dropped": "\(dropped)"])
            try send(identity, .welcome(.init(adopted: adopted, dropped: dropped, heartbeatSeconds: settings.heartbeatSeconds,
                                              leaseSeconds: settings.leaseSeconds)))
            return
        }
        guard let peer = peers[identity] else {
            if case .bye = message { return }
            try send(identity, .helloAgain)
            return
        }
        switch message {
        case .ready(let jobs):
            let offered = try store.dispatch(worker: peer.worker, machine: peer.machine, memoryMiB: peer.memoryMiB, kinds: peer.kinds, now: now,
                                             leaseSeconds: settings.leaseSeconds, count: jobs)
            try offer(offered, asked: jobs, to: identity)
        case .heartbeat(let h):
            var alive: [Int64] = [], dropped: [Int64] = []
            for token in h.tokens {
                let progress = h.progress?.first { $0.token == token }
                let renewed: Bool
                do {
                    renewed = try store.heartbeat(token: token, now: now, leaseSeconds: settings.leaseSeconds, progress: progress)
                } catch where Self.isFullVolume(error) {
                    // Not recorded, but answered: no lease expires while the volume is full (and each gets its
                    // grace after), so the worker must not take the silence for a partition and drop its work.
                    noteWriteFailure(error, doing: "heartbeat", now: now)
                    renewed = try store.leaseHolder(token: token) == peer.worker
                }
                if renewed { alive.append(token) } else { dropped.append(token) }
            }
            try send(identity, .heartbeat(.init(tokens: alive)))
            if !dropped.isEmpty { try send(identity, .cancel(.init(tokens: dropped))) }
        case .fetch(let f):
            do {
                let length = min(max(0, f.length), WireMessage.maximumPayloadBytes)
                let (data, total): (Data, Int)
                if ArtifactStore.isValid(f.hash), let small = try store.smallBlob(f.hash) {
                    let start = min(max(0, f.offset), small.count)
                    (data, total) = (small.subdata(in: start..<min(small.count, start + length)), small.count)
                } else {
                    (data, total) = try artifacts.slice(f.hash, offset: f.offset, length: length)
                }
                try send(identity, .chunk(.init(hash: f.hash, offset: f.offset, total: total), data))
            } catch {
                logger.error("cannot serve an artifact", metadata: ["hash": "\(f.hash.prefix(64))", "error": "\(error)"])
                try send(identity, .chunk(.init(hash: String(f.hash.prefix(64)), offset: f.offset, total: 0, error: "\(error)"), Data()))
            }
        case .put(let p, let payload):
            guard try store.leasedJob(token: p.token) != nil else {
                try send(identity, .putAck(.init(hash: String(p.hash.prefix(64)), received: 0, error: "attempt \(p.token) holds no lease")))
                return
            }
            do {
                let received: Int
                if p.offset == 0, payload.count == p.total, p.total <= JobStore.inlineBlobLimit, ArtifactStore.isValid(p.hash) {
                    // Whole and small: verified in memory, kept in the database.
                    let actual = ArtifactStore.hash(payload)
                    guard actual == p.hash else { throw ArtifactError.mismatch(hash: p.hash, actual: actual) }
                    try store.storeSmallBlob(hash: p.hash, data: payload)
                    received = p.total
                } else {
                    received = try artifacts.receive(p.hash, offset: p.offset, total: p.total, chunk: payload, upload: "\(p.token)")
                }
                try send(identity, .putAck(.init(hash: p.hash, received: received)))
            } catch where Self.isFullVolume(error) || (VolumeSpace.freeBytes(at: stateDirectory.path) ?? .max) < 1 << 20 {
                // (Some writes fail without saying why: a volume with under 1 MiB left is taken as the cause.)
                // Not answered (as every write while the state volume is full): the worker sends the chunk
                // again until there is room, within its job-request bound; its heartbeats keep the lease.
                noteWriteFailure(error, doing: "upload", now: now, full: true)
            } catch {
                logger.warning("upload refused", metadata: ["hash": "\(p.hash.prefix(64))", "error": "\(error)"])
                try send(identity, .putAck(.init(hash: String(p.hash.prefix(64)), received: 0, error: "\(error)")))
            }
        case .done(let d, let payload):
            try record(d, payload, from: peer, identity: identity, now: now)
        case .results(let results):
            // In the batch that handle(_:) opened for it: one transaction for all of them.
            for r in results { try record(r.done, r.payload, from: peer, identity: identity, now: now) }
        case .fail(let f):
            let report = try store.fail(token: f.token, error: f.error, permanent: f.permanent, now: now, backoff: settings.backoff)
            logger.info("attempt failed", metadata: ["token": "\(f.token)", "permanent": "\(f.permanent)", "error": "\(f.error)"])
            try send(identity, .ack(.init(token: f.token, accepted: report == .accepted)))
        case .release(let r):
            let holder = try store.leaseHolder(token: r.token)
            let report = holder == peer.worker ? try store.handBack(token: r.token, now: now) : .stale
            logger.info("a job handed back", metadata: ["token": "\(r.token)", "worker": "\(peer.worker)", "reason": "\(r.reason.prefix(200))",
                                                      "accepted": "\(report == .accepted)"])
            try send(identity, .ack(.init(token: r.token, accepted: report == .accepted,
                                          error: report == .accepted ? nil : "the attempt holds no lease of this worker")))
        case .bye:
            peers[identity] = nil
            logger.info("worker left", metadata: ["worker": "\(peer.worker)"])
        case .hello, .welcome, .noJob, .job, .helloAgain, .chunk, .putAck, .ack, .cancel, .refused:
            logger.warning("dropped a \(message.typeName) message: workers do not send it", metadata: ["worker": "\(peer.worker)"])
        }
    }
}

extension CoordinatorServer {
    /// Records one result (a done, or one of a results message's). A
    /// refused result fails its attempt with the reason, which the worker
    /// is told; the answer still covers its request for next jobs.
    func record(_ d: WireMessage.Done, _ payload: Data, from peer: Peer, identity: Data, now: Double) throws {
        var d = d
        let wanted = min(max(0, d.next), WireMessage.maximumResults)
        func refuse(_ problem: String) throws {
            // Only the attempt's own worker can fail it this way (not a peer quoting another's token).
            let report = try store.leaseHolder(token: d.token) == peer.worker
                ? try store.fail(token: d.token, error: "result refused: \(problem)", permanent: false, now: now, backoff: settings.backoff)
                : .stale
            logger.warning("refused a result", metadata: ["token": "\(d.token)", "worker": "\(peer.worker)", "problem": "\(problem)",
                                                         "report": "\(report)"])
            try send(identity, .ack(.init(token: d.token, accepted: false, error: problem)))
            if wanted > 0 { try send(identity, .noJob(.init(retryAfterSeconds: 0))) }
        }
        if let manifest = d.manifest {
            do {
                let data = try store.smallBlob(manifest.hash) ?? artifacts.read(manifest.hash)
                guard d.outputs.isEmpty, data.count == manifest.size else {
                    throw WireError(problem: "outputs manifest of \(data.count) bytes, announced \(manifest.size), beside \(d.outputs.count) outputs in the header")
                }
                d.outputs = try Manifest.outputs(data)
                d.manifest = nil
            } catch {
                try refuse("outputs manifest \(manifest.hash.prefix(64)): \(error)")
                return
            }
        }
        guard let inline = d.inlineOutputs(payload) else {
            try refuse("the inline outputs do not add up to the \(payload.count)-byte payload")
            return
        }
        var small: [(hash: String, data: Data)] = []
        for part in inline {
            guard part.data.count <= JobStore.inlineBlobLimit, ArtifactStore.isValid(part.output.hash),
                  ArtifactStore.hash(part.data) == part.output.hash else {
                try refuse("inline output '\(part.name)' does not match its hash")
                return
            }
            small.append((part.output.hash, part.data))
        }
        if let missing = try d.outputs.first(where: { output in
            if output.value.inline { return false }
            let stored = try store.smallBlobSize(output.value.hash) ?? artifacts.size(output.value.hash)
            return stored != output.value.size
        }) {
            try refuse("output '\(missing.key)' was not uploaded whole")
            return
        }
        let next = wanted > 0 ? (peer.worker, peer.memoryMiB, peer.kinds, settings.leaseSeconds, wanted) : nil
        let (report, jobs, quarantined) = try store.complete(token: d.token, outputs: d.outputs.mapValues(\.hash),
                                                             metrics: d.metrics, smallBlobs: small, cost: (d.seconds, d.peakMiB),
                                                             machine: peer.machine, now: now, next: next)
        if report == .stale { logger.warning("refused a stale result", metadata: ["token": "\(d.token)", "worker": "\(peer.worker)"]) }
        if let quarantined { logger.error("quarantined a job: \(quarantined)", metadata: ["token": "\(d.token)"]) }
        // The jobs before the ack: a worker sends the results it held once its last one is answered, and
        // asks for more in that message only when the jobs it asked for have come.
        if wanted > 0 { try offer(jobs, asked: wanted, to: identity) }
        try send(identity, .ack(.init(token: d.token, accepted: report == .accepted,
                                      error: report == .stale ? "the attempt no longer holds its lease" : nil)))
    }

    /// The jobs leased for a worker's request of `asked`, each in its own
    /// message; fewer than asked are followed by a no-job ("nothing more now").
    func offer(_ jobs: [Assignment], asked: Int, to identity: Data) throws {
        for a in jobs { try send(identity, try offer(a)) }
        if jobs.count < asked { try send(identity, .noJob(.init(retryAfterSeconds: settings.retryAfterSeconds))) }
    }

    /// A job for the worker. Inputs too many for a header
    /// (a stage that reads one artifact per image of a real-size category)
    /// go as a manifest blob, written here and fetched by the worker.
    func offer(_ a: Assignment) throws -> WireMessage {
        var job = WireMessage.Job(token: a.token, key: a.key, kind: a.kind, category: a.category, parameters: a.parameters, inputs: a.inputs)
        // JSON escaping at most sixfold: a job whose strings are this small needs no exact count (one encoding fewer per job).
        let strings = a.parameters.utf8.count + a.category.utf8.count
            + a.inputs.reduce(0) { $0 + $1.key.utf8.count + $1.value.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count + 8 } + 8 }
        if 6 * strings + 1024 > WireMessage.manifestThresholdBytes, Manifest.headerBytes(job) > WireMessage.manifestThresholdBytes {
            job.inputsManifest = try artifacts.put(Manifest.encode(inputs: a.inputs))
            job.inputs = [:]
        }
        return .job(job)
    }
}

extension Data {
    var hexPrefix: String { prefix(8).map { String(format: "%02x", $0) }.joined() }
}

extension CoordinatorServer {
    static func isFullVolume(_ error: Error) -> Bool {
        if let error = error as? DatabaseError { return error.resultCode == .SQLITE_FULL }
        return VolumeSpace.isNoSpace(error)
    }

    /// A write the full state volume refused: logged with the volume and
    /// its free space (at once, then every 10 s while it lasts). Nothing
    /// committed is lost (SQLite rolls the transaction back) and nothing
    /// is answered, so the workers send their messages again; no attempt
    /// is failed for it. False when the error is something else.
    @discardableResult
    func noteWriteFailure(_ error: Error, doing what: String, now: Double, full: Bool = false) -> Bool {
        guard full || Self.isFullVolume(error) else { return false }
        if volumeFull == nil || now - volumeFull!.logged >= 10 {
            let free = VolumeSpace.describeFree(at: stateDirectory.path)
            logger.error("the state volume is full: \(stateDirectory.path) (\(free)); changes are not recorded and workers are not answered until there is room (they send again; nothing committed is lost)",
                         metadata: ["while": "\(what)", "full for s": "\(Int(now - (volumeFull?.since ?? now)))", "error": "\(error)"])
            volumeFull = (volumeFull?.since ?? now, now, now)
        } else {
            volumeFull!.last = now
        }
        return true
    }

    /// A whole lease without a refused write after the volume was full:
    /// every lease gets its grace again (heartbeats in between were lost).
    func recoverFromFullVolume(now: Double) throws {
        guard let full = volumeFull else { return }
        try store.extendLeases(now: now, grace: 2 * settings.leaseSeconds)
        volumeFull = nil
        logger.warning("the state volume has room again; leases given their grace", metadata: ["full for s": "\(Int(now - full.since))"])
    }
}
