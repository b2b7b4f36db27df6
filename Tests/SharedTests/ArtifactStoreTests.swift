import Foundation
import Testing
import TestSupport
@testable import Shared

@Suite struct ArtifactStoreTests {
    @Test func blobsAreStoredByTheirHashAndVerifiedWhenRead() throws {
        let dir = try TemporaryDirectory()
        let store = try ArtifactStore(root: dir.url)
        let hash = try store.put(Data("hello".utf8))
        // sha256("hello"), as `printf hello | sha256sum` prints it.
        #expect(hash == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        #expect(try store.read(hash) == Data("hello".utf8) && store.size(hash) == 5)
        // Truncated on disk: detected before use.
        let file = dir.url.appendingPathComponent("blobs/2c/\(hash)")
        try Data("hell".utf8).write(to: file)
        #expect(throws: ArtifactError.corrupt(hash: hash, actual: ArtifactStore.hash(Data("hell".utf8)), size: 4)) { try store.read(hash) }
        #expect(throws: ArtifactError.self) { try store.slice(hash, offset: 0, length: 10) }
    }

    @Test func uploadsArriveInOrderAndAreVerifiedBeforeTheyCount() throws {
        let dir = try TemporaryDirectory()
        let store = try ArtifactStore(root: dir.url)
        let data = Data((0..<100).map { UInt8($0) })
        let hash = ArtifactStore.hash(data)
        #expect(try store.receive(hash, offset: 0, total: 100, chunk: data[0..<40], upload: "7") == 40)
        #expect(throws: ArtifactError.outOfOrder(hash: hash, expected: 40, got: 50)) {
            try store.receive(hash, offset: 50, total: 100, chunk: data[50..<100], upload: "7")
        }
        #expect(!store.contains(hash))
        #expect(try store.receive(hash, offset: 40, total: 100, chunk: data[40..<100], upload: "7") == 100)
        #expect(try store.read(hash) == data)
        // A corrupted upload (the bytes do not match the announced hash) is refused and leaves nothing.
        let claimed = ArtifactStore.hash(Data("other".utf8))
        #expect(throws: ArtifactError.mismatch(hash: claimed, actual: ArtifactStore.hash(Data("otheR".utf8)))) {
            try store.receive(claimed, offset: 0, total: 5, chunk: Data("otheR".utf8), upload: "8")
        }
        #expect(!store.contains(claimed))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.url.appendingPathComponent("incoming").path).isEmpty)
    }

    @Test func onlyHashesBecomePaths() throws {
        let dir = try TemporaryDirectory()
        let store = try ArtifactStore(root: dir.url)
        for bad in ["../../etc/passwd", String(repeating: "A", count: 64), String(repeating: "a", count: 63) + "/", ""] {
            #expect(throws: ArtifactError.badHash(bad)) { try store.read(bad) }
        }
        #expect(throws: ArtifactError.self) { try store.receive("../x", offset: 0, total: 1, chunk: Data([1]), upload: "1") }
    }

    @Test func garbageCollectionKeepsOnlyReferencedBlobs() throws {
        let dir = try TemporaryDirectory()
        let store = try ArtifactStore(root: dir.url)
        let keep = try store.put(Data("a".utf8)), drop = try store.put(Data("b".utf8))
        #expect(try store.collectGarbage(keep: [keep]) == 1)
        #expect(store.contains(keep) && !store.contains(drop))
    }
}
