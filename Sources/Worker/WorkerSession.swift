import Foundation
import Logging
import Shared
import Stages
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

/// The threads stages run on: each runs a stage, then waits for the next
/// one. A thread per job cost a clone and a fresh stack's first page
/// faults each time, a fifth of a worker's time on no-op jobs. A stage
/// still running when the next job starts (an abandoned job's stage has not
/// reached its next cancellation check) keeps its thread, and the next job
/// gets another, so the job never waits on it.
final class StageThreads: @unchecked Sendable {
    /// A stage: runs, and returns what tells its outcome, which is called
    /// once its thread is idle again (so a job that starts on hearing the
    /// outcome finds that thread free).
    typealias Work = @Sendable () -> @Sendable () -> Void

    private final class Slot: @unchecked Sendable {
        let start = DispatchSemaphore(value: 0)
        /// Written before `start` is signalled, read after it is waited on.
        var work: Work?
    }
    private let idle = Mutex<[Slot]>([])
    private let count = Atomic<Int>(0)

    /// Threads started so far (idle or busy).
    var started: Int { count.load(ordering: .relaxed) }

    /// Runs `work` on an idle stage thread, or on a new one when none is idle.
    func run(_ work: @escaping Work) {
        if let slot = idle.withLock({ $0.popLast() }) {
            slot.work = work
            slot.start.signal()
            return
        }
        let slot = Slot()
        slot.work = work
        count.add(1, ordering: .relaxed)
        Thread.detachNewThread { [self] in
            while true {
                let tell = slot.work?()
                slot.work = nil
                idle.withLock { $0.append(slot) }
                tell?()
                slot.start.wait()
            }
        }
    }
}

/// A worker's side of the protocol (DESIGN.md, Worker): hello, then ask
/// for a job, fetch its missing inputs into the local cache, run it on a
/// compute thread while this thread heartbeats, upload its outputs in
/// chunks, report done or fail. A lost lease (cancel) abandons the job; a
/// coordinator that forgot this worker (restart) gets hello again with the
/// attempts in flight, which it re-adopts. SIGTERM drains: the job in hand
/// is finished and reported, jobs held ahead are handed back, then bye. A
/// second signal, or `drainSeconds` passing, hands the job in hand back
/// unfinished (its stage stops at its next step; the attempt not counted).
///
/// While its jobs are short (under `prefetchBelowSeconds`), the worker
/// holds up to `prefetch` leased jobs ahead of the one running, so that
/// the coordinator's round trip overlaps the work; a job held ahead of a
/// stage that turns out long is handed back (the attempt not counted) for
/// another worker to take. A job offered beyond that window (a repeated
/// ready) is handed back too, never failed: it costs no attempt.
final class WorkerSession {
    struct Settings {
        var endpoint: String
        var worker: String
        var resources: WorkerResources
        var kinds: [StageKind] = [.diagnostic] + StageJobs.kinds
        /// A request unanswered for this long is sent again (logged).
        var replyTimeoutSeconds = 5.0
        /// A request about a job in hand (fetch, put, done, fail) unanswered
        /// for this long is given up: the job is dropped (its lease expires
        /// at the coordinator and it is retried elsewhere).
        var jobRequestTimeoutSeconds = 600.0
        /// Hello or ready unanswered for this long ends the worker with an
        /// error (no coordinator at the endpoint).
        var coordinatorTimeoutSeconds = 3600.0
        /// CURVE: the coordinator's public key and this worker's key pair.
        var curve: (serverKey: String, keys: CurveKeyPair)?
        /// Fault injection for the reliability tests: every output is sent
        /// with one byte flipped (its announced hash left as it was).
        var corruptOutputs = false
        /// Fault injection: a lying worker. Every output gets a byte more and
        /// every metric 0.01 more before hashing: wrong results, correctly
        /// hashed (what only verification can catch).
        var wrongResults = false
        /// Fault injection: results always list their outputs in the done
        /// header, however many (the protocol before manifests), so that a
        /// large result is refused.
        var headerOnlyResults = false
        /// Draining (SIGTERM), a stage still running this long after the
        /// signal is handed back to the coordinator (another worker takes it
        /// at once) and the worker leaves; nil: the stage is finished first.
        var drainSeconds: Double?
        /// Leased jobs held ahead of the running one while jobs are short.
        var prefetch = 8
        /// Jobs are short while the last one took less than this; a job
        /// held ahead of a stage running longer is handed back.
        var prefetchBelowSeconds = 1.0
        /// A full cache volume that clearing the cache did not free: the
        /// worker asks for no job for this long, doubling while it lasts, up to the longest.
        var fullCachePauseSeconds = (first: 2.0, longest: 60.0)
        /// Where training stages keep their state between epochs, one file
        /// per job key (resumed from when the job runs again); nil: none kept.
        var checkpoints: URL?
        /// Seconds between a training stage's saves (0: every epoch).
        var checkpointSeconds = 60.0
    }

