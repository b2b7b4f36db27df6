import CZeroMQ
import Foundation

/// What a worker announces to the coordinator: the resources a stage may
/// need and the tags a sweep may ask for. Sent in the hello message.
public struct WorkerResources: Codable, Equatable, Sendable {
    public var cores: Int
    public var memoryBytes: UInt64
    public var tags: [String]
    /// The machine kind: processor architecture and the BLAS kernels it
    /// runs (e.g. `x86_64 OpenBLAS Zen`). Workers of one kind compute the
    /// same bytes for a stage; a verification re-run compares bytes
    /// between them and metrics within the stage's tolerance across kinds.
    /// Nil from workers that do not say.
    public var machine: String?

    public init(cores: Int, memoryBytes: UInt64, tags: [String] = [], machine: String? = nil) {
        self.cores = cores
        self.memoryBytes = memoryBytes
        self.tags = tags.sorted()
        self.machine = machine
    }

    /// This machine's cores, and the memory stages may use: the physical
    /// memory or the process's cgroup limit (a container's, a Slurm job's
    /// under task/cgroup), whichever is lower, less ``headroom`` of it.
    public static func detect(tags: [String] = []) -> WorkerResources {
        let available = min(ProcessInfo.processInfo.physicalMemory, MemoryLimit.cgroupLimit() ?? .max)
        return WorkerResources(cores: ProcessInfo.processInfo.activeProcessorCount,
                               memoryBytes: available - available / 100 * UInt64(headroomPercent), tags: tags)
    }

    /// The share of the detected memory not offered to stages: the page
    /// cache of the images and artifacts a stage reads (charged to a cgroup
    /// too), the worker's own buffers, and estimates that run short on
    /// unforeseen data. An explicit `--memory-mib` is offered whole.
    public static let headroomPercent = 10

    /// True when every resource `needed` asks for is available here.
    public func satisfies(_ needed: WorkerResources) -> Bool {
        cores >= needed.cores && memoryBytes >= needed.memoryBytes && Set(needed.tags).isSubset(of: tags)
    }
}

/// The memory limit of this process's control group, where it has one.
public enum MemoryLimit {
    /// The lowest limit on the process's cgroup and its ancestors (v2
    /// `memory.max`, v1 `memory.limit_in_bytes`), nil where none is set.
    /// `root` and `membership` (the contents of /proc/self/cgroup) are
    /// parameters for tests.
    public static func cgroupLimit(root: String = "/sys/fs/cgroup", membership: String? = nil) -> UInt64? {
        let lines = membership ?? (try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)) ?? ""
        var candidates: [String] = []
        for line in lines.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            let path = String(fields[2])
            if fields[0] == "0" && fields[1].isEmpty {
                candidates += ancestors(path).map { "\(root)\($0)/memory.max" }
            } else if fields[1].split(separator: ",").contains("memory") {
                candidates += ancestors(path).map { "\(root)/memory\($0)/memory.limit_in_bytes" }
            }
        }
        let limits = candidates.compactMap { file -> UInt64? in
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
            // "max" (v2) or a huge page-rounded number (v1): no limit.
            guard let value = UInt64(text.trimmingCharacters(in: .whitespacesAndNewlines)), value < 1 << 62 else { return nil }
            return value
        }
        return limits.min()
    }

    /// "/a/b" -> ["/a/b", "/a", ""] (the last is the hierarchy's root).
    static func ancestors(_ path: String) -> [String] {
        var parts = path.split(separator: "/").map(String.init), out: [String] = []
        while !parts.isEmpty {
            out.append("/" + parts.joined(separator: "/"))
            parts.removeLast()
        }
        return out + [""]
    }
}

/// Versions of the native libraries the system talks through.
public enum NativeVersions {
    /// libzmq's version as "major.minor.patch".
    public static var zeroMQ: String {
        var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
        zmq_version(&major, &minor, &patch)
        return "\(major).\(minor).\(patch)"
    }
}
