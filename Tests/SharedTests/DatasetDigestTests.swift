import Foundation
import Testing
import TestSupport
import Crypto
@testable import Shared

@Suite struct DatasetDigestTests {
    let root: TemporaryDirectory

    init() throws { root = try TemporaryDirectory() }

    /// A new category folder holding these files (path, text).
    func folder(_ files: [(String, String)]) throws -> URL {
        let dir = root.url.appendingPathComponent(UUID().uuidString)
        for (path, text) in files {
            let url = dir.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(text.utf8).write(to: url)
        }
        return dir
    }

    static let files = [("train/good/000.png", "abc"), ("train/good/001.png", "defg"), ("psad-manifest.json", "{}")]

    @Test func theDigestIsOverPathsSizesAndContentInPathOrder() throws {
        let d = try DatasetDigest.of(categoryAt: try folder(Self.files))
        // Written in another order: the same digest.
        #expect(try DatasetDigest.of(categoryAt: try folder(Self.files.reversed())) == d)
        #expect(d.files == 3 && d.bytes == 9)
        // Worked out independently: SHA-256 over "path\0size\0sha256(content)\n" per file, paths in byte order.
        func sha(_ s: String) -> String { hexDigest(SHA256.hash(data: Data(s.utf8))) }
        let lines = ["psad-manifest.json\u{0}2\u{0}\(sha("{}"))\n", "train/good/000.png\u{0}3\u{0}\(sha("abc"))\n",
                     "train/good/001.png\u{0}4\u{0}\(sha("defg"))\n"]
        #expect(d.hex == sha(lines.joined()))
        #expect(sha("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")   // FIPS 180-2's example
    }

    @Test func aChangedByteARenameOrAnExtraFileChangesItAndHiddenFilesDoNot() throws {
        let base = try DatasetDigest.of(categoryAt: try folder(Self.files)).hex
        var changed = Self.files
        changed[0].1 = "abd"
        #expect(try DatasetDigest.of(categoryAt: try folder(changed)).hex != base)
        var renamed = Self.files
        renamed[1].0 = "train/good/002.png"
        #expect(try DatasetDigest.of(categoryAt: try folder(renamed)).hex != base)
        #expect(try DatasetDigest.of(categoryAt: try folder(Self.files + [("test/good/000.png", "")])).hex != base)
        #expect(try DatasetDigest.of(categoryAt: try folder(Self.files + [(".DS_Store", "x"), ("train/.complete", "")])).hex == base)
    }

    /// A category assembled from links (as datasets often are) digests the
    /// files the links reach: a change behind a link changes the digest, and
    /// a link back up the tree is read once, not forever.
    @Test func linksAreFollowedAndACycleEnds() throws {
        let fm = FileManager.default
        let real = try folder([("a.png", "abc"), ("sub/b.png", "defg")])
        let linked = root.url.appendingPathComponent("linked")
        try fm.createDirectory(at: linked, withIntermediateDirectories: true)
        try fm.createSymbolicLink(at: linked.appendingPathComponent("a.png"), withDestinationURL: real.appendingPathComponent("a.png"))
        try fm.createSymbolicLink(at: linked.appendingPathComponent("sub"), withDestinationURL: real.appendingPathComponent("sub"))
        try fm.createSymbolicLink(at: real.appendingPathComponent("sub/up"), withDestinationURL: real)
        let before = try DatasetDigest.of(categoryAt: linked)
        // a.png, sub/b.png, and through sub/up the real folder once more: its a.png (its sub/ is already read).
        #expect(before.files == 3 && before.bytes == 10)
        try Data("abd".utf8).write(to: real.appendingPathComponent("a.png"))
        #expect(try DatasetDigest.of(categoryAt: linked).hex != before.hex)
    }

    @Test func aMissingFolderIsNamed() throws {
        let missing = root.url.appendingPathComponent("no_such_category")
        #expect { try DatasetDigest.of(categoryAt: missing) } throws: { "\($0)".contains("no_such_category: no such folder") }
    }
}
