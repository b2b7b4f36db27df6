import Crypto
import Foundation

/// The content of one category folder as one SHA-256: over every regular
/// file below it (hidden names skipped), in order of relative path, each
/// file's path, size and content hash. The coordinator puts it in the
/// preprocess job's key at submit, so a dataset changed in place (images
/// added, a category regenerated) gets new jobs instead of silently reusing
/// what was computed from the old files; the worker checks that what it
/// reads has the same digest.
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
        var paths: [String] = []
        try collect(root, relative: "", into: &paths)
        var total = SHA256(), bytes = 0
        for path in paths.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            let (hash, size) = try fileHash(root.appendingPathComponent(path))
            bytes += size
            total.update(data: Data("\(path)\u{0}\(size)\u{0}\(hash)\n".utf8))
        }
        return Summary(hex: hexDigest(total.finalize()), files: paths.count, bytes: bytes)
    }

    static func collect(_ dir: URL, relative: String, into paths: inout [String]) throws {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: dir.path) } catch {
            throw DigestError(description: "\(dir.path): cannot list the folder (\(error.localizedDescription))")
        }
        for name in names where !name.hasPrefix(".") {
            let url = dir.appendingPathComponent(name), path = relative.isEmpty ? name : "\(relative)/\(name)"
            // Links are followed, as the stages read through them.
            let values = try? url.resourceValues(forKeys: [.isDirectoryKey, .isRegularFileKey])
            if values?.isDirectory == true {
                try collect(url, relative: path, into: &paths)
            } else if values?.isRegularFile == true {
                paths.append(path)
            }
        }
    }

    static func fileHash(_ url: URL) throws -> (String, Int) {
        guard let handle = FileHandle(forReadingAtPath: url.path) else {
            throw DigestError(description: "\(url.path): cannot open the file")
        }
        defer { try? handle.close() }
        var hasher = SHA256(), size = 0
        while true {
            let chunk: Data?
            do { chunk = try handle.read(upToCount: 1 << 22) } catch {
                throw DigestError(description: "\(url.path): read failed (\(error.localizedDescription))")
            }
            guard let chunk, !chunk.isEmpty else { break }
            hasher.update(data: chunk)
            size += chunk.count
        }
        return (hexDigest(hasher.finalize()), size)
    }
}