    final class Running: @unchecked Sendable {
        let job: WireMessage.Job
        let cancelled = Atomic<Bool>(false)
        let outcome = Mutex<StageOutcome?>(nil)
        let progress = Mutex<WireMessage.Progress?>(nil)
        let started = monotonicSeconds()
        init(_ job: WireMessage.Job) { self.job = job }
    }

    /// The job in hand was lost while waiting (lease lost, not re-adopted).
    struct Lost: Error {}

    /// The cache's volume refused an input's bytes for lack of space.
    struct CacheFull: Error {
        let hash: String, needed: Int, underlying: any Error
    }

    /// The coordinator could not take a request, and said why.
    struct Refused: Error, CustomStringConvertible {
        let type: String, problem: String
        var description: String { "the coordinator refused the \(type) message: \(problem)" }
    }

    /// No answer came within the request's bound.
    struct NoAnswer: Error, CustomStringConvertible {
        let type: String, endpoint: String, seconds: Double, asked: Int
        var description: String {
            "no answer from the coordinator at \(endpoint) to \(type) in \(Int(seconds)) s (sent \(asked) times)"
        }
    }

    let settings: Settings
    let socket: ZeroMQSocket
    let cache: ArtifactStore
    let logger: Logger
    let draining: TerminationFlag
    /// The log has said once that the worker drains and what a second signal does.
    var toldDraining = false
    var heartbeatSeconds = 2.0
    var lastHeartbeat = -Double.infinity
    /// The coordinator's lease, from its welcome (nil: not said).
    var leaseSeconds: Double?
    /// When the coordinator was last heard from (any message).
    var lastHeard = monotonicSeconds()
    var running: Running?
    /// Leased jobs not started yet, in the order offered.
    var ahead: [WireMessage.Job] = []
    /// A ready (or a result asking for next jobs) is unanswered: since when,
    /// last sent when, how many times, and how many jobs are still to come.
    var asking: (since: Double, sent: Double, times: Int, jobs: Int)?
    /// After no-job: the next ready not before this.
    var askAgainAt = -Double.infinity
    /// The last finished job's wall time (nil before the first).
    var lastJobSeconds: Double?
    /// The current pause after a full cache volume (nil: none in a row).
    var fullCachePause: Double?
    /// Results sent and not answered yet: their attempts are still this worker's.
    var unacknowledged: [Int64: Unacknowledged] = [:]
    struct Unacknowledged {
        let result: WireMessage.Finished
        let since: Double
        var sent: Double
        var times: Int
        /// The result alone, as a done message (to send it again).
        var frames: [Data] {
            var done = result.done
            done.next = 0
            return WireMessage.done(done, result.payload).encode()
        }
    }
    /// Results finished while earlier ones were unanswered, not sent yet:
    /// they go together, in one results message, once those are answered
    /// (at most a round trip later), so that a worker of short jobs sends
    /// one message and costs one transaction per round trip, not per job.
    var held: [WireMessage.Finished] = []
    let wakeup: Wakeup
    let stageThreads = StageThreads()
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

    /// Every attempt this worker holds: the running one, those ahead, and those whose results are unanswered.
    var heldTokens: [Int64] {
        (running.map { [$0.job.token] } ?? []) + ahead.map(\.token) + unacknowledged.keys.sorted() + held.map(\.done.token)
    }

    var helloMessage: WireMessage {
        .hello(.init(worker: settings.worker, resources: settings.resources, kinds: settings.kinds, inFlight: heldTokens))
    }

    /// Jobs are short: the last took less than the prefetch bound, and the one running (if any) has not passed it.
    var jobsAreShort: Bool {
        guard let last = lastJobSeconds, last < settings.prefetchBelowSeconds else { return false }
        return running.map { monotonicSeconds() - $0.started < settings.prefetchBelowSeconds } ?? true
    }

    /// How many leased jobs this worker wants to hold beyond the running one.
    var window: Int { jobsAreShort ? max(0, settings.prefetch) : 0 }

    /// Nothing heard from the coordinator for longer than two leases: its
    /// leases on this worker's jobs are gone, whether it is cut off (they
    /// expired after one) or was restarted (they get two to be re-adopted).
    var cutOff: Bool { leaseSeconds.map { monotonicSeconds() - lastHeard > 2 * $0 } ?? false }

