import Foundation
import Testing
@testable import Shared

@Suite struct WorkerResourcesTests {
    @Test func detectsThisMachine() {
        let here = WorkerResources.detect(tags: ["b", "a"])
        #expect(here.cores >= 1)
        #expect(here.memoryBytes > 0)
        #expect(here.tags == ["a", "b"])
        // 10% of what the machine (or its cgroup) holds is kept back.
        let available = min(ProcessInfo.processInfo.physicalMemory, MemoryLimit.cgroupLimit() ?? .max)
        #expect(here.memoryBytes < available && here.memoryBytes >= available / 10 * 9 - 100)
    }

    /// A cgroup tree as the kernel shows it, in a temporary folder: a
    /// container's v2 limit (here on a parent, as a Kubernetes pod's), a
    /// Slurm job's v1 limit, and no limit ("max", v1's huge number).
    @Test func theCgroupsMemoryLimitIsFoundOnTheGroupOrAnAncestor() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("cgroup-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        func write(_ path: String, _ text: String) throws {
            let url = root.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: false, encoding: .utf8)
        }
        try write("memory.max", "max\n")
        try write("kubepods/pod1/memory.max", "17179869184\n")
        try write("kubepods/pod1/worker/memory.max", "max\n")
        #expect(MemoryLimit.cgroupLimit(root: root.path, membership: "0::/kubepods/pod1/worker\n") == 16 << 30)
        try write("memory/slurm/uid_0/job_7/memory.limit_in_bytes", "51539607552\n")
        try write("memory/memory.limit_in_bytes", "9223372036854771712\n")
        let slurm = "12:pids:/slurm\n4:memory:/slurm/uid_0/job_7/step_0/task_0\n1:name=systemd:/\n0::/\n"
        #expect(MemoryLimit.cgroupLimit(root: root.path, membership: slurm) == 48 << 30)
        #expect(MemoryLimit.cgroupLimit(root: root.path, membership: "4:memory:/elsewhere\n0::/\n") == nil)
        #expect(MemoryLimit.cgroupLimit(root: root.path + "/none", membership: "0::/kubepods/pod1/worker\n") == nil)
    }

    @Test func satisfiesComparesEveryResource() {
        let worker = WorkerResources(cores: 4, memoryBytes: 8 << 30, tags: ["cpu", "avx512"])
        #expect(worker.satisfies(WorkerResources(cores: 2, memoryBytes: 1 << 30, tags: ["cpu"])))
        #expect(!worker.satisfies(WorkerResources(cores: 8, memoryBytes: 1 << 30)))
        #expect(!worker.satisfies(WorkerResources(cores: 1, memoryBytes: 16 << 30)))
        #expect(!worker.satisfies(WorkerResources(cores: 1, memoryBytes: 1, tags: ["gpu"])))
    }

    @Test func jsonRoundTrip() throws {
        let r = WorkerResources(cores: 2, memoryBytes: 123, tags: ["x"])
        #expect(try JSONDecoder().decode(WorkerResources.self, from: JSONEncoder().encode(r)) == r)
    }

    @Test func linkedZeroMQReportsAVersion() {
        #expect(NativeVersions.zeroMQ.split(separator: ".").count == 3)
        #expect(!NativeVersions.zeroMQ.hasPrefix("0."))
    }
}
