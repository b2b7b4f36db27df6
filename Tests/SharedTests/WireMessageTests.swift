import Foundation
import Testing
@testable import Shared

@Suite struct WireMessageTests {
    static let key = JobKey.of(kind: .diagnostic, parameters: [:], inputs: [:])
    static let all: [WireMessage] = [
        .hello(.init(worker: "w", resources: WorkerResources(cores: 2, memoryBytes: 1 << 30, tags: ["x"]), kinds: [.diagnostic, .evaluate], inFlight: [3])),
        .welcome(.init(adopted: [3], dropped: [4], heartbeatSeconds: 2)),
        .ready(1), .ready(3), .noJob(.init(retryAfterSeconds: 0.5)),
        .job(.init(token: 7, key: key, kind: .bankFit, category: "c", parameters: #"{"a":1}"#, inputs: ["masks": ["m.png": String(repeating: "a", count: 64)]])),
        .heartbeat(.init(tokens: [1, 2])), .helloAgain,
        .heartbeat(.init(tokens: [2], progress: [.init(token: 2, done: 34, total: 100, unit: "epochs")])),
        .fetch(.init(hash: String(repeating: "b", count: 64), offset: 0, length: 10)),
        .chunk(.init(hash: String(repeating: "b", count: 64), offset: 0, total: 3), Data([1, 2, 3])),
        .put(.init(token: 7, hash: String(repeating: "c", count: 64), offset: 0, total: 2), Data([9, 9])),
        .putAck(.init(hash: String(repeating: "c", count: 64), received: 2, error: nil)),
        .done(.init(token: 7, outputs: ["o": .init(hash: String(repeating: "c", count: 64), size: 2, inline: true)],
                    metrics: ["logical_auroc": 0.9], seconds: 1.5, next: 2), Data([4, 2])),
        .results([.init(.init(token: 9, outputs: ["a": .init(hash: String(repeating: "c", count: 64), size: 2, inline: true),
                                                  "b": .init(hash: String(repeating: "d", count: 64), size: 1, inline: true)],
                              metrics: [:], seconds: 0.001), Data([1, 2, 3])),
                  .init(.init(token: 10, outputs: ["big": .init(hash: String(repeating: "e", count: 64), size: 5_000_000)], metrics: [:],
                              seconds: 0.002), Data()),
                  .init(.init(token: 11, outputs: ["a": .init(hash: String(repeating: "f", count: 64), size: 1, inline: true)], metrics: [:],
                              seconds: 0.003, next: 3), Data([7]))]),
        .fail(.init(token: 7, error: "boom", permanent: true)),
        .ack(.init(token: 7, accepted: false)), .ack(.init(token: 7, accepted: false, error: "output 'x' was not uploaded whole")),
        .cancel(.init(tokens: [7])), .bye,
        .job(.init(token: 8, key: key, kind: .unetTrain, category: "c", parameters: "{}", inputs: [:], inputsManifest: String(repeating: "d", count: 64))),
        .done(.init(token: 8, outputs: [:], manifest: .init(hash: String(repeating: "e", count: 64), size: 99), metrics: [:], seconds: 2), Data()),
        .refused(.init(type: "done", token: 8, problem: "bad message: done header of 70000 bytes")),
        .refused(.init(type: "?", token: nil, problem: "bad message: 2 frames (expected 3 or 4)")),
        .release(.init(token: 9, reason: "worker w drained 600 s after its signal")),
    ]

    @Test func everyMessageSurvivesTheWire() throws {
        for message in Self.all { #expect(try WireMessage.decode(message.encode()) == message) }
    }

    @Test func inlineOutputsAreSplitFromThePayloadInNameOrder() {
        let done = WireMessage.Done(token: 1, outputs: ["b": .init(hash: "h2", size: 1, inline: true), "a": .init(hash: "h1", size: 2, inline: true),
                                                        "c": .init(hash: "h3", size: 9)], metrics: [:], seconds: 0)
        let parts = done.inlineOutputs(Data([1, 2, 3]))
        #expect(parts?.map(\.name) == ["a", "b"] && parts?.map(\.data) == [Data([1, 2]), Data([3])])
        #expect(done.inlineOutputs(Data([1, 2])) == nil && done.inlineOutputs(Data([1, 2, 3, 4])) == nil)
    }

    /// Inputs and outputs by the thousand go as manifest blobs, read back as they were.
    @Test func manifestsRoundTripAndRejectGarbage() throws {
        let hash = String(repeating: "f", count: 64)
        let outputs = Dictionary(uniqueKeysWithValues: (0..<5_000).map { ("masks/train/good/\($0).png", WireMessage.Output(hash: hash, size: $0, inline: $0 % 2 == 0)) })
        let data = Manifest.encode(outputs: outputs)
        #expect(data.count > WireMessage.maximumHeaderBytes)
        #expect(try Manifest.outputs(data) == outputs)
        let inputs = ["masks": Dictionary(uniqueKeysWithValues: (0..<5_000).map { ("\($0).png", hash) })]
        #expect(try Manifest.inputs(Manifest.encode(inputs: inputs)) == inputs)
        // Canonical: the same map gives the same bytes, so the same blob.
        #expect(Manifest.encode(inputs: inputs) == Manifest.encode(inputs: inputs))
        #expect(throws: WireError.self) { try Manifest.outputs(Data("{\"outputs\": 3}".utf8)) }
        #expect(throws: WireError.self) { try Manifest.inputs(Data([0xff, 0x00])) }
    }

    /// A refusal says what it refused: the type, and the attempt when the header names one.
    @Test func aMessageThatDoesNotDecodeIsDescribedForItsRefusal() {
        let done = WireMessage.done(.init(token: 42, outputs: [:], metrics: [:], seconds: 0), Data()).encode()
        var oversized = done
        oversized[2] = done[2] + Data(repeating: 0x61, count: WireMessage.maximumHeaderBytes)
        #expect(throws: WireError.self) { try WireMessage.decode(oversized) }
        #expect(WireError.describe(oversized) == ("done", 42))
        var heartbeat = WireMessage.heartbeat(.init(tokens: [42])).encode()
        heartbeat[2] = Data(#"{"token": 42, "tokens": "x"}"#.utf8)
        #expect(WireError.describe(heartbeat) == ("heartbeat", 42))
        #expect(WireError.describe([done[0], done[1], Data([42, 0, 0])]) == ("done", nil))
        #expect(WireError.describe([Data([2]), Data([0xde, 0x61])]) == ("?a", nil))
        #expect(WireError.describe([Data([2])]) == ("?", nil))
    }

    @Test func badFramesAreNamedErrors() {
        let good = WireMessage.ready(1).encode()
        func problem(_ parts: [Data]) -> String? {
            do { _ = try WireMessage.decode(parts); return nil } catch { return "\(error)" }
        }
        #expect(problem([Data([ProtocolVersion.current + 1])] + good.dropFirst())?.contains("protocol version \(ProtocolVersion.current + 1)") == true)
        #expect(problem(Array(good.prefix(2)))?.contains("2 frames") == true)
        #expect(problem([good[0], Data("launch".utf8), good[2]])?.contains("unknown message type 'launch'") == true)
        #expect(problem([good[0], Data("job".utf8), Data("{}".utf8)])?.contains("job header") == true)
        #expect(problem([good[0], Data("chunk".utf8), Data("{}".utf8)])?.contains("without its payload") == true)
        #expect(problem(good + [Data()])?.contains("unexpected payload") == true)
        #expect(problem([good[0], good[1], Data(count: WireMessage.maximumHeaderBytes + 1)])?.contains("header of") == true)
        #expect(problem([good[0], Data([0xff, 0xfe]), good[2]])?.contains("unreadable message type") == true)
        #expect(problem(WireMessage.ready(0).encode())?.contains("ready asks for 0 jobs") == true)
        #expect(problem(WireMessage.ready(WireMessage.maximumResults + 1).encode())?.contains("ready asks for 65 jobs") == true)
    }

    /// A results message's payload is exactly its results' inline outputs, in order; anything else is named.
    @Test func malformedResultsAreNamedErrors() throws {
        func done(_ token: Int64, inline size: Int) -> WireMessage.Done {
            .init(token: token, outputs: ["o": .init(hash: String(repeating: "a", count: 64), size: size, inline: true)], metrics: [:], seconds: 0)
        }
        let two = WireMessage.results([.init(done(1, inline: 2), Data([1, 2])), .init(done(2, inline: 1), Data([3]))]).encode()
        guard case .results(let decoded) = try WireMessage.decode(two) else { Issue.record("not results"); return }
        #expect(decoded.map(\.payload) == [Data([1, 2]), Data([3])] && decoded.map(\.done.token) == [1, 2])
        func problem(_ parts: [Data]) -> String? {
            do { _ = try WireMessage.decode(parts); return nil } catch { return "\(error)" }
        }
        #expect(problem([two[0], two[1], two[2], Data([1, 2])])?.contains("result 2 run past the 2-byte payload") == true)
        #expect(problem([two[0], two[1], two[2], Data([1, 2, 3, 4])])?.contains("1 payload bytes beyond") == true)
        #expect(problem(Array(two.prefix(3)))?.contains("results without its payload") == true)
        #expect(problem([two[0], two[1], Data([0, 0, 0, 0]), Data()])?.contains("0 results") == true)
        let many = WireMessage.results((0..<Int64(WireMessage.maximumResults + 1)).map { .init(done($0, inline: 0), Data()) }).encode()
        #expect(problem(many)?.contains("65 results") == true)
        // A count past the bytes left is caught before anything is read.
        #expect(problem([two[0], two[1], Data([0xff, 0xff, 0, 0]), Data()])?.contains("results counts 65535") == true)
    }

    /// The binary headers (job, done, ack) name what is wrong with them and where.
    @Test func malformedBinaryHeadersAreNamedErrors() {
        let job = WireMessage.job(.init(token: 7, key: Self.key, kind: .bankFit, category: "c", parameters: "{}", inputs: ["r": ["a": "h"]])).encode()
        let ack = WireMessage.ack(.init(token: 7, accepted: true)).encode()
        func problem(_ header: Data, like parts: [Data]) -> String? {
            do { _ = try WireMessage.decode([parts[0], parts[1], header] + parts.dropFirst(3)); return nil } catch { return "\(error)" }
        }
        #expect(problem(job[2].dropLast(), like: job)?.contains("job header: inputs manifest's presence runs past the end") == true)
        #expect(problem(job[2] + Data([0]), like: job)?.contains("1 bytes left over") == true)
        #expect(problem(ack[2].prefix(8) + Data([2, 0]), like: ack)?.contains("accepted is byte 2") == true)
        var hugeCount = [UInt8](job[2]); hugeCount[8] = 0xff; hugeCount[9] = 0xff
        #expect(problem(Data(hugeCount), like: job)?.contains("key's length counts") == true)
        var badKey = [UInt8](job[2]); badKey[12] = UInt8(ascii: "G")
        #expect(problem(Data(badKey), like: job)?.contains("is not 64 lowercase hex digits") == true)
        var badUTF8 = [UInt8](job[2]); badUTF8[12] = 0xff
        #expect(problem(Data(badUTF8), like: job)?.contains("key is not UTF-8") == true)
    }

    /// Random and mutated frames, bounded: decoding returns or throws, never traps or hangs.
    @Test func fuzzedFramesNeverCrashTheDecoder() {
        var rng = SystemRandomNumberGenerator()
        var accepted = 0, rejected = 0
        let seeds = Self.all.map { $0.encode() }
        for i in 0..<20_000 {
            var parts: [Data]
            if i % 2 == 0 {
                parts = seeds[Int.random(in: 0..<seeds.count, using: &rng)]
                let frame = Int.random(in: 0..<parts.count, using: &rng)
                var bytes = [UInt8](parts[frame])
                switch Int.random(in: 0..<4, using: &rng) {
                case 0 where !bytes.isEmpty: bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
                case 1 where !bytes.isEmpty: bytes.removeLast(Int.random(in: 1...bytes.count, using: &rng))
                case 2: bytes.insert(UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0...bytes.count, using: &rng))
                default: parts.removeLast()
                }
                if frame < parts.count { parts[frame] = Data(bytes) }
            } else {
                parts = (0..<Int.random(in: 0...5, using: &rng)).map { _ in
                    Data((0..<Int.random(in: 0...40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
                }
            }
            if (try? WireMessage.decode(parts)) != nil { accepted += 1 } else { rejected += 1 }
        }
        #expect(accepted + rejected == 20_000 && rejected > 10_000)
    }
}
