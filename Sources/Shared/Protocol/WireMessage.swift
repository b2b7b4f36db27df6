import Foundation

/// Every message between coordinator and workers (DESIGN.md, Wire
/// protocol). On the wire a message is a multipart ZeroMQ message:
///
///     [version: 1 byte] [type: UTF-8 name] [header] [payload: bytes, chunk, put and done only]
///
/// The header is a JSON object, except for the messages every job sends
/// (job, done, results, ack, ready, and bye and hello-again with it), whose
/// headers are binary (``BinaryHeader``).
/// (a ROUTER adds the peer's routing id in front). `decode` validates every
/// frame; anything malformed is a `WireError`, which the receiver logs and
/// drops.
public enum WireMessage: Equatable, Sendable {
    /// Worker -> coordinator, first: who it is, what it has, what it runs.
    case hello(Hello)
    /// Coordinator -> worker: registration accepted; which in-flight attempts it keeps.
    case welcome(Welcome)
    /// Worker -> coordinator: give me this many jobs (at least 1). The
    /// answer is that many job messages, or fewer and a no-job.
    case ready(Int)
    /// Coordinator -> worker: nothing to do now; ask again later.
    case noJob(NoJob)
    case job(Job)
    /// Both ways, every few seconds: the worker's names the attempts it is
    /// running; the coordinator's answer names those that are still its
    /// own (the rest come in a `cancel`).
    case heartbeat(Heartbeat)
    /// Coordinator -> worker: this worker is unknown here (the coordinator
    /// restarted): send hello again, with the attempts in flight.
    case helloAgain
    /// Worker -> coordinator: a slice of an input artifact.
    case fetch(Fetch)
    /// Coordinator -> worker: the slice (payload).
    case chunk(Chunk, Data)
    /// Worker -> coordinator: a slice of an output artifact (payload).
    case put(Put, Data)
    /// Coordinator -> worker: the slice is stored (or refused, with why).
    case putAck(PutAck)
    /// The attempt's result; small outputs travel inline in the payload
    /// (the concatenation, in name order, of the outputs marked inline).
    case done(Done, Data)
    /// Several results in one message (a worker's results that finished
    /// while its last one was unanswered): each is handled as its own done,
    /// all in one transaction. The payload frame is the concatenation of
    /// each result's inline outputs, in order.
    case results([Finished])
    case fail(Fail)
    /// Coordinator -> worker: the answer to done or fail.
    case ack(Ack)
    /// Coordinator -> worker: stop these attempts (lease lost: expired,
    /// cancelled sweep); their results would be refused.
    case cancel(Cancel)
    /// Worker -> coordinator: leaving (after draining).
    case bye
    /// Worker -> coordinator: a draining worker gives its job back
    /// unfinished: ready again at once, the attempt not counted.
    case release(Release)
    /// Coordinator -> worker: a message it could not take (malformed, too
    /// large, another protocol version), with why. The attempt it named, if
    /// any, has been failed; the worker stops waiting for an answer to it.
    case refused(Refused)

