import Foundation
import Testing

/// CURVE between coordinator and workers: an allowed key works, an unknown one is refused.
@Suite struct CurveEndToEndTests {
    @Test func onlyWorkersOnTheAllowlistGetJobs() throws {
        let cluster = try Cluster()
        let keys = cluster.state.url.appendingPathComponent("keys"), allowed = cluster.state.url.appendingPathComponent("allowed")
        try cluster.command(["keys", "--out", keys.path, "coordinator", "good", "stranger"], withState: false)
        try FileManager.default.createDirectory(at: allowed, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: keys.appendingPathComponent("good.pub"), to: allowed.appendingPathComponent("good.pub"))
        let secretMode = try FileManager.default.attributesOfItem(atPath: keys.appendingPathComponent("good.key").path)[.posixPermissions] as? NSNumber
        #expect(secretMode?.intValue == 0o600)
        try cluster.startCoordinator(["--curve-secret", keys.appendingPathComponent("coordinator.key").path, "--allow", allowed.path])
        try cluster.submit(#"{"name": "c", "diagnostic": {"jobs": 5}}"#)
        func curve(_ name: String) -> [String] {
            ["--curve-server-key", keys.appendingPathComponent("coordinator.pub").path, "--curve-secret", keys.appendingPathComponent("\(name).key").path]
        }
        try cluster.startWorker("stranger", curve("stranger"))
        Thread.sleep(forTimeInterval: 2)
        #expect(try cluster.counts("c") == ["ready": 5], "an unknown key gets nothing")
        try cluster.startWorker("good", curve("good"))
        _ = try cluster.wait("c", seconds: 30) { $0["done"] == 5 }
        let log = try String(contentsOf: cluster.logs.first { $0.lastPathComponent.hasPrefix("coordinator") }!, encoding: .utf8)
        #expect(log.contains("refused a worker with an unknown CURVE key"), "\(log)")
        // Without keys, a coordinator refuses to serve a non-local endpoint.
        let plain = try? cluster.command(["serve", "--bind", "tcp://0.0.0.0:0"])
        #expect(plain == nil)
    }
}
