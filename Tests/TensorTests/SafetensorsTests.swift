import Foundation
import Testing
import TestSupport
import AtomicWrite
@testable import Tensor

@Suite struct SafetensorsTests {
    @Test func roundTripKeepsNamesShapesValuesAndMetadata() throws {
        let dir = try TemporaryDirectory()
        let url = dir.url.appendingPathComponent("w.safetensors")
        let tensors = ["conv.weight": Check.random([4, 3, 3, 3], seed: 1), "bias": Tensor(shape: [2], storage: [1.5, -2])]
        try SafetensorsFile.write(tensors, metadata: ["format": "pt"], to: url)
        let file = try SafetensorsFile(contentsOf: url)
        #expect(file.metadata == ["format": "pt"])
        #expect(Set(file.names) == ["conv.weight", "bias"])
        for (name, t) in tensors { #expect(try file.tensor(name) == t) }
        let raw = try Data(contentsOf: url)
        let headerLength = raw.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        #expect(headerLength % 8 == 0)
    }

    /// A header with the given JSON and `dataBytes` bytes of data.
    func file(_ json: String, dataBytes: [UInt8] = [], lengthOverride: UInt64? = nil) -> Data {
        var d = Data()
        let header = Data(json.utf8)
        withUnsafeBytes(of: (lengthOverride ?? UInt64(header.count)).littleEndian) { d.append(contentsOf: $0) }
        d.append(header)
        d.append(contentsOf: dataBytes)
        return d
    }

    @Test func halfAndBFloat16AreReadAsFloat() throws {
        // F16: 0x3C00 = 1, 0xC000 = -2, 0x0001 = 2^-24; BF16: 0x3FC0 = 1.5.
        let json = #"{"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[6,8]}}"#
        let f = try SafetensorsFile(data: file(json, dataBytes: [0x00, 0x3C, 0x00, 0xC0, 0x01, 0x00, 0xC0, 0x3F]),
                                    source: "mem")
        #expect(try f.tensor("h").storage == [1, -2, 0x1p-24])
        #expect(try f.tensor("b").storage == [1.5])
    }

    @Test(arguments: [
        (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}"#, "outside the 8-byte data section"),
        (#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, "needs 12 bytes"),
        (#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}}"#, "negative dimension"),
        (#"{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#, "unknown dtype"),
        (#"{"a":{"dtype":"F32","shape":[2]}}"#, "'data_offsets' must be two integers"),
        (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, "overlaps"),
        (#"{"a": [1, 2"#, "not valid JSON"),
        (#"[1, 2]"#, "not a JSON object"),
        (#"{"__metadata__":{"k":3}}"#, "not a string"),
    ])
    func malformedHeadersAreRejectedWithTheReason(json: String, reason: String) {
        do {
            _ = try SafetensorsFile(data: file(json, dataBytes: Array(repeating: 0, count: 8)), source: "bad.safetensors")
            Issue.record("accepted a malformed header: \(json)")
        } catch {
            #expect("\(error)".contains(reason), "\(error)")
            #expect("\(error)".contains("bad.safetensors"))
        }
    }

    @Test func truncatedFilesAreRejected() {
        #expect(throws: SafetensorsError.self) { try SafetensorsFile(data: Data([1, 2, 3]), source: "t") }
        #expect(throws: SafetensorsError.self) {
            try SafetensorsFile(data: file("{}", lengthOverride: 4096), source: "t")
        }
    }

    @Test func missingTensorAndMissingFileNameThemselves() throws {
        let f = try SafetensorsFile(data: SafetensorsFile.encode(["x": Tensor(zeros: [1])]), source: "m.safetensors")
        #expect(throws: SafetensorsError.missingTensor(file: "m.safetensors", tensor: "y")) { try f.tensor("y") }
        do {
            _ = try SafetensorsFile(contentsOf: URL(fileURLWithPath: "/nonexistent/w.safetensors"))
            Issue.record("opened a missing file")
        } catch {
            #expect("\(error)".contains("/nonexistent/w.safetensors"))
        }
    }

    @Test func integerTensorsAreListedButNotReadAsFloat() throws {
        let json = #"{"i":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#
        let f = try SafetensorsFile(data: file(json, dataBytes: Array(repeating: 0, count: 8)), source: "i")
        #expect(f.entries.first?.dtype == "I64")
        #expect(throws: SafetensorsError.self) { try f.tensor("i") }
    }
}

@Suite struct AtomicFileTests {
    @Test func replacesTheFileWholeAndLeavesNothingBeside() throws {
        let dir = try TemporaryDirectory()
        let target = dir.url.appendingPathComponent("a.bin")
        try AtomicFile.write(Data([1, 2, 3]), to: target)
        try AtomicFile.write(Data([4, 5]), to: target)
        #expect(try Data(contentsOf: target) == Data([4, 5]))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.url.path) == ["a.bin"])
    }

    @Test func aMissingFolderIsAnErrorAndNoPartialFileStays() throws {
        let dir = try TemporaryDirectory()
        #expect(throws: (any Error).self) { try AtomicFile.write(Data([1]), to: dir.url.appendingPathComponent("no/such/a.bin")) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.url.path).isEmpty)
    }
}
