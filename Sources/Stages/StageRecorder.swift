import Foundation
import Tensor

/// Wall time and peak resident memory of each stage of an in-process run.
///
/// On Linux the peak is the kernel's high-water mark (`VmHWM`), reset at
/// the start of each stage by writing 5 to `/proc/self/clear_refs` after
/// the allocator's free memory is handed back, so it counts what the stage
/// holds plus what earlier stages' results still occupy; where
/// the reset is refused the figure is the process's peak so far, and
/// `peakIsPerStage` says so.
public struct StageRecorder {
    public struct Record: Codable, Equatable, Sendable {
        public let stage: String
        public let seconds: Double
        /// Peak resident set during the stage, MiB (nil where unknown).
        public let peakMebibytes: Double?
    }

    public private(set) var records: [Record] = []
    public private(set) var peakIsPerStage = true
    private var started = Date()
    private let log: (String) -> Void

    public init(log: @escaping (String) -> Void = { _ in }) {
        self.log = log
        start()
    }

    /// Starts timing the next stage.
    public mutating func start() {
        Compute.releaseFreedMemory()
        if !Self.resetPeak() { peakIsPerStage = false }
        started = Date()
    }

    /// Ends the current stage under `name` and starts the next.
    public mutating func lap(_ name: String) {
        let record = Record(stage: name, seconds: Date().timeIntervalSince(started), peakMebibytes: Self.peakMebibytes())
        records.append(record)
        log(String(format: "%@: %.1f s, peak %@", name, record.seconds, record.peakMebibytes.map { String(format: "%.0f MiB", $0) } ?? "unknown"))
        start()
    }

    static func resetPeak() -> Bool {
        #if os(Linux)
        guard let handle = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return false }
        defer { try? handle.close() }
        return (try? handle.write(contentsOf: Data("5".utf8))) != nil
        #else
        return false
        #endif
    }

    static func peakMebibytes() -> Double? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.count >= 2, let kib = Double(fields[1]) { return kib / 1024 }
        }
        return nil
    }
}
