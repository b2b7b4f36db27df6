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
    private let log: ((String) -> Void)?

    public init(log: ((String) -> Void)? = nil) {
        self.log = log
        start()
    }

    /// Starts timing the next stage.
    public mutating func start() {
        Compute.releaseFreedMemory()
        if !Self.resetPeak() { peakIsPerStage = false }
        started = Date()
    }

    /// Ends the current stage under `name` and starts the next (unless
    /// `next` is false: the last stage, nothing more to time).
    public mutating func lap(_ name: String, next: Bool = true) {
        let record = Record(stage: name, seconds: Date().timeIntervalSince(started), peakMebibytes: Self.peakMebibytes())
        records.append(record)
        log?(String(format: "%@: %.1f s, peak %@", name, record.seconds, record.peakMebibytes.map { String(format: "%.0f MiB", $0) } ?? "unknown"))
        if next { start() }
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

    /// VmHWM from /proc/self/status, read as bytes (a worker reads it once
    /// per job, thousands of times a second for short jobs).
    static func peakMebibytes() -> Double? {
        let fd = open("/proc/self/status", O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 8192), count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
            if n <= 0 { break }
            count += n
        }
        return peak(inStatus: bytes[..<count])
    }

    /// The VmHWM line's kB as MiB, from the text of a /proc/PID/status.
    static func peak(inStatus status: ArraySlice<UInt8>) -> Double? {
        let label = Array("VmHWM:".utf8)
        var i = status.startIndex
        while i + label.count <= status.endIndex {
            if status[i] == label[0] && status[i..<(i + label.count)].elementsEqual(label) {
                var j = i + label.count, kib = 0, digits = 0
                while j < status.endIndex, status[j] == 32 || status[j] == 9 { j += 1 }
                while j < status.endIndex, (48...57).contains(status[j]) { kib = kib * 10 + Int(status[j] - 48); j += 1; digits += 1 }
                return digits > 0 ? Double(kib) / 1024 : nil
            }
            // Next line.
            while i < status.endIndex, status[i] != 10 { i += 1 }
            i += 1
        }
        return nil
    }
}
