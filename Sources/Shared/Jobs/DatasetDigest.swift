import Crypto
import Foundation

/// The content of one category folder as one SHA-256: over every regular
/// file below it (hidden names skipped), in order of relative path, each
/// file's path, size and content hash. The coordinator puts it in the keys
/// of the stages that read the images at submit, so a dataset changed in
/// place (images added, a category regenerated) gets new jobs instead of
/// silently reusing what was computed from the old files; the worker checks
/// that what it reads has the same digest.
///
/// Reads every byte (about 1 GB/s here; the synthetic benchmark's category
/// folders take well under a second each).
public enum DatasetDigest {
    public struct Summary: Sendable, Equatable {
        public let hex: String
        public let files: Int
        public let bytes: Int
    }

    public struct DigestError: Error, CustomStringConvertible {
        public let description: String
    }

    public static func of(categoryAt root: URL) throws -> Summary {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw DigestError(description: "\(root.path): no such folder")
        }
        var paths: [String] = [], visited: Set<String> = []
        try collect(root, relative: "", into: &paths, visited: &visited)
        var total = SHA256(), bytes = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        for path in paths.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
            let (hash, size) = try fileHash(root.appendingPathComponent(path), buffer: buffer)
            bytes += size
            total.update(data: Data("\(path)\u{0}\(size)\u{0}\(hash)\n".utf8))
        }
        return Summary(hex: hexDigest(total.finalize()), files: paths.count, bytes: bytes)
    }

    /// Relative paths of the regular files below `dir`, through symbolic
    /// links (the stages read through them; a dataset is often a tree of
    /// links), each real folder once (a link cycle ends there).
    static func collect(_ dir: URL, relative: String, into paths: inout [String], visited: inout Set<String>) throws {
        guard visited.insert(dir.resolvingSymlinksInPath().path).inserted else { return }
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: dir.path) } catch {
            throw DigestError(description: "\(dir.path): cannot list the folder (\(error.localizedDescription))")
        }
        for name in names where !name.hasPrefix(".") {
            let url = dir.appendingPathComponent(name), path = relative.isEmpty ? name : "\(relative)/\(name)"
            var isDirectory: ObjCBool = false
            // fileExists follows links (stat, not lstat); a dangling link is skipped as nothing the stages could read.
            guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else { continue }
            if isDirectory.boolValue {
                try collect(url, relative: path, into: &paths, visited: &visited)
            } else {
                paths.append(path)
            }
        }
    }

    /// One file's SHA-256 and size, read through one buffer reused for every
    /// file (a fresh multi-megabyte buffer per file cost more than hashing
    /// the synthetic benchmark's small PNGs).
    static func fileHash(_ url: URL, buffer: UnsafeMutableRawBufferPointer) throws -> (String, Int) {
        let fd = open(url.path, O_RDONLY)
        guard fd >= 0 else { throw DigestError(description: "\(url.path): cannot open the file (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        var hasher = SHA256(), size = 0
        while true {
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n < 0 {
                if errno == EINTR { continue }
                throw DigestError(description: "\(url.path): read failed (\(String(cString: strerror(errno))))")
            }
            if n == 0 { break }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            size += n
        }
        return (hexDigest(hasher.finalize()), size)
    }
}
