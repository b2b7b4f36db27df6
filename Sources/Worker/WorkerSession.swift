import Foundation
import Logging
import Shared
import Synchronization

/// A pipe the compute thread writes a byte to when a stage finishes, so
/// that the socket thread, waiting in zmq_poll, wakes at once.
final class Wakeup: @unchecked Sendable {
    let readEnd: Int32, writeEnd: Int32

    init() throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw ZeroMQError("pipe", code: errno) }
        (readEnd, writeEnd) = (fds[0], fds[1])
        _ = fcntl(readEnd, F_SETFL, fcntl(readEnd, F_GETFL) | O_NONBLOCK)
    }

    deinit { close(readEnd); close(writeEnd) }

    func signal() {
        var byte: UInt8 = 1
        _ = write(writeEnd, &byte, 1)
    }

    /// Empties the pipe (after waking).
    func drain() {
        var buffer = [UInt8](repeating: 0, count: 64)
        while read(readEnd, &buffer, buffer.count) > 0 {}
    }
}

/// A worker's side of the protocol (DESIGN.md, Worker): hello, then ask
/// for a job, fetch its missing inputs into the local cache, run it on a
/// compute thread while this thread heartbeats, upload its outputs in
/// chunks, report done or fail. A lost lease (cancel) abandons the job; a
/// coordinator that forgot this worker (restart) gets hello again with the
/// attempt in flight, which it re-adopts. SIGTERM drains: the job in hand
/// is finished and reported, then bye.
final class WorkerSession {
    struct Settings {
        var endpoint: String
        var worker: String
        var resources: WorkerResources
        var kinds: [StageKind] = [.diagnostic] + StageJobs.kinds
        var replyTimeoutSeconds = 5.0
        /// CURVE: the coordinator's public key and this worker's key pair.
        var curve: (serverKey: String, keys: CurveKeyPair)?
        /// Fault injection for the reliability tests: every output is sent
        /// with one byte flipped (its announced hash left as it was).
        var corruptOutputs = false
    }

    final class Running: @unchecked Sendable {
        let job: WireMessage.Job
        let cancelled = Atomic<Bool>(false)
        let outcome = Mutex<StageOutcome?>(nil)
        let started = Date()
        init(_ job: WireMessage.Job) { self.job = job }
    }

    struct Lost: Error {}

    let settings: Settings
    let socket: ZeroMQSocket
    let cache: ArtifactStore
    let logger: Logger
    let draining: TerminationFlag
    var heartbeatSeconds = 2.0
    var lastHeartbeat = Date.distantPast
    var running: Running?
    /// A job (or no-job) answer is on its way: the last done asked for it.
    var offerRequested = false
    let wakeup: Wakeup
    static let inlineLimit = 64 << 10

    init(settings: Settings, cache: ArtifactStore, logger: Logger, draining: TerminationFlag) throws {
        self.settings = settings
        self.cache = cache
        self.logger = logger
        self.draining = draining
        wakeup = try Wakeup()
        socket = try ZeroMQSocket(try ZeroMQContext(), .dealer)
        try socket.setIdentity("\(settings.worker)-\(UUID().uuidString.prefix(8))")
        if let curve = settings.curve { try socket.makeCurveClient(serverKey: curve.serverKey, keys: curve.keys) }
        try socket.connect(settings.endpoint)
    }

    func send(_ message: WireMessage) throws { try socket.send(message.encode()) }

    func hello() throws {
        try send(.hello(.init(worker: settings.worker, resources: settings.resources, kinds: settings.kinds,
                              inFlight: running.map { [$0.job.token] } ?? [])))
    }