    /// How many jobs to ask for now (none while some are asked for
    /// already): enough to hold the running one and the window ahead. Not
    /// while cut off: a job offered across a link that only carries
    /// requests would never arrive and its attempt would expire; the
    /// heartbeats' answers say when the link is back.
    var wantedJobs: Int {
        guard !draining.requested, asking == nil, !cutOff else { return 0 }
        return max(0, window + 1 - ahead.count - (running == nil ? 0 : 1))
    }

    /// Runs until drained (SIGTERM) — then says bye and returns.
    func run() throws {
        _ = try request(helloMessage) { if case .welcome = $0 { true } else { false } }
        while true {
            if draining.requested {
                try handBackAhead(because: "worker \(settings.worker) is draining")
                if running == nil, unacknowledged.isEmpty, held.isEmpty {
                    try send(.bye)
                    logger.info("drained; bye")
                    return
                }
            }
            if running == nil, !ahead.isEmpty {
                try start(ahead.removeFirst())
                continue
            }
            if let current = running {
                if let outcome = current.outcome.withLock({ $0 }) {
                    try report(current, outcome)
                    continue
                }
                if let waited = draining.secondsSinceRequest {
                    if draining.count >= 2 {
                        try handBack(current, after: waited, reason: "a second signal")
                        continue
                    }
                    if let limit = settings.drainSeconds, waited >= limit {
                        try handBack(current, after: waited, reason: "its --drain-seconds")
                        continue
                    }
                    if !toldDraining {
                        toldDraining = true
                        logger.notice("draining: the running stage finishes first (a second SIGTERM or SIGINT hands it back now)",
                                      metadata: ["kind": "\(current.job.kind.rawValue)", "token": "\(current.job.token)"])
                    }
                }
                if !ahead.isEmpty, !jobsAreShort {
                    try handBackAhead(because: "the stage running on worker \(settings.worker) passed \(settings.prefetchBelowSeconds) s")
                }
            }
            try ask()
            try resendOverdueResults()
            try pump(timeoutMilliseconds: running == nil ? 20 : 50)
        }
    }

    /// Sends ready when a job is wanted, and again (logged) when an answer
    /// is overdue; with nothing in hand, a coordinator silent past its bound
    /// ends the worker (``NoAnswer``).
    func ask() throws {
        let now = monotonicSeconds()
        if wantedJobs > 0, now >= askAgainAt {
            let jobs = wantedJobs
            try send(.ready(jobs))
            asking = (now, now, 1, jobs)
            return
        }
        guard let a = asking, now - a.sent > settings.replyTimeoutSeconds, !cutOff else { return }
        let waited = now - a.since
        if running == nil, ahead.isEmpty, waited >= settings.coordinatorTimeoutSeconds {
            throw NoAnswer(type: "ready", endpoint: settings.endpoint, seconds: waited, asked: a.times)
        }
        logger.warning("no answer from the coordinator; asking again",
                       metadata: ["request": "ready", "sent": "\(a.times + 1)", "waited s": "\(Int(waited))",
                                  "gives up after s": "\(Int(settings.coordinatorTimeoutSeconds))"])
        try send(.ready(a.jobs))
        asking = (a.since, now, a.times + 1, a.jobs)
    }

