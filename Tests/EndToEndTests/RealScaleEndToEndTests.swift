import Foundation
import Scheduler
import Shared
import Testing

/// The protocol at the size of a real category: a stage with one output per
/// image (thousands), a job that reads them all, and a result the
/// coordinator cannot take, which must end its attempt with the reason
/// instead of leaving both sides waiting.
@Suite(.serialized) struct RealScaleEndToEndTests {
    /// The key of the first job a worker's log names (short form: a unique prefix).
    static func jobKeys(_ cluster: Cluster, worker: String) throws -> [String] {
        let log = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-\(worker).log"), encoding: .utf8)
        return log.split(separator: "\n").compactMap { line in
            guard line.contains("kind=diagnostic"), let r = line.range(of: "key=") else { return nil }
            return String(line[r.upperBound...].prefix { $0.isHexDigit })
        }
    }

    @Test func aStageWithThousandsOfOutputsReportsAndFeedsTheNextJob() throws {
        let cluster = try Cluster(leaseSeconds: 5)
        try cluster.startCoordinator()
        // 3,000 outputs of about 270 bytes: a done header listing them would be
        // about 400 KiB (the limit is 64 KiB); the second job reads all of them.
        try cluster.submit(SweepEndToEndTests.diagnostic("many", #""jobs": 2, "chained": true, "outputs": 3000"#))
        try cluster.startWorker("a")
        _ = try cluster.wait("many", seconds: 180) { $0["done"] == 2 }
        let keys = try Self.jobKeys(cluster, worker: "a")
        #expect(keys.count == 2)
        let store = try JobStore(path: cluster.state.url.appendingPathComponent("state.sqlite").path)
        let artifacts = try ArtifactStore(root: cluster.state.url)
        for (i, short) in keys.enumerated() {
            let key = try store.resolve(short).hex
            let outputs = try store.outputs(of: key)
            #expect(outputs.count == 3001)
            let part = try store.artifact(try #require(outputs["part/02999.bin"]), in: artifacts)
            let prefix = Data("\(key) part/02999.bin ".utf8)
            #expect(part.starts(with: prefix) && part.count == prefix.count + 200)
            let echo = try JSONSerialization.jsonObject(with: store.artifact(outputs["echo.json"]!, in: artifacts)) as? [String: String]
            // The second job was handed all 3,001 of the first one's artifacts (through an inputs manifest).
            #expect(echo?["inputs"] == (i == 0 ? "" : "previous:3001"), "\(echo ?? [:])")
        }
    }

    @Test func aResultTheCoordinatorRefusesFailsItsAttemptWithTheReason() throws {
        let cluster = try Cluster(leaseSeconds: 2)
        try cluster.startCoordinator()
        try cluster.submit(SweepEndToEndTests.diagnostic("refused", #""jobs": 1, "outputs": 600"#, attempts: 2))
        // This worker lists every output in the done header, as the protocol
        // did before manifests: 600 outputs make a header of about 80 KiB.
        try cluster.startWorker("old", ["--header-only-results-for-fault-tests"])
        // Refused twice, each time failing the attempt at once (not after a
        // lease expiry, and not never): dead after its two attempts.
        let final = try cluster.wait("refused", seconds: 30) { $0["dead"] == 1 }
        #expect(final["leased"] == nil)
        let status = try cluster.command(["status", "refused"])
        #expect(status.contains("2/2") && status.contains("refused the worker's done message") && status.contains("header of"), "\(status)")
        // The worker is not stuck on the refused result: it drains and leaves at once.
        cluster.signalWorker("old", SIGTERM)
        let deadline = Date().addingTimeInterval(10)
        while cluster.workers["old"]!.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        #expect(!cluster.workers["old"]!.isRunning, "\(cluster.tail())")
        let log = try String(contentsOf: cluster.state.url.appendingPathComponent("worker-old.log"), encoding: .utf8)
        #expect(log.contains("refused the done message") && !log.contains("asking again"), "\(log)")
    }
}