    /// Runs until drained (SIGTERM) — then says bye and returns.
    func run() throws {
        try hello()
        _ = try waitFor { if case .welcome = $0 { true } else { false } } resend: { try self.hello() }
        while true {
            if draining.requested && running == nil {
                try send(.bye)
                logger.info("drained; bye")
                return
            }
            if let current = running {
                try pump(timeoutMilliseconds: 50)
                if running === current, let outcome = current.outcome.withLock({ $0 }) { try report(current, outcome) }
                continue
            }
            if !offerRequested { try send(.ready) }
            offerRequested = false
            let reply = try waitFor { m in
                switch m { case .job, .noJob: true; default: false }
            } resend: { try self.send(.ready) }
            switch reply {
            case .job(let job): try start(job)
            case .noJob(let n):
                let until = Date().addingTimeInterval(n.retryAfterSeconds)
                while Date() < until && !draining.requested { try pump(timeoutMilliseconds: 20) }
            default: break
            }
        }
    }

    /// Handles what arrives unasked (heartbeats, cancel, hello-again) and
    /// sends a heartbeat when one is due; returns a message it did not handle.
    @discardableResult
    func pump(timeoutMilliseconds: Int) throws -> WireMessage? {
        if Date().timeIntervalSince(lastHeartbeat) >= heartbeatSeconds {
            lastHeartbeat = Date()
            try send(.heartbeat(.init(tokens: running.map { [$0.job.token] } ?? [])))
        }
        guard let parts = try socket.receive(timeoutMilliseconds: timeoutMilliseconds, wakeOn: wakeup.readEnd) else {
            wakeup.drain()
            return nil
        }
        let message: WireMessage
        do { message = try WireMessage.decode(parts) } catch {
            logger.warning("dropped a bad message from the coordinator", metadata: ["problem": "\(error)"])
            return nil
        }
        switch message {
        case .heartbeat:
            return nil
        case .cancel(let c):
            if let r = running, c.tokens.contains(r.job.token) { abandon(r, because: "lease lost") }
            return nil
        case .helloAgain:
            logger.info("the coordinator asks for hello again (it restarted)")
            try hello()
            return nil
        case .welcome(let w):
            heartbeatSeconds = w.heartbeatSeconds
            if let r = running, w.dropped.contains(r.job.token) { abandon(r, because: "not re-adopted") }
            return message
        case .job(let job) where running != nil:
            // A second job for a repeated ready: refuse it so it is retried at once elsewhere.
            try send(.fail(.init(token: job.token, error: "worker \(settings.worker) was busy", permanent: false)))
            return nil
        default:
            return message
        }
    }

    /// Waits for the message `wanted` accepts, handling the rest; resends the
    /// request when no answer comes within the reply timeout.
    func waitFor(_ wanted: (WireMessage) -> Bool, resend: () throws -> Void) throws -> WireMessage {
        var deadline = Date().addingTimeInterval(settings.replyTimeoutSeconds)
        while true {
            if let m = try pump(timeoutMilliseconds: 50) {
                if wanted(m) { return m }
                // Welcomed again after a coordinator restart: the request it never answered goes again now.
                if case .welcome = m {
                    try resend()
                    deadline = Date().addingTimeInterval(settings.replyTimeoutSeconds)
                }
            }
            if Date() > deadline {
                logger.warning("no answer from the coordinator; asking again")
                try resend()
                deadline = Date().addingTimeInterval(settings.replyTimeoutSeconds)
            }
        }
    }

    func abandon(_ r: Running, because reason: String) {
        r.cancelled.store(true, ordering: .relaxed)
        if running === r { running = nil }
        logger.warning("abandoned a job", metadata: ["token": "\(r.job.token)", "reason": "\(reason)"])
    }

    func start(_ job: WireMessage.Job) throws {
        let r = Running(job)
        running = r
        logger.info("job", metadata: ["kind": "\(job.kind.rawValue)", "key": "\(job.key.short)", "token": "\(job.token)"])
        var inputs: [String: [String: Data]] = [:]
        do {
            for (role, outputs) in job.inputs {
                for (name, hash) in outputs {
                    if !cache.contains(hash) { try fetch(hash) }
                    inputs[role, default: [:]][name] = try cache.read(hash)
                }
            }
        } catch is Lost {
            return
        } catch {
            r.outcome.withLock { $0 = StageOutcome(error: "input artifacts: \(error)") }
            return
        }
        let fetched = inputs, wakeup = wakeup
        Thread.detachNewThread { [r] in
            let outcome: StageOutcome
            switch r.job.kind {
            case .diagnostic: outcome = DiagnosticStage.run(r.job, inputs: fetched) { r.cancelled.load(ordering: .relaxed) }
            default: outcome = StageJobs.run(r.job, inputs: fetched)
            }
            r.outcome.withLock { $0 = outcome }
            wakeup.signal()
        }
    }

