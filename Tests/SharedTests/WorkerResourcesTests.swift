import Foundation
import Testing
@testable import Shared

@Suite struct WorkerResourcesTests {
    @Test func detectsThisMachine() {
        let here = WorkerResources.detect(tags: ["b", "a"])
        #expect(here.cores >= 1)
        #expect(here.memoryBytes > 0)
        #expect(here.tags == ["a", "b"])
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
