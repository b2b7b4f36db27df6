import Foundation
import Synchronization
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

    /// /proc/self/clear_refs, opened once for the process's life (-1: refused).
    static let clearRefs: Int32 = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC)

    /// Writes 5 to /proc/self/clear_refs: the kernel's high-water mark of
    /// the resident set becomes the resident set now. One system call on a
    /// file opened once: a worker does this once per job, thousands of
    /// times a second for short jobs.
    static func resetPeak() -> Bool {
        #if os(Linux)
        let fd = clearRefs
        guard fd >= 0 else { return false }
        var five: UInt8 = 0x35
        guard write(fd, &five, 1) == 1 else { return false }
        execBound.withLock { if $0 == nil { $0 = maxResidentKiB() } }
        return true
        #else
        return false
        #endif
    }

    /// `getrusage`'s `ru_maxrss` (KiB). On Linux it is the larger of the
    /// memory map's high-water mark (VmHWM, what ``resetPeak()`` resets)
    /// and the mark of the map an exec replaced (a launcher's, kept for the
    /// process's life).
    static func maxResidentKiB() -> Int? {
        var usage = rusage()
        guard getrusage(RUSAGE_SELF.rawValue, &usage) == 0, usage.ru_maxrss > 0 else { return nil }
        return usage.ru_maxrss
    }

    /// `ru_maxrss` just after the first reset: at least the exec's mark,
    /// so a figure above it is the map's own high-water mark (nil: no reset yet).
    static let execBound = Mutex<Int?>(nil)

    /// The process's peak resident set, MiB: `ru_maxrss` where it is above
    /// ``execBound`` (one system call), else VmHWM from /proc/self/status
    /// (where the kernel formats the whole status text: a tenth of a
    /// worker's time on no-op jobs when it was read every time).
    static func peakMebibytes() -> Double? {
        if let bound = execBound.withLock({ $0 }), let kib = maxResidentKiB(), kib > bound { return Double(kib) / 1024 }
        return statusPeakMebibytes()
    }

    /// VmHWM from /proc/self/status, read as bytes.
    static func statusPeakMebibytes() -> Double? {
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
