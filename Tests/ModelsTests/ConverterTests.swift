import Foundation
import Testing
import TestSupport
import Tensor

/// ops/weights/pth2safetensors.py (Python standard library + numpy, no torch)
/// on checkpoints torch wrote (ops/fixtures/checkpoints.py).
@Suite struct ConverterTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    func checkpoint(_ name: String) throws -> URL {
        let url = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/checkpoints/\(name)")
        #expect(FileManager.default.fileExists(atPath: url.path))
        return url
    }

    /// Runs the converter; returns its exit status and standard error.
    func convert(_ input: URL, to output: URL, _ extra: [String] = []) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.repository.appendingPathComponent("ops/weights/pth2safetensors.py").path,
                             input.path, output.path] + extra
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = Pipe()
        try process.run()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, message)
    }

    @Test(arguments: [("tiny_zip.pt", [String]()), ("tiny_legacy.pth", []), ("nested_zip.pt", ["--key", "state_dict"])])
    func bothCheckpointFormatsConvertToTheSameTensorsAsTorch(name: String, extra: [String]) throws {
        let dir = try TemporaryDirectory()
        let out = dir.url.appendingPathComponent("o.safetensors")
        let (status, message) = try convert(try checkpoint(name), to: out, extra)
        #expect(status == 0, "\(message)")
        let ours = try SafetensorsFile(contentsOf: out)
        let expected = try SafetensorsFile(contentsOf: try checkpoint("tiny_expected.safetensors"))
        #expect(Set(ours.names) == Set(expected.names))
        for entry in expected.entries {
            let mine = try ours.entry(entry.name)
            #expect(mine.dtype == entry.dtype && mine.shape == entry.shape, "\(entry.name)")
            if ["F32", "F16"].contains(entry.dtype) {
                #expect(try ours.tensor(entry.name) == expected.tensor(entry.name), "\(entry.name)")
            }
        }
    }

    @Test func integerTensorsCanBeLeftOut() throws {
        let dir = try TemporaryDirectory()
        let out = dir.url.appendingPathComponent("o.safetensors")
        _ = try convert(try checkpoint("tiny_zip.pt"), to: out, ["--drop-int"])
        #expect(try !SafetensorsFile(contentsOf: out).names.contains("bn.num_batches_tracked"))
    }

    @Test func aCheckpointThatWouldRunCodeIsRefused() throws {
        let dir = try TemporaryDirectory()
        let out = dir.url.appendingPathComponent("o.safetensors")
        let marker = "/tmp/psad-converter-pwned"
        try? FileManager.default.removeItem(atPath: marker)
        let (status, message) = try convert(try checkpoint("malicious.pth"), to: out)
        #expect(status == 2)
        #expect(message.contains("refusing global") && message.contains("system"), "\(message)")
        #expect(!FileManager.default.fileExists(atPath: marker))
        #expect(!FileManager.default.fileExists(atPath: out.path))
    }

    @Test func aTruncatedCheckpointIsAnError() throws {
        let dir = try TemporaryDirectory()
        let cut = dir.url.appendingPathComponent("cut.pth")
        let data = try Data(contentsOf: try checkpoint("tiny_legacy.pth"))
        try data.prefix(data.count - 40).write(to: cut)
        let (status, message) = try convert(cut, to: dir.url.appendingPathComponent("o.safetensors"))
        #expect(status == 2)
        #expect(message.contains("cut.pth"), "\(message)")
    }
}
