import CZeroMQ
import Foundation
import Logging

/// A CURVE key pair in Z85 text (40 characters each), as `zmq_curve_keypair`
/// makes them. Between machines the coordinator and every worker hold one;
/// the coordinator admits only workers whose public key is on its allowlist.
public struct CurveKeyPair: Equatable, Sendable {
    public let publicKey: String
    public let secretKey: String

    public enum KeyError: Error, CustomStringConvertible, Equatable {
        case unreadable(file: String)
        case malformed(file: String)

        public var description: String {
            switch self {
            case .unreadable(let f): "\(f): cannot read the key file (make keys with `psad-coordinator keys`)"
            case .malformed(let f): "\(f): not a CURVE key (40 Z85 characters on the first line)"
            }
        }
    }

    public static func generate() throws -> CurveKeyPair {
        var pub = [CChar](repeating: 0, count: 41), sec = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&pub, &sec) == 0 else { throw ZeroMQError("zmq_curve_keypair") }
        return CurveKeyPair(publicKey: Self.text(pub), secretKey: Self.text(sec))
    }

    /// The pair of a secret key file (`NAME.key`); the public half is derived.
    public static func load(secretFile path: String) throws -> CurveKeyPair {
        let secret = try readKey(path)
        var pub = [CChar](repeating: 0, count: 41)
        guard zmq_curve_public(&pub, secret) == 0 else { throw KeyError.malformed(file: path) }
        return CurveKeyPair(publicKey: text(pub), secretKey: secret)
    }

    /// A public key file (`NAME.pub`), or every `*.pub` in a folder.
    public static func publicKeys(at path: String) throws -> Set<String> {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else { throw KeyError.unreadable(file: path) }
        guard isFolder.boolValue else { return [try readKey(path)] }
        let names = try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasSuffix(".pub") }.sorted()
        return Set(try names.map { try readKey((path as NSString).appendingPathComponent($0)) })
    }

    public static func readKey(_ path: String) throws -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw KeyError.unreadable(file: path) }
        let key = String(text.split(separator: "\n", omittingEmptySubsequences: false).first ?? "").trimmingCharacters(in: .whitespaces)
        guard isValid(key) else { throw KeyError.malformed(file: path) }
        return key
    }

    public static func isValid(_ key: String) -> Bool {
        guard key.utf8.count == 40 else { return false }
        var binary = [UInt8](repeating: 0, count: 32)
        return zmq_z85_decode(&binary, key) != nil
    }

    /// Writes `NAME.key` (secret, readable by the owner only) and `NAME.pub` into `folder`.
    public func write(to folder: URL, name: String) throws {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let secret = folder.appendingPathComponent("\(name).key"), pub = folder.appendingPathComponent("\(name).pub")
        guard FileManager.default.createFile(atPath: secret.path, contents: Data((secretKey + "\n").utf8),
                                             attributes: [.posixPermissions: 0o600]) else { throw KeyError.unreadable(file: secret.path) }
        try Data((publicKey + "\n").utf8).write(to: pub)
    }

    static func text(_ chars: [CChar]) -> String { chars.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } }

    static func z85(_ binary: Data) -> String? {
        guard binary.count == 32 else { return nil }
        var out = [CChar](repeating: 0, count: 41)
        let ok = binary.withUnsafeBytes { zmq_z85_encode(&out, $0.bindMemory(to: UInt8.self).baseAddress, 32) != nil }
        return ok ? text(out) : nil
    }
}

extension ZeroMQSocket {
    /// This socket accepts CURVE clients only (each checked by the ZAP handler, when one runs).
    public func makeCurveServer(secretKey: String) throws {
        try set(ZMQ_CURVE_SERVER, Int32(1))
        try set(ZMQ_CURVE_SECRETKEY, Data(secretKey.utf8))
        try set(ZMQ_ZAP_DOMAIN, Data("psad".utf8))
    }

    /// This socket talks CURVE to a server whose public key is `serverKey`.
    public func makeCurveClient(serverKey: String, keys: CurveKeyPair) throws {
        try set(ZMQ_CURVE_SERVERKEY, Data(serverKey.utf8))
        try set(ZMQ_CURVE_PUBLICKEY, Data(keys.publicKey.utf8))
        try set(ZMQ_CURVE_SECRETKEY, Data(keys.secretKey.utf8))
    }
}

/// True for endpoints that never leave the machine (ipc, inproc, loopback
/// TCP): the only ones that may go without CURVE by default.
public func isLocalEndpoint(_ endpoint: String) -> Bool {
    if endpoint.hasPrefix("ipc://") || endpoint.hasPrefix("inproc://") { return true }
    guard endpoint.hasPrefix("tcp://") else { return false }
    let host = endpoint.dropFirst("tcp://".count).split(separator: ":", maxSplits: 1).first.map(String.init) ?? ""
    return host == "127.0.0.1" || host == "localhost" || host.hasPrefix("[::1]") || endpoint.hasPrefix("tcp://[::1]")
}

/// The ZAP handler (RFC 27) of a context: a thread answering libzmq's
/// authentication requests on inproc://zeromq.zap.01, admitting a CURVE
/// client only if its public key is on the allowlist.
public final class ZapAuthenticator: @unchecked Sendable {
    let socket: ZeroMQSocket
    let allowed: Set<String>
    let logger: Logger
    private let stopped = TerminationFlag(signals: [])
    private var thread: Thread?
    private let done = DispatchSemaphore(value: 0)

    public init(context: ZeroMQContext, allowed: Set<String>, logger: Logger) throws {
        socket = try ZeroMQSocket(context, .reply)
        try socket.bind("inproc://zeromq.zap.01")
        self.allowed = allowed
        self.logger = logger
        let thread = Thread { [self] in serve() }
        self.thread = thread
        thread.start()
    }

    /// Stops the thread (before the context goes away).
    public func stop() {
        guard thread != nil else { return }
        stopped.set()
        done.wait()
        thread = nil
    }

    deinit { stop() }

    func serve() {
        defer { done.signal() }
        while !stopped.requested {
            guard let request = try? socket.receive(timeoutMilliseconds: 100) else { continue }
            // version, request id, domain, address, routing id, mechanism, credentials...
            guard request.count >= 6 else { continue }
            let mechanism = String(decoding: request[5], as: UTF8.self)
            var status = "400", text = "mechanism \(mechanism) not allowed", user = ""
            if mechanism == "CURVE", request.count >= 7, let key = CurveKeyPair.z85(request[6]) {
                if allowed.contains(key) {
                    (status, text, user) = ("200", "OK", key)
                } else {
                    text = "unknown key"
                    logger.warning("refused a worker with an unknown CURVE key",
                                   metadata: ["key": "\(key)", "address": "\(String(decoding: request[3], as: UTF8.self))"])
                }
            }
            try? socket.send([Data("1.0".utf8), request[1], Data(status.utf8), Data(text.utf8), Data(user.utf8), Data()])
        }
    }
}