    public struct Hello: Codable, Equatable, Sendable {
        public var worker: String
        public var resources: WorkerResources
        /// Stage kinds this worker can run.
        public var kinds: [StageKind]
        /// Attempts it is still running (after a coordinator restart).
        public var inFlight: [Int64]
        public init(worker: String, resources: WorkerResources, kinds: [StageKind], inFlight: [Int64]) {
            self.worker = worker; self.resources = resources; self.kinds = kinds; self.inFlight = inFlight
        }
    }
    public struct Welcome: Codable, Equatable, Sendable {
        public var adopted: [Int64], dropped: [Int64]
        public var heartbeatSeconds: Double
        /// How long a lease lasts without a heartbeat: a worker that hears
        /// nothing from the coordinator for this long knows its leases are
        /// gone and stops the work it could no longer report (absent from
        /// coordinators before it: the worker then waits for its bounds).
        public var leaseSeconds: Double?
        public init(adopted: [Int64], dropped: [Int64], heartbeatSeconds: Double, leaseSeconds: Double? = nil) {
            self.adopted = adopted; self.dropped = dropped; self.heartbeatSeconds = heartbeatSeconds; self.leaseSeconds = leaseSeconds
        }
    }
    public struct NoJob: Codable, Equatable, Sendable {
        public var retryAfterSeconds: Double
        public init(retryAfterSeconds: Double) { self.retryAfterSeconds = retryAfterSeconds }
    }
    public struct Job: Codable, Equatable, Sendable {
        public var token: Int64
        public var key: JobKey
        public var kind: StageKind
        public var category: String
        /// The stage's parameters, canonical JSON.
        public var parameters: String
        /// Input role -> output name -> artifact hash (empty when `inputsManifest` is set).
        public var inputs: [String: [String: String]]
        /// A blob holding `inputs` (a ``Manifest``), for jobs whose inputs
        /// would not fit a header: fetched like any other artifact.
        public var inputsManifest: String?
        public init(token: Int64, key: JobKey, kind: StageKind, category: String, parameters: String, inputs: [String: [String: String]],
                    inputsManifest: String? = nil) {
            self.token = token; self.key = key; self.kind = kind; self.category = category; self.parameters = parameters; self.inputs = inputs
            self.inputsManifest = inputsManifest
        }
    }
    public struct Heartbeat: Codable, Equatable, Sendable {
        public var tokens: [Int64]
        /// How far the worker's stages are (absent from the coordinator's answer).
        public var progress: [Progress]?
        public init(tokens: [Int64], progress: [Progress]? = nil) { self.tokens = tokens; self.progress = progress }
    }
    /// A running stage's progress: `done` of `total` `unit`s (epochs, images).
    public struct Progress: Codable, Equatable, Sendable {
        public var token: Int64, done: Int, total: Int, unit: String
        public init(token: Int64, done: Int, total: Int, unit: String) { self.token = token; self.done = done; self.total = total; self.unit = unit }
    }
    public struct Fetch: Codable, Equatable, Sendable {
        public var hash: String, offset: Int, length: Int
        public init(hash: String, offset: Int, length: Int) { self.hash = hash; self.offset = offset; self.length = length }
    }
    public struct Chunk: Codable, Equatable, Sendable {
        public var hash: String, offset: Int, total: Int
        /// Set when the blob is unknown or unreadable (no payload then).
        public var error: String?
        public init(hash: String, offset: Int, total: Int, error: String? = nil) {
            self.hash = hash; self.offset = offset; self.total = total; self.error = error
        }
    }
    public struct Put: Codable, Equatable, Sendable {
        public var token: Int64, hash: String, offset: Int, total: Int
        public init(token: Int64, hash: String, offset: Int, total: Int) { self.token = token; self.hash = hash; self.offset = offset; self.total = total }
    }
    public struct PutAck: Codable, Equatable, Sendable {
        public var hash: String, received: Int
        /// Set when the upload is refused (stale token, wrong offset, hash mismatch).
        public var error: String?
        public init(hash: String, received: Int, error: String? = nil) { self.hash = hash; self.received = received; self.error = error }
    }
    public struct Output: Codable, Equatable, Sendable {
        public var hash: String, size: Int
        /// The bytes are in the done message's payload (small outputs), not uploaded with put.
        public var inline: Bool
        public init(hash: String, size: Int, inline: Bool = false) { self.hash = hash; self.size = size; self.inline = inline }
    }
    public struct Done: Codable, Equatable, Sendable {
        public var token: Int64
        /// Output name -> artifact (uploaded with put, or inline); empty when `manifest` is set.
        public var outputs: [String: Output]
        /// A blob (uploaded with put) holding `outputs` as a ``Manifest``, for
        /// results with more outputs than a header holds; its inline outputs
        /// are still in this message's payload.
        public var manifest: Output?
        public var metrics: [String: Double]
        /// The job's wall time on the worker, fetching inputs to uploading outputs.
        public var seconds: Double
        /// The stage's peak resident memory in the worker's process, MiB (nil where the worker cannot tell).
        public var peakMiB: Double?
        /// How many next jobs the worker wants in the answer (saves a ready round trip; 0: none).
        public var next: Int
        public init(token: Int64, outputs: [String: Output], manifest: Output? = nil, metrics: [String: Double], seconds: Double,
                    peakMiB: Double? = nil, next: Int = 0) {
            self.token = token; self.outputs = outputs; self.manifest = manifest; self.metrics = metrics; self.seconds = seconds
            self.peakMiB = peakMiB; self.next = next
        }