    /// Handles what arrives unasked (heartbeats, cancel, hello-again, job
    /// offers) and sends a heartbeat when one is due; returns a message it
    /// did not handle.
    @discardableResult
    func pump(timeoutMilliseconds: Int) throws -> WireMessage? {
        if monotonicSeconds() - lastHeartbeat >= heartbeatSeconds {
            lastHeartbeat = monotonicSeconds()
            let progress = running.flatMap { r in r.progress.withLock { $0 } }.map { [$0] }
            try send(.heartbeat(.init(tokens: heldTokens, progress: progress)))
        }
        guard let parts = try socket.receive(timeoutMilliseconds: timeoutMilliseconds, wakeOn: wakeup.readEnd) else {
            wakeup.drain()
            abandonIfCutOff()
            return nil
        }
        lastHeard = monotonicSeconds()
        let message: WireMessage
        do { message = try WireMessage.decode(parts) } catch {
            // Another protocol version never becomes readable: waiting would be forever.
            if parts.first?.count == 1, parts.first?.first != ProtocolVersion.current { throw error }
            logger.warning("dropped a bad message from the coordinator", metadata: ["problem": "\(error)"])
            return nil
        }
        switch message {
        case .heartbeat:
            return nil
        case .cancel(let c):
            if let r = running, c.tokens.contains(r.job.token) { abandon(r, because: "lease lost") }
            drop(c.tokens, because: "lease lost")
            return nil
        case .helloAgain:
            logger.info("the coordinator asks for hello again (it restarted)")
            try send(helloMessage)
            return nil
        case .welcome(let w):
            heartbeatSeconds = w.heartbeatSeconds
            leaseSeconds = w.leaseSeconds
            if let r = running, w.dropped.contains(r.job.token) { abandon(r, because: "not re-adopted") }
            drop(w.dropped, because: "not re-adopted")
            // Results the forgetful coordinator never answered go again (those re-adopted), and those held.
            for r in held { unacknowledged[r.done.token] = Unacknowledged(result: r, since: monotonicSeconds(), sent: 0, times: 0) }
            held = []
            for token in unacknowledged.keys.sorted() {
                if w.dropped.contains(token) {
                    unacknowledged[token] = nil
                    logger.warning("dropped a finished job: not re-adopted", metadata: ["token": "\(token)"])
                } else {
                    try sendAgain(token)
                }
            }
            // A ready the forgetful coordinator never answered goes again.
            if let a = asking {
                try send(.ready(a.jobs))
                asking = (monotonicSeconds(), monotonicSeconds(), 1, a.jobs)
            }
            return message
        case .job(let job):
            if let a = asking { asking = a.jobs > 1 ? (a.since, a.sent, a.times, a.jobs - 1) : nil }
            if ahead.count + (running == nil ? 0 : 1) <= window {
                ahead.append(job)
            } else {
                // Offered beyond the window (a repeated ready): handed back, not failed, so it costs no attempt.
                try send(.release(.init(token: job.token, reason: "worker \(settings.worker) was busy")))
                logger.info("handed back a job offered beyond the window", metadata: ["token": "\(job.token)"])
            }
            return nil
        case .noJob(let n):
            asking = nil
            askAgainAt = monotonicSeconds() + n.retryAfterSeconds
            return nil
        case .ack(let a) where acknowledge(a):
            if unacknowledged.isEmpty { try sendHeld() }
            return nil
        case .refused(let r) where r.type == "done" && r.token.map { unacknowledged[$0] != nil } == true:
            // The coordinator could not read the result and failed its attempt: nothing more to send,
            // and its request for a next job went unread with it (a ready goes now).
            unacknowledged[r.token!] = nil
            asking = nil
            logger.error("dropped a job: \(Refused(type: r.type, problem: r.problem))", metadata: ["token": "\(r.token!)"])
            return nil
        case .refused(let r) where r.type == "results":
            // The coordinator could not read a results message (it names no attempt): each result not
            // answered goes again alone, and its request for next jobs went unread with it.
            logger.error("\(Refused(type: r.type, problem: r.problem)); sending its results one by one",
                         metadata: ["tokens": "\(unacknowledged.keys.sorted())"])
            for token in unacknowledged.keys.sorted() { try sendAgain(token) }
            asking = nil
            return nil
        default:
            return message
        }
    }

    /// Cut off (a partition, a coordinator gone): heard nothing for longer
    /// than two leases, though heartbeats went every few seconds. Every
    /// lease this worker held has expired at the coordinator by now (one
    /// lease when the coordinator is cut off, the two-lease grace of a
    /// restarted one) and its jobs go to other workers, so the work in hand stops: the running stage is
    /// cancelled, jobs held ahead and unanswered results are dropped. The
    /// worker goes on asking; once it is heard again it gets new jobs.
    func abandonIfCutOff() {
        guard let lease = leaseSeconds, cutOff, running != nil || !ahead.isEmpty || !unacknowledged.isEmpty || !held.isEmpty else { return }
        logger.warning("the coordinator has not been heard from for longer than two leases: the work in hand is abandoned (its leases have expired there)",
                       metadata: ["silent s": "\(String(format: "%.1f", monotonicSeconds() - lastHeard))", "lease s": "\(lease)",
                                  "tokens": "\(heldTokens)"])
        if let r = running { abandon(r, because: "cut off from the coordinator past the lease") }
        ahead = []
        unacknowledged = [:]
        held = []
    }

    /// Forgets jobs held ahead whose leases the coordinator no longer has.
    func drop(_ tokens: [Int64], because reason: String) {
        let lost = ahead.filter { tokens.contains($0.token) }
        guard !lost.isEmpty else { return }
        ahead.removeAll { tokens.contains($0.token) }
        logger.warning("dropped jobs held ahead", metadata: ["tokens": "\(lost.map(\.token))", "reason": "\(reason)"])
    }

