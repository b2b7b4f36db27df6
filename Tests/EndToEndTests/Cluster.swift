import Foundation
import Testing
import TestSupport

/// Real coordinator and worker processes on loopback, for end-to-end tests:
/// the binaries this test build made, a temporary state directory, and
/// every process killed when the cluster goes away.
final class Cluster {
    let state: TemporaryDirectory
    private(set) var coordinator: Process?
    private(set) var endpoint = ""
    private(set) var workers: [String: Process] = [:]
    let leaseSeconds: Double
    var logs: [URL] = []
    /// The coordinator's state directory: the temporary folder itself, or a
    /// folder in it (a small file system mounted there, say); logs, sweep
    /// files and worker caches stay in the temporary folder.
    var stateDirectory: URL
    /// Added to the coordinator's environment (e.g. libfaketime's).
    var coordinatorEnvironment: [String: String] = [:]

    static var binaries: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    }

    init(leaseSeconds: Double = 1.5) throws {
        state = try TemporaryDirectory()
        stateDirectory = state.url
        self.leaseSeconds = leaseSeconds
    }

    deinit {
        for p in workers.values where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        if let c = coordinator, c.isRunning { kill(c.processIdentifier, SIGKILL) }
    }

    private func process(_ name: String, _ arguments: [String], log: String, environment: [String: String] = [:]) throws -> (Process, Pipe) {
        let p = Process()
        p.executableURL = Self.binaries.appendingPathComponent(name)
        p.arguments = arguments
        if !environment.isEmpty {
            p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
            // Through env(1), which execs in place (same pid): a preloaded library
            // that calls setenv in its constructor (libfaketime does, the first
            // time) moves `environ`, from which Swift on Linux finds argv; under
            // env it has already done so in env's image, and the binary starts clean.
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = [Self.binaries.appendingPathComponent(name).path] + arguments
        }
        let out = Pipe()
        p.standardOutput = out
        let logURL = state.url.appendingPathComponent("\(log).log")
        _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        p.standardError = try FileHandle(forWritingTo: logURL)
        logs.append(logURL)
        try p.run()
        return (p, out)
    }

    /// Starts (or restarts) the coordinator on a free loopback port (the
    /// same port again on a restart) and waits for its endpoint line.
    func startCoordinator(_ extra: [String] = []) throws {
        let bind = endpoint.isEmpty ? "tcp://127.0.0.1:*" : endpoint
        let (p, out) = try process("psad-coordinator", ["serve", "--state", stateDirectory.path, "--bind", bind,
                                                        "--lease-seconds", "\(leaseSeconds)", "--heartbeat-seconds", "\(leaseSeconds / 5)",
                                                        "--backoff-seconds", "0.2"] + extra, log: "coordinator-\(logs.count)",
                                   environment: coordinatorEnvironment)
        coordinator = p
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let byte = out.fileHandleForReading.readData(ofLength: 1)
            guard !byte.isEmpty else { throw ClusterError("the coordinator exited: \(tail())") }
            line.append(byte)
        }
        let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.hasPrefix("serving ") else { throw ClusterError("unexpected first line '\(text)'") }
        endpoint = String(text.dropFirst("serving ".count))
    }

    func killCoordinator() {
        guard let c = coordinator else { return }
        kill(c.processIdentifier, SIGKILL)
        c.waitUntilExit()
    }

    /// A worker connected to the coordinator, or to `via` (a ``FaultProxy``'s endpoint).
    func startWorker(_ name: String, _ extra: [String] = [], via: String? = nil) throws {
        let (p, _) = try process("psad-worker", ["--coordinator", via ?? endpoint, "--id", name,
                                                 "--cache", state.url.appendingPathComponent("cache-\(name)").path] + extra, log: "worker-\(name)")
        workers[name] = p
    }

    func signalWorker(_ name: String, _ sig: Int32) {
        if let p = workers[name] { kill(p.processIdentifier, sig) }
    }

    /// Runs a coordinator CLI command against the state directory; its stdout.
    @discardableResult
    func command(_ arguments: [String], withState: Bool = true) throws -> String {
        let r = try run(arguments, withState: withState)
        guard r.status == 0 else {
            throw ClusterError("psad-coordinator \(arguments.joined(separator: " ")) exited \(r.status): \(r.errors)")
        }
        return r.output
    }

    /// Runs a coordinator CLI command; its exit status, stdout and stderr.
    func run(_ arguments: [String], withState: Bool = true) throws -> (status: Int32, output: String, errors: String) {
        let p = Process()
        p.executableURL = Self.binaries.appendingPathComponent("psad-coordinator")
        p.arguments = arguments + (withState ? ["--state", stateDirectory.path] : [])
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let problem = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self), String(decoding: problem, as: UTF8.self))
    }

    func submit(_ sweep: String) throws {
        let file = state.url.appendingPathComponent("sweep-\(UUID().uuidString).json")
        try Data(sweep.utf8).write(to: file)
        try command(["submit", file.path])
    }

    /// State -> count over the sweep's jobs.
    func counts(_ sweep: String) throws -> [String: Int] {
        var total: [String: Int] = [:]
        for perKind in try kindCounts(sweep).values {
            for (state, n) in perKind { total[state, default: 0] += n }
        }
        return total
    }

    /// `status SWEEP --json`: the sweep's status object.
    func statusJSON(_ sweep: String) throws -> [String: Any] {
        let json = try command(["status", sweep, "--json"])
        return (try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]])?.first ?? [:]
    }

    /// Attempt outcome (done, failed, expired, handed-back ...) -> count over the sweep's jobs.
    func attempts(_ sweep: String) throws -> [String: Int] {
        try statusJSON(sweep)["attempts"] as? [String: Int] ?? [:]
    }

    /// Stage kind -> state -> count over the sweep's jobs.
    func kindCounts(_ sweep: String) throws -> [String: [String: Int]] {
        try statusJSON(sweep)["counts"] as? [String: [String: Int]] ?? [:]
    }

    /// Polls `status` per stage kind until `done` says so, or fails after `seconds`.
    func waitKinds(_ sweep: String, seconds: Double, until done: ([String: [String: Int]]) -> Bool) throws -> [String: [String: Int]] {
        let deadline = Date().addingTimeInterval(seconds)
        var last: [String: [String: Int]] = [:]
        while Date() < deadline {
            last = try kindCounts(sweep)
            if done(last) { return last }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw ClusterError("sweep \(sweep) did not get there in \(seconds) s: \(last)\n\(tail())")
    }

    /// Polls `status` until `done` says so, or fails after `seconds`.
    func wait(_ sweep: String, seconds: Double = 60, until done: ([String: Int]) -> Bool) throws -> [String: Int] {
        let deadline = Date().addingTimeInterval(seconds)
        var last: [String: Int] = [:]
        while Date() < deadline {
            last = try counts(sweep)
            if done(last) { return last }
            Thread.sleep(forTimeInterval: 0.2)
        }
        throw ClusterError("sweep \(sweep) did not get there in \(seconds) s: \(last)\n\(tail())")
    }

    /// The end of every process log, for failure messages.
    func tail() -> String {
        logs.map { url in
            let text = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
            return "--- \(url.lastPathComponent)\n" + text.split(separator: "\n").suffix(8).joined(separator: "\n")
        }.joined(separator: "\n")
    }
}

/// Runs a program to its end: its exit status and its stdout and stderr together.
func runProgram(_ path: String, _ arguments: [String], in directory: URL? = nil) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = arguments
    if let directory { p.currentDirectoryURL = directory }
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    return (p.terminationStatus, text)
}

struct ClusterError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
