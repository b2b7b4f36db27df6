import CZeroMQ
import Foundation

/// What a worker announces to the coordinator: the resources a stage may
/// need and the tags a sweep may ask for. Sent in the hello message.
public struct WorkerResources: Codable, Equatable, Sendable {
    public var cores: Int
    public var memoryBytes: UInt64
    public var tags: [String]

    public init(cores: Int, memoryBytes: UInt64, tags: [String] = []) {
        self.cores = cores
        self.memoryBytes = memoryBytes
        self.tags = tags.sorted()
    }

    /// This machine's cores and physical memory.
    public static func detect(tags: [String] = []) -> WorkerResources {
        WorkerResources(cores: ProcessInfo.processInfo.activeProcessorCount,
                        memoryBytes: ProcessInfo.processInfo.physicalMemory, tags: tags)
    }

    /// True when every resource `needed` asks for is available here.
    public func satisfies(_ needed: WorkerResources) -> Bool {
        cores >= needed.cores && memoryBytes >= needed.memoryBytes && Set(needed.tags).isSubset(of: tags)
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