        /// The bytes its inline outputs take in a payload.
        var inlineBytes: Int { outputs.values.reduce(0) { $1.inline ? $0 + max(0, $1.size) : $0 } }

        /// The inline outputs' bytes, split from a done payload (name order); nil when the sizes do not add up.
        public func inlineOutputs(_ payload: Data) -> [(name: String, output: Output, data: Data)]? {
            var offset = payload.startIndex, parts: [(String, Output, Data)] = []
            for name in outputs.keys.sorted() where outputs[name]!.inline {
                let output = outputs[name]!
                guard output.size >= 0, payload.endIndex - offset >= output.size else { return nil }
                parts.append((name, output, payload.subdata(in: offset..<(offset + output.size))))
                offset += output.size
            }
            return offset == payload.endIndex ? parts : nil
        }
    }
    /// One result of a results message: its done header and its inline outputs' bytes.
    public struct Finished: Equatable, Sendable {
        public var done: Done
        public var payload: Data
        public init(_ done: Done, _ payload: Data) { self.done = done; self.payload = payload }
    }
    /// The most results one results message carries.
    public static let maximumResults = 64
    public struct Fail: Codable, Equatable, Sendable {
        public var token: Int64
        public var error: String
        /// Bad input: retrying cannot help.
        public var permanent: Bool
        public init(token: Int64, error: String, permanent: Bool) { self.token = token; self.error = error; self.permanent = permanent }
    }
    public struct Ack: Codable, Equatable, Sendable {
        public var token: Int64
        public var accepted: Bool
        /// Why a result was not accepted.
        public var error: String?
        public init(token: Int64, accepted: Bool, error: String? = nil) { self.token = token; self.accepted = accepted; self.error = error }
    }
    public struct Release: Codable, Equatable, Sendable {
        public var token: Int64
        public var reason: String
        public init(token: Int64, reason: String) { self.token = token; self.reason = reason }
    }
    public struct Refused: Codable, Equatable, Sendable {
        /// The refused message's type, as far as it could be read.
        public var type: String
        /// The attempt it was about, when its header named one.
        public var token: Int64?
        public var problem: String
        public init(type: String, token: Int64?, problem: String) { self.type = type; self.token = token; self.problem = problem }
    }
    public struct Cancel: Codable, Equatable, Sendable {
        public var tokens: [Int64]
        public init(tokens: [Int64]) { self.tokens = tokens }
    }
    struct Empty: Codable, Equatable {}
}

/// A frame that is not a valid message of this protocol.
public struct WireError: Error, Equatable, CustomStringConvertible {
    public let problem: String
    public init(problem: String) { self.problem = problem }
    public var description: String { "bad message: \(problem)" }
}

extension WireMessage {
    public static let maximumHeaderBytes = 64 << 10
    public static let maximumPayloadBytes = 1 << 20
    /// A job's inputs or a done's outputs whose header would pass this size
    /// travel as a manifest blob instead (well under `maximumHeaderBytes`, so
    /// the rest of the header always fits).
    public static let manifestThresholdBytes = 16 << 10
    /// Error texts in fail messages are cut to this many bytes.
    public static let maximumErrorBytes = 8 << 10

    public var typeName: String {
        switch self {
        case .hello: "hello"
        case .welcome: "welcome"
        case .ready: "ready"
        case .noJob: "no-job"
        case .job: "job"
        case .heartbeat: "heartbeat"
        case .helloAgain: "hello-again"
        case .fetch: "fetch"
        case .chunk: "chunk"
        case .put: "put"
        case .putAck: "put-ack"
        case .done: "done"
        case .results: "results"
        case .fail: "fail"
        case .ack: "ack"
        case .cancel: "cancel"
        case .bye: "bye"
        case .refused: "refused"
        case .release: "release"
        }
    }