    /// Hands back every job held ahead (the attempts not counted) and waits
    /// a reply timeout at most for the acknowledgements; one not
    /// acknowledged is left to its lease's expiry.
    func handBackAhead(because reason: String) throws {
        guard !ahead.isEmpty else { return }
        var waiting = Set(ahead.map(\.token))
        for job in ahead { try send(.release(.init(token: job.token, reason: reason))) }
        ahead = []
        let deadline = monotonicSeconds() + settings.replyTimeoutSeconds
        while !waiting.isEmpty, monotonicSeconds() < deadline {
            if case .ack(let a) = try pump(timeoutMilliseconds: 50) { waiting.remove(a.token) }
        }
        logger.info("handed back jobs held ahead", metadata: ["reason": "\(reason)", "unacknowledged": "\(waiting.sorted())"])
    }

    /// Sends `message` and waits for the answer `wanted` accepts, handling
    /// the rest; sends it again (logged) when no answer comes within the reply
    /// timeout. Every wait is bounded: a refusal of this request throws
    /// ``Refused`` at once; silence throws ``NoAnswer`` after the job-request
    /// bound (a request about `job`) or the coordinator bound (hello, ready);
    /// losing `job` meanwhile throws ``Lost``.
    func request(_ message: WireMessage, about job: Running? = nil, sendFirst: Bool = true,
                 _ wanted: (WireMessage) -> Bool) throws -> WireMessage {
        if sendFirst { try send(message) }
        let started = monotonicSeconds(), type = message.typeName
        let bound = job == nil ? settings.coordinatorTimeoutSeconds : settings.jobRequestTimeoutSeconds
        var deadline = started + settings.replyTimeoutSeconds, asked = 1
        while true {
            if let job, running !== job { throw Lost() }
            if let m = try pump(timeoutMilliseconds: 50) {
                if wanted(m) { return m }
                if case .refused(let r) = m, r.type == type { throw Refused(type: type, problem: r.problem) }
                // Welcomed again after a coordinator restart: the request it never answered goes again now.
                if case .welcome = m {
                    try send(message)
                    deadline = monotonicSeconds() + settings.replyTimeoutSeconds
                }
            }
            if monotonicSeconds() > deadline {
                let waited = monotonicSeconds() - started
                if waited >= bound { throw NoAnswer(type: type, endpoint: settings.endpoint, seconds: waited, asked: asked) }
                asked += 1
                logger.warning("no answer from the coordinator; asking again",
                               metadata: ["request": "\(type)", "sent": "\(asked)", "waited s": "\(Int(waited))", "gives up after s": "\(Int(bound))"])
                try send(message)
                deadline = monotonicSeconds() + settings.replyTimeoutSeconds
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
            var listed = job.inputs
            if let manifest = job.inputsManifest {
                if !cache.contains(manifest) { try fetch(manifest, for: r) }
                listed = try Manifest.inputs(try cache.read(manifest))
            }
            for (role, outputs) in listed {
                for (name, hash) in outputs {
                    if !cache.contains(hash) { try fetch(hash, for: r) }
                    inputs[role, default: [:]][name] = try cache.read(hash)
                }
            }
        } catch is Lost {
            return
        } catch let full as CacheFull {
            try handBack(r, cacheFull: full)
            return
        } catch {
            r.outcome.withLock { $0 = StageOutcome(error: "input artifacts: \(error)") }
            return
        }
        fullCachePause = nil
        let fetched = inputs, wakeup = wakeup, logger = logger, checkpoints = checkpoints(for: r.job)
        stageThreads.run { [r] in
            // One job at a time per process: the process's high-water mark, reset here, is the job's.
            var recorder = StageRecorder()
            var outcome: StageOutcome
            let token = r.job.token
            let progress: StageJobs.ProgressSink = { done, total, unit in
                r.progress.withLock { $0 = WireMessage.Progress(token: token, done: done, total: total, unit: unit) }
            }
            switch r.job.kind {
            case .diagnostic: outcome = DiagnosticStage.run(r.job, inputs: fetched, progress: progress) { r.cancelled.load(ordering: .relaxed) }
            default:
                outcome = StageJobs.run(r.job, inputs: fetched, progress: progress, checkpoints: checkpoints) {
                    r.cancelled.load(ordering: .relaxed)
                }
            }
            recorder.lap(r.job.kind.rawValue, next: false)
            outcome.seconds = recorder.records.last?.seconds ?? 0
            outcome.peakMiB = recorder.peakIsPerStage ? recorder.records.last?.peakMebibytes : nil
            if r.cancelled.load(ordering: .relaxed) {
                // Nobody waits for this outcome: say that the abandoned job's stage has let its core go.
                logger.info("an abandoned job's stage stopped", metadata: [
                    "token": "\(token)", "kind": "\(r.job.kind.rawValue)", "seconds": "\(Int(outcome.seconds.rounded()))",
                    "outcome": "\(outcome.error ?? "finished")"])
            }
            let finished = outcome
            return {
                r.outcome.withLock { $0 = finished }
                wakeup.signal()
            }
        }
    }

    /// Where a training job keeps its state between epochs: a file named by
    /// its key, so any attempt at the job (by any worker that shares the
    /// folder) goes on from the last one's epoch.
    func checkpoints(for job: WireMessage.Job) -> TrainingCheckpoints? {
        guard let folder = settings.checkpoints, [.segmentTrain, .unetTrain].contains(job.kind) else { return nil }
        let logger = logger, key = job.key.short
        return TrainingCheckpoints(file: folder.appendingPathComponent("\(job.key.hex).state"), owner: job.key.hex,
                                   interval: settings.checkpointSeconds,
                                   log: { logger.notice("\($0)", metadata: ["key": "\(key)", "stage": "\(job.kind.rawValue)"]) })
    }

    /// Gives the running job back unfinished (draining, on a second signal
    /// or past `drainSeconds`): ready again at once, the attempt not counted.
    func handBack(_ r: Running, after waited: Double, reason why: String) throws {
        let token = r.job.token
        let reason = "worker \(settings.worker) drained \(Int(waited)) s after its signal (\(why)), before the stage finished"
        do {
            let reply = try request(.release(.init(token: token, reason: reason)), about: r) {
                if case .ack(let a) = $0 { a.token == token } else { false }
            }
            logger.warning("handed a job back", metadata: ["token": "\(token)", "kind": "\(r.job.kind.rawValue)",
                                                           "accepted": "\(reply.acceptedAck)"])
        } catch is Lost {
        } catch let error as NoAnswer {
            logger.error("could not hand a job back: \(error)", metadata: ["token": "\(token)"])
        } catch let error as Refused {
            logger.error("could not hand a job back: \(error)", metadata: ["token": "\(token)"])
        }
        abandon(r, because: "handed back while draining")
    }

    /// The cache's volume is full: the cache is cleared (every blob: it is
    /// only a cache, and this worker holds nothing else there), the job is
    /// handed back (ready again at once, the attempt not counted), and when
    /// clearing did not make room for the input that failed, the worker
    /// asks for nothing for a pause that doubles while the volume stays
    /// full. Each time is logged with the volume and its free space.
    func handBack(_ r: Running, cacheFull full: CacheFull) throws {
        let root = cache.root.path
        let before = VolumeSpace.describeFree(at: root)
        let cleared = (try? cache.clear()) ?? (blobs: 0, bytes: 0)
        let room = VolumeSpace.freeBytes(at: root).map { $0 >= UInt64(max(0, full.needed)) + (1 << 20) } ?? false
        let reason = "the cache volume of worker \(settings.worker) is full: \(root) (\(before))"
        do {
            _ = try request(.release(.init(token: r.job.token, reason: reason)), about: r) {
                if case .ack(let a) = $0 { a.token == r.job.token } else { false }
            }
        } catch is Lost {
        } catch let error as NoAnswer {
            logger.error("could not hand a job back: \(error)", metadata: ["token": "\(r.job.token)"])
        } catch let error as Refused {
            logger.error("could not hand a job back: \(error)", metadata: ["token": "\(r.job.token)"])
        }
        if running === r { running = nil }
        // The jobs held ahead would meet the same volume.
        try handBackAhead(because: reason)
        var metadata: Logger.Metadata = ["token": "\(r.job.token)", "input": "\(full.hash.prefix(12))", "needed MiB": "\(String(format: "%.1f", Double(full.needed) / 1_048_576))",
                                         "cleared files": "\(cleared.blobs)", "cleared MiB": "\(String(format: "%.1f", Double(cleared.bytes) / 1_048_576))",
                                         "now": "\(VolumeSpace.describeFree(at: root))", "error": "\(full.underlying)"]
        if room {
            fullCachePause = nil
            logger.error("\(reason): cleared the cache and handed the job back (no attempt counted); there is room again", metadata: metadata)
            return
        }
        let pause = fullCachePause.map { min(settings.fullCachePauseSeconds.longest, 2 * $0) } ?? settings.fullCachePauseSeconds.first
        fullCachePause = pause
        askAgainAt = monotonicSeconds() + pause
        metadata["asks again in s"] = "\(pause)"
        logger.error("\(reason): cleared the cache and handed the job back (no attempt counted); still no room, so no job is asked for until the pause ends (it doubles while the volume stays full)",
                     metadata: metadata)
    }

    /// Copies a blob from the coordinator into the cache, chunk by chunk.
    func fetch(_ hash: String, for job: Running) throws {
        var offset = 0, total = -1
        while total < 0 || offset < total {
            let reply = try request(.fetch(.init(hash: hash, offset: offset, length: WireMessage.maximumPayloadBytes)), about: job) { m in
                if case .chunk(let c, _) = m { c.hash == hash && c.offset == offset } else { false }
            }
            guard case .chunk(let c, let data) = reply else { continue }
            if let problem = c.error { throw ArtifactError.missing("\(hash) (\(problem))") }
            total = c.total
            do {
                offset = try cache.receive(hash, offset: offset, total: total, chunk: data, upload: "fetch")
            } catch {
                // Out of space, by the error or by the volume's count (some writes fail without saying why).
                let left = total - offset
                if VolumeSpace.isNoSpace(error) || (VolumeSpace.freeBytes(at: cache.root.path)).map({ $0 < UInt64(max(0, left)) + (1 << 20) }) == true {
                    throw CacheFull(hash: hash, needed: left, underlying: error)
                }
                throw error
            }
            if total == 0 { break }
        }
    }

    /// Uploads the outputs and reports the outcome; the job ends here. A
    /// refused upload or result fails the attempt with the coordinator's
    /// reason; a coordinator silent past the job-request bound gets the job
    /// dropped (its lease then expires there).
    func report(_ r: Running, _ outcome: StageOutcome) throws {
        defer { if running === r { running = nil } }
        logger.info("stage finished", metadata: ["stage": "\(r.job.kind.rawValue)", "key": "\(r.job.key.short)",
                                                 "seconds": "\(String(format: "%.1f", outcome.seconds))",
                                                 "peak MiB": "\(outcome.peakMiB.map { String(format: "%.0f", $0) } ?? "unknown")",
                                                 "outputs": "\(outcome.outputs.count)", "ok": "\(outcome.error == nil)"])
        do {
            if let error = outcome.error {
                try fail(r, error, permanent: outcome.permanent)
            } else {
                do { try deliver(r, outcome) } catch let refusal as Refused {
                    try fail(r, refusal.description, permanent: false)
                }
            }
        } catch is Lost {
            logger.warning("lost the job while reporting it", metadata: ["token": "\(r.job.token)"])
        } catch let error as NoAnswer {
            logger.error("dropped a finished job: \(error)", metadata: ["token": "\(r.job.token)"])
        } catch let error as Refused {
            logger.error("dropped a job: \(error)", metadata: ["token": "\(r.job.token)"])
        }
    }

    func fail(_ r: Running, _ error: String, permanent: Bool) throws {
        let token = r.job.token
        let reply = try request(.fail(.init(token: token, error: error.truncatedUTF8(WireMessage.maximumErrorBytes), permanent: permanent)),
                                about: r) { if case .ack(let a) = $0 { a.token == token } else { false } }
        logger.info("reported a failed attempt", metadata: ["token": "\(token)", "error": "\(error.prefix(300))",
                                                           "accepted": "\(reply.acceptedAck)"])
    }

    /// Sends one output blob in chunks with put; a refused chunk throws ``Refused``.
    func upload(_ r: Running, name: String, data: Data, hash: String) throws {
        var offset = 0
        repeat {
            var piece = data.subdata(in: offset..<min(data.count, offset + WireMessage.maximumPayloadBytes))
            if settings.corruptOutputs, !piece.isEmpty { piece[piece.startIndex] ^= 0xff }
            let reply = try request(.put(.init(token: r.job.token, hash: hash, offset: offset, total: data.count), piece), about: r) { m in
                if case .putAck(let a) = m { a.hash == hash } else { false }
            }
            guard case .putAck(let ack) = reply else { return }
            if let problem = ack.error { throw Refused(type: "put", problem: "output '\(name)': \(problem)") }
            offset = ack.received
        } while offset < data.count
    }

    /// Uploads the outputs, then sends done: its outputs in the header, or,
    /// when there are more than a header holds, in a manifest blob.
    func deliver(_ r: Running, _ outcome: StageOutcome) throws {
        var outcome = outcome
        if settings.wrongResults {
            outcome.outputs = outcome.outputs.mapValues { $0 + Data([0x20]) }
            outcome.metrics = outcome.metrics.mapValues { $0 + 0.01 }
        }
        let token = r.job.token
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
            try upload(r, name: name, data: data, hash: hash)
            outputs[name] = .init(hash: hash, size: data.count)
        }
        if settings.corruptOutputs, !payload.isEmpty { payload[payload.startIndex] ^= 0xff }
        lastJobSeconds = monotonicSeconds() - r.started
        var done = WireMessage.Done(token: token, outputs: outputs, metrics: outcome.metrics,
                                    seconds: monotonicSeconds() - r.started, peakMiB: outcome.peakMiB)
        if !settings.headerOnlyResults, done.headerBytes > WireMessage.manifestThresholdBytes {
            let manifest = Manifest.encode(outputs: outputs), hash = ArtifactStore.hash(manifest)
            try upload(r, name: "the outputs manifest", data: manifest, hash: hash)
            done.outputs = [:]
            done.manifest = .init(hash: hash, size: manifest.count)
        }
        // Not waited for: the next job starts while the coordinator records this one. While an earlier
        // result is unanswered this one is held, to go with the others held once it is answered.
        if held.count + 1 > WireMessage.maximumResults
            || held.reduce(payload.count, { $0 + $1.payload.count }) > WireMessage.maximumPayloadBytes
            || held.reduce(done.headerBytes + 8, { $0 + $1.done.headerBytes }) > WireMessage.maximumHeaderBytes {
            try sendHeld(finishing: r)
        }
        held.append(.init(done, payload))
        if unacknowledged.isEmpty { try sendHeld(finishing: r) }
    }