    /// Copies a blob from the coordinator into the cache, chunk by chunk.
    func fetch(_ hash: String) throws {
        var offset = 0, total = -1
        while total < 0 || offset < total {
            let request = WireMessage.fetch(.init(hash: hash, offset: offset, length: WireMessage.maximumPayloadBytes))
            try send(request)
            let reply = try waitFor({ m in
                if case .chunk(let c, _) = m { c.hash == hash && c.offset == offset } else { false }
            }, resend: { try self.send(request) })
            guard running != nil else { throw Lost() }
            guard case .chunk(let c, let data) = reply else { continue }
            if let problem = c.error { throw ArtifactError.missing("\(hash) (\(problem))") }
            total = c.total
            offset = try cache.receive(hash, offset: offset, total: total, chunk: data, upload: "fetch")
            if total == 0 { break }
        }
    }

    /// Uploads the outputs and reports the outcome; the job ends here.
    func report(_ r: Running, _ outcome: StageOutcome) throws {
        defer { if running === r { running = nil } }
        let token = r.job.token
        if let error = outcome.error {
            let request = WireMessage.fail(.init(token: token, error: error, permanent: outcome.permanent))
            try send(request)
            _ = try waitFor({ if case .ack(let a) = $0 { a.token == token } else { false } }, resend: { try self.send(request) })
            return
        }
        var outputs: [String: WireMessage.Output] = [:]
        var payload = Data()
        for (name, data) in outcome.outputs.sorted(by: { $0.key < $1.key }) {
            let hash = ArtifactStore.hash(data)
            // Small outputs ride in the done message itself.
            if data.count <= Self.inlineLimit && payload.count + data.count <= WireMessage.maximumPayloadBytes / 2 {
                outputs[name] = .init(hash: hash, size: data.count, inline: true)
                payload.append(data)
                continue
            }
            var offset = 0
            repeat {
                var piece = data.subdata(in: offset..<min(data.count, offset + WireMessage.maximumPayloadBytes))
                if settings.corruptOutputs, !piece.isEmpty { piece[piece.startIndex] ^= 0xff }
                let request = WireMessage.put(.init(token: token, hash: hash, offset: offset, total: data.count), piece)
                try send(request)
                let reply = try waitFor({ m in if case .putAck(let a) = m { a.hash == hash } else { false } },
                                        resend: { try self.send(request) })
                guard running === r else { return }
                guard case .putAck(let ack) = reply else { return }
                if let problem = ack.error {
                    logger.error("upload refused", metadata: ["output": "\(name)", "problem": "\(problem)"])
                    return
                }
                offset = ack.received
            } while offset < data.count
            outputs[name] = .init(hash: hash, size: data.count)
        }
        if settings.corruptOutputs, !payload.isEmpty { payload[payload.startIndex] ^= 0xff }
        // Asking for the next job in the same message saves a round trip.
        let next = !draining.requested
        let request = WireMessage.done(.init(token: token, outputs: outputs, metrics: outcome.metrics,
                                             seconds: Date().timeIntervalSince(r.started), next: next), payload)
        try send(request)
        let ack = try waitFor({ if case .ack(let a) = $0 { a.token == token } else { false } }, resend: { try self.send(request) })
        if case .ack(let a) = ack, !a.accepted { logger.warning("result refused (stale attempt)", metadata: ["token": "\(token)"]) }
        offerRequested = next
    }
}
