import Foundation
import Shared
import Testing

/// A coordinator fed garbage keeps serving.
@Suite struct HostileInputEndToEndTests {
    @Test func garbageFramesAreDroppedAndTheCoordinatorKeepsServing() throws {
        let cluster = try Cluster()
        try cluster.startCoordinator()
        try cluster.submit(#"{"name": "g", "diagnostic": {"jobs": 20}}"#)
        let socket = try ZeroMQSocket(try ZeroMQContext(), .dealer)
        try socket.connect(cluster.endpoint)
        var rng = SystemRandomNumberGenerator()
        let valid = WireMessage.ready(1).encode()
        for i in 0..<2_000 {
            var parts: [Data]
            switch i % 4 {
            case 0: parts = (0..<Int.random(in: 1...5, using: &rng)).map { _ in Data((0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }) }
            case 1: parts = [Data([9])] + valid.dropFirst()                                   // another protocol version
            case 2: parts = [valid[0], Data("done".utf8), Data("{\"token\": \"x\"}".utf8)]    // a header that does not decode
            default: parts = [valid[0], Data("ready".utf8), Data("{}".utf8), Data(count: 100)] // a payload where none belongs
            }
            try socket.send(parts)
        }
        // A message just over ZMQ_MAXMSGSIZE: libzmq drops the connection, not the coordinator.
        let big = try ZeroMQSocket(try ZeroMQContext(), .dealer)
        try big.connect(cluster.endpoint)
        try big.send([Data([1]), Data("put".utf8), Data("{}".utf8), Data(count: Int(ZeroMQSocket.maximumMessageBytes) + 1)])
        try cluster.startWorker("a")
        _ = try cluster.wait("g", seconds: 60) { $0["done"] == 20 }
        #expect(cluster.coordinator?.isRunning == true)
        let log = try String(contentsOf: cluster.logs[0], encoding: .utf8)
        #expect(log.contains("refused a bad message"))
    }
}

extension HostileInputEndToEndTests {
    /// A worker whose outputs arrive corrupted (hash mismatch): each result is
    /// refused and the attempt failed; a healthy worker then does the job.
    @Test func aCorruptedUploadIsRefusedAndTheJobRetried() throws {
        let cluster = try Cluster()
        try cluster.startCoordinator()
        try cluster.submit(#"{"name": "x", "max_attempts": 10, "diagnostic": {"jobs": 2}}"#)
        try cluster.startWorker("corrupt", ["--corrupt-outputs-for-fault-tests"])
        _ = try cluster.wait("x", seconds: 30) { ($0["failed"] ?? 0) + ($0["ready"] ?? 0) == 2 && ($0["failed"] ?? 0) >= 1 }
        cluster.signalWorker("corrupt", SIGKILL)
        try cluster.startWorker("healthy")
        _ = try cluster.wait("x", seconds: 30) { $0["done"] == 2 }
        let log = try String(contentsOf: cluster.logs[0], encoding: .utf8)
        #expect(log.contains("does not match its hash"), "\(log)")
    }
}
