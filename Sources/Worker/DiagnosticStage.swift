import Foundation
import Shared

/// What running a stage gave: output blobs and metrics, or an error
/// (permanent when retrying cannot help, e.g. bad input).
struct StageOutcome: Sendable {
    var outputs: [String: Data] = [:]
    var metrics: [String: Double] = [:]
    var error: String?
    var permanent = false
    /// The stage's wall time and peak resident memory in this process, MiB (nil where unknown).
    var seconds = 0.0
    var peakMiB: Double?
}

/// The diagnostic stage kind (not part of the method; for the scheduler's
/// load and fault tests): reads its inputs, sleeps `seconds`, fails when
/// told to (every time, or while a named file exists), and writes
/// `echo.json` naming itself and its inputs (with how many artifacts each
/// input role brought), plus `outputs` small blobs `part/NNNNN.bin` of
/// distinct bytes, and `big.bin` of `output_bytes` bytes when asked.
enum DiagnosticStage {
    struct Parameters: Decodable {
        var sweep: String
        var index: Int
        var seconds: Double
        var fail: String
        var failWhileExists: String
        var outputs: Int?
        var outputBytes: Int?

        /// Named here rather than converted from snake case on every decode.
        enum CodingKeys: String, CodingKey {
            case sweep, index, seconds, fail, outputs
            case failWhileExists = "fail_while_exists", outputBytes = "output_bytes"
        }
    }

    static func run(_ job: WireMessage.Job, inputs: [String: [String: Data]], progress: StageJobs.ProgressSink = { _, _, _ in },
                    cancelled: () -> Bool) -> StageOutcome {
        let p: Parameters
        do { p = try JSONDecoder().decode(Parameters.self, from: Data(job.parameters.utf8)) } catch {
            return StageOutcome(error: "diagnostic parameters: \(error)", permanent: true)
        }
        let start = Date(), end = start.addingTimeInterval(p.seconds)
        let tenths = Int((p.seconds * 10).rounded(.up))
        while Date() < end {
            if cancelled() { return StageOutcome(error: "cancelled") }
            progress(min(tenths, Int(Date().timeIntervalSince(start) * 10)), tenths, "tenths of a second")
            Thread.sleep(forTimeInterval: min(0.02, max(0, end.timeIntervalSinceNow)))
        }
        if !p.failWhileExists.isEmpty, FileManager.default.fileExists(atPath: p.failWhileExists) {
            return StageOutcome(error: "diagnostic job \(p.index) fails while \(p.failWhileExists) exists")
        }
        switch p.fail {
        case "transient": return StageOutcome(error: "diagnostic job \(p.index) fails on demand (transient)")
        case "permanent": return StageOutcome(error: "diagnostic job \(p.index) fails on demand (permanent)", permanent: true)
        default: break
        }
        let echo: [String: String] = ["sweep": p.sweep, "index": "\(p.index)", "key": job.key.hex,
                                      "inputs": inputs.keys.sorted().map { "\($0):\(inputs[$0]!.count)" }.joined(separator: ",")]
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var outputs = ["echo.json": (try? encoder.encode(echo)) ?? Data()]
        for i in 0..<(p.outputs ?? 0) {
            let name = "part/" + String(repeating: "0", count: max(0, 5 - "\(i)".count)) + "\(i).bin"
            outputs[name] = Data("\(job.key.hex) \(name) ".utf8) + Data(repeating: UInt8(i % 251), count: 200)
        }
        if let bytes = p.outputBytes, bytes > 0 {
            // Distinct per job (its key first), so no two jobs share the blob.
            var big = Data(job.key.hex.utf8)
            big.append(Data((0..<max(0, bytes - big.count)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ p.index) }))
            outputs["big.bin"] = big.prefix(bytes)
        }
        return StageOutcome(outputs: outputs, metrics: ["index": Double(p.index)])
    }
}