    /// Headers and manifests alike: canonical JSON, snake_case keys.
    static func jsonEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return encoder
    }

    static func jsonDecoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }

    /// One encoder and one decoder for every message (both are thread-safe;
    /// making them per message was a tenth of a no-op job's cost).
    static let sharedEncoder = jsonEncoder()
    static let sharedDecoder = jsonDecoder()

    public func encode() -> [Data] {
        let encoder = Self.sharedEncoder
        func message(_ header: Data, _ payload: Data?) -> [Data] {
            [Data([ProtocolVersion.current]), Data(typeName.utf8), header] + (payload.map { [$0] } ?? [])
        }
        // Headers are plain structs of strings and numbers: encoding cannot fail.
        func frames(_ header: some Encodable, _ payload: Data? = nil) -> [Data] { message(try! encoder.encode(header), payload) }
        func binary(_ header: some BinaryHeader, _ payload: Data? = nil) -> [Data] { message(HeaderWriter.encode(header), payload) }
        switch self {
        case .hello(let h): return frames(h)
        case .welcome(let h): return frames(h)
        case .ready(let jobs): return binary(Ready(jobs: jobs))
        case .bye, .helloAgain: return binary(Empty())
        case .noJob(let h): return frames(h)
        case .job(let h): return binary(h)
        case .heartbeat(let h): return frames(h)
        case .fetch(let h): return frames(h)
        case .chunk(let h, let p): return frames(h, p)
        case .put(let h, let p): return frames(h, p)
        case .putAck(let h): return frames(h)
        case .done(let h, let p): return binary(h, p)
        case .results(let r): return binary(ResultsHeader(results: r.map(\.done)), r.reduce(into: Data()) { $0.append($1.payload) })
        case .fail(let h): return frames(h)
        case .ack(let h): return binary(h)
        case .cancel(let h): return frames(h)
        case .refused(let h): return frames(h)
        case .release(let h): return frames(h)
        }
    }

    /// Validates and decodes the frames of one message (without a routing id).
    public static func decode(_ parts: [Data]) throws -> WireMessage {
        guard parts.count == 3 || parts.count == 4 else { throw WireError(problem: "\(parts.count) frames (expected 3 or 4)") }
        guard parts[0].count == 1 else { throw WireError(problem: "version frame of \(parts[0].count) bytes") }
        guard parts[0].first == ProtocolVersion.current else {
            throw WireError(problem: "protocol version \(parts[0].first!) (this side speaks \(ProtocolVersion.current))")
        }
        guard parts[1].count <= 32, let type = String(data: parts[1], encoding: .utf8) else { throw WireError(problem: "unreadable message type") }
        guard parts[2].count <= maximumHeaderBytes else { throw WireError(problem: "\(type) header of \(parts[2].count) bytes") }
        let withPayload = type == "chunk" || type == "put" || type == "done" || type == "results"
        guard (parts.count == 4) == withPayload else {
            throw WireError(problem: withPayload ? "\(type) without its payload frame" : "\(type) with an unexpected payload frame")
        }
        if withPayload, parts[3].count > maximumPayloadBytes { throw WireError(problem: "\(type) payload of \(parts[3].count) bytes") }
        let decoder = sharedDecoder
        func header<T: Decodable>(_: T.Type) throws -> T {
            do { return try decoder.decode(T.self, from: parts[2]) } catch {
                throw WireError(problem: "\(type) header: \(error)")
            }
        }
        func binary<T: BinaryHeader>(_: T.Type) throws -> T { try HeaderReader.decode(T.self, parts[2], type: type) }
        switch type {
        case "hello": return .hello(try header(Hello.self))
        case "welcome": return .welcome(try header(Welcome.self))
        case "ready":
            let jobs = try binary(Ready.self).jobs
            guard (1...maximumResults).contains(jobs) else { throw WireError(problem: "ready asks for \(jobs) jobs (1 to \(maximumResults))") }
            return .ready(jobs)
        case "no-job": return .noJob(try header(NoJob.self))
        case "job": return .job(try binary(Job.self))
        case "heartbeat": return .heartbeat(try header(Heartbeat.self))
        case "hello-again": _ = try binary(Empty.self); return .helloAgain
        case "fetch": return .fetch(try header(Fetch.self))
        case "chunk": return .chunk(try header(Chunk.self), parts[3])
        case "put": return .put(try header(Put.self), parts[3])
        case "put-ack": return .putAck(try header(PutAck.self))
        case "done": return .done(try binary(Done.self), parts[3])
        case "results":
            let dones = try binary(ResultsHeader.self).results
            guard (1...maximumResults).contains(dones.count) else {
                throw WireError(problem: "results header: \(dones.count) results (1 to \(maximumResults))")
            }
            var offset = parts[3].startIndex, finished: [Finished] = []
            for done in dones {
                let size = done.inlineBytes
                guard parts[3].endIndex - offset >= size else {
                    throw WireError(problem: "results: the inline outputs of result \(finished.count + 1) run past the \(parts[3].count)-byte payload")
                }
                finished.append(Finished(done, parts[3].subdata(in: offset..<(offset + size))))
                offset += size
            }
            guard offset == parts[3].endIndex else {
                throw WireError(problem: "results: \(parts[3].endIndex - offset) payload bytes beyond the results' inline outputs")
            }
            return .results(finished)
        case "fail": return .fail(try header(Fail.self))
        case "ack": return .ack(try binary(Ack.self))
        case "cancel": return .cancel(try header(Cancel.self))
        case "bye": _ = try binary(Empty.self); return .bye
        case "refused": return .refused(try header(Refused.self))
        case "release": return .release(try header(Release.self))
        default: throw WireError(problem: "unknown message type '\(type.prefix(32))'")
        }
    }
}