    /// Sends the results held, one as a done and several as one results
    /// message; the last asks for the next jobs (saves a ready round trip).
    /// `finishing` is the job whose result is among them and which still
    /// counts as running.
    func sendHeld(finishing r: Running? = nil) throws {
        guard !held.isEmpty else { return }
        let stillRunning = running == nil || running === r ? 0 : 1
        let next = draining.requested || asking != nil || cutOff ? 0 : max(0, window + 1 - ahead.count - stillRunning)
        held[held.count - 1].done.next = next
        let message: WireMessage = held.count == 1 ? .done(held[0].done, held[0].payload) : .results(held)
        try socket.send(message.encode())
        if held.count > 1 { logger.info("sent results together", metadata: ["results": "\(held.count)", "next jobs asked": "\(next)"]) }
        let now = monotonicSeconds()
        for result in held { unacknowledged[result.done.token] = Unacknowledged(result: result, since: now, sent: now, times: 1) }
        held = []
        if next > 0 { asking = (now, now, 1, next) }
    }

    /// Takes the coordinator's answer to a result; false when it answers no result of this worker's.
    func acknowledge(_ ack: WireMessage.Ack) -> Bool {
        guard unacknowledged.removeValue(forKey: ack.token) != nil else { return false }
        if !ack.accepted {
            logger.warning("result refused", metadata: ["token": "\(ack.token)", "problem": "\(ack.error ?? "stale attempt")"])
        }
        return true
    }

    /// Sends again (logged) each result unanswered for a reply timeout; one
    /// unanswered past the job-request bound is dropped (its lease then
    /// expires at the coordinator and the job runs again elsewhere).
    func resendOverdueResults() throws {
        let now = monotonicSeconds()
        for (token, u) in unacknowledged where now - u.sent > settings.replyTimeoutSeconds {
            let waited = now - u.since
            if waited >= settings.jobRequestTimeoutSeconds {
                unacknowledged[token] = nil
                logger.error("dropped a finished job: \(NoAnswer(type: "done", endpoint: settings.endpoint, seconds: waited, asked: u.times))",
                             metadata: ["token": "\(token)"])
                continue
            }
            logger.warning("no answer from the coordinator; asking again",
                           metadata: ["request": "done", "token": "\(token)", "sent": "\(u.times + 1)", "waited s": "\(Int(waited))",
                                      "gives up after s": "\(Int(settings.jobRequestTimeoutSeconds))"])
            try sendAgain(token)
        }
    }

    /// Sends an unanswered result again, alone (as a done asking for no job), and counts it.
    func sendAgain(_ token: Int64) throws {
        guard var u = unacknowledged[token] else { return }
        try socket.send(u.frames)
        (u.sent, u.times) = (monotonicSeconds(), u.times + 1)
        unacknowledged[token] = u
    }
}

extension WireMessage {
    var acceptedAck: Bool { if case .ack(let a) = self { a.accepted } else { false } }
}

extension String {
    /// At most `bytes` bytes of UTF-8, cut at a character boundary.
    func truncatedUTF8(_ bytes: Int) -> String {
        guard utf8.count > bytes else { return self }
        var end = utf8.index(utf8.startIndex, offsetBy: bytes)
        while String.Index(end, within: self) == nil { end = utf8.index(before: end) }
        return String(self[..<end]) + " ... (\(utf8.count - bytes) more bytes)"
    }
}