/// A job's inputs or a result's outputs too many for a message header, as a
/// blob: canonical JSON (sorted keys, snake_case), content-addressed like
/// every other artifact.
public enum Manifest {
    struct Inputs: Codable { var inputs: [String: [String: String]] }
    struct Outputs: Codable { var outputs: [String: WireMessage.Output] }

    static func encoder() -> JSONEncoder { WireMessage.sharedEncoder }

    static func decode<T: Decodable>(_: T.Type, _ data: Data, what: String) throws -> T {
        do { return try WireMessage.sharedDecoder.decode(T.self, from: data) } catch {
            throw WireError(problem: "\(what) manifest of \(data.count) bytes: \(error)")
        }
    }

    // Plain dictionaries of strings and numbers: encoding cannot fail.
    public static func encode(inputs: [String: [String: String]]) -> Data { try! encoder().encode(Inputs(inputs: inputs)) }
    public static func encode(outputs: [String: WireMessage.Output]) -> Data { try! encoder().encode(Outputs(outputs: outputs)) }
    public static func inputs(_ data: Data) throws -> [String: [String: String]] { try decode(Inputs.self, data, what: "inputs").inputs }
    public static func outputs(_ data: Data) throws -> [String: WireMessage.Output] { try decode(Outputs.self, data, what: "outputs").outputs }

    /// The bytes `value` takes as a header (to choose between header and manifest).
    public static func headerBytes(_ value: some Encodable) -> Int { (try? encoder().encode(value).count) ?? Int.max }
}

extension WireError {
    /// What a refusal can say of a message that did not decode: its type
    /// and the attempt its header names, read leniently.
    public static func describe(_ parts: [Data]) -> (type: String, token: Int64?) {
        // Printable ASCII only: the type goes into logs and the answer.
        let type = parts.count > 1 ? String(decoding: parts[1].prefix(32).map { (32..<127).contains($0) ? $0 : 63 }, as: UTF8.self) : "?"
        if ["job", "done", "ack"].contains(type) {
            // Their binary headers start with the token (``BinaryHeader``).
            guard parts.count > 2, parts[2].count >= 8 else { return (type, nil) }
            var r = HeaderReader(parts[2].prefix(8), type: type)
            return (type, try? r.int64("token"))
        }
        guard parts.count > 2, parts[2].count <= 16 << 20,
              let object = try? JSONSerialization.jsonObject(with: parts[2]) as? [String: Any],
              let token = object["token"] as? NSNumber else { return (type, nil) }
        return (type, token.int64Value)
    }
}
