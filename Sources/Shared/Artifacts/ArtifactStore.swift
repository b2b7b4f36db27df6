import AtomicWrite
import Crypto
import Foundation

/// A problem with a blob: unknown, corrupt on disk, or an upload that does
/// not add up.
public enum ArtifactError: Error, Equatable, CustomStringConvertible {
    case badHash(String)
    case missing(String)
    case corrupt(hash: String, actual: String, size: Int)
    case outOfOrder(hash: String, expected: Int, got: Int)
    case tooLarge(hash: String, total: Int)
    case mismatch(hash: String, actual: String)

    public var description: String {
        switch self {
        case .badHash(let h): "'\(h.prefix(80))' is not a SHA-256 hex digest"
        case .missing(let h): "no blob \(h)"
        case .corrupt(let h, let actual, let size): "blob \(h) is corrupt on disk: its \(size) bytes hash to \(actual)"
        case .outOfOrder(let h, let expected, let got): "upload of \(h): chunk at offset \(got), expected \(expected)"
        case .tooLarge(let h, let total): "upload of \(h): more bytes than the announced \(total)"
        case .mismatch(let h, let actual): "upload of \(h): the bytes received hash to \(actual)"
        }
    }
}

/// Content-addressed blobs under a folder: `blobs/<first two digits>/<sha256>`.
/// Only a validated 64-digit hash ever becomes a path, so nothing from the
/// network names a file. Blobs are written whole: an upload grows in
/// `incoming/` and is renamed into place only after its hash is verified.
public final class ArtifactStore: @unchecked Sendable {
    public let root: URL
    /// Largest blob accepted from the network.
    public static let maximumBlobBytes = 4 << 30

    public init(root: URL) throws {
        self.root = root
        for folder in ["blobs", "incoming"] {
            try FileManager.default.createDirectory(at: root.appendingPathComponent(folder), withIntermediateDirectories: true)
        }
    }

    public static func hash(_ data: Data) -> String {
        hexDigest(SHA256.hash(data: data))
    }

    public static func isValid(_ hash: String) -> Bool {
        hash.utf8.count == 64 && hash.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    func url(_ hash: String) throws -> URL {
        guard Self.isValid(hash) else { throw ArtifactError.badHash(hash) }
        return root.appendingPathComponent("blobs/\(hash.prefix(2))/\(hash)")
    }

    public func size(_ hash: String) -> Int? {
        guard let url = try? url(hash),
              let attributes = try? FileManager.default.attributesOfItem(atPath: url.path) else { return nil }
        return (attributes[.size] as? NSNumber)?.intValue
    }

    public func contains(_ hash: String) -> Bool { size(hash) != nil }

    /// Stores bytes under their hash (a no-op when present); returns the hash.
    @discardableResult
    public func put(_ data: Data) throws -> String {
        let hash = Self.hash(data)
        let target = try url(hash)
        if FileManager.default.fileExists(atPath: target.path) { return hash }
        try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
        try AtomicFile.write(data, to: target)
        return hash
    }

    /// The whole blob, verified against its hash (a truncated or altered
    /// blob is an error, never used).
    public func read(_ hash: String) throws -> Data {
        let file = try url(hash)
        guard let data = FileManager.default.contents(atPath: file.path) else { throw ArtifactError.missing(hash) }
        let actual = Self.hash(data)
        guard actual == hash else { throw ArtifactError.corrupt(hash: hash, actual: actual, size: data.count) }
        return data
    }

    /// `length` bytes from `offset` (fewer at the end). The blob is verified
    /// when the first slice is read.
    public func slice(_ hash: String, offset: Int, length: Int) throws -> (data: Data, total: Int) {
        let file = try url(hash)
        guard let handle = FileHandle(forReadingAtPath: file.path) else { throw ArtifactError.missing(hash) }
        defer { try? handle.close() }
        let total = Int(try handle.seekToEnd())
        if offset == 0 { _ = try read(hash) }
        try handle.seek(toOffset: UInt64(max(0, min(offset, total))))
        let data = try handle.read(upToCount: max(0, min(length, total - offset))) ?? Data()
        return (data, total)
    }

    /// Appends an upload's next chunk; when the last byte arrives the blob is
    /// verified and moved into place. Returns the bytes received so far.
    public func receive(_ hash: String, offset: Int, total: Int, chunk: Data, upload: String) throws -> Int {
        _ = try url(hash)
        guard total >= 0, total <= Self.maximumBlobBytes else { throw ArtifactError.tooLarge(hash: hash, total: total) }
        guard upload.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) else { throw ArtifactError.badHash(upload) }
        let partial = root.appendingPathComponent("incoming/\(hash).\(upload).partial")
        if contains(hash) {
            try? FileManager.default.removeItem(at: partial)
            return total
        }
        let have = (try? FileManager.default.attributesOfItem(atPath: partial.path)[.size] as? NSNumber)??.intValue ?? 0
        guard offset == have else { throw ArtifactError.outOfOrder(hash: hash, expected: have, got: offset) }
        guard offset + chunk.count <= total else { throw ArtifactError.tooLarge(hash: hash, total: total) }
        if offset == 0, !FileManager.default.createFile(atPath: partial.path, contents: nil) {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: partial.path])
        }
        let handle = try FileHandle(forWritingTo: partial)
        defer { try? handle.close() }
        try handle.seekToEnd()
        do { try handle.write(contentsOf: chunk) } catch {
            // A chunk written in part (the volume filled) is cut off again, so the same chunk can come again.
            try? handle.truncate(atOffset: UInt64(offset))
            throw error
        }
        let received = offset + chunk.count
        if received == total {
            let data = try Data(contentsOf: partial)
            let actual = Self.hash(data)
            guard actual == hash else {
                try? FileManager.default.removeItem(at: partial)
                throw ArtifactError.mismatch(hash: hash, actual: actual)
            }
            let target = try url(hash)
            var moved = rename(partial.path, target.path) == 0
            if !moved {   // the first blob under this two-digit prefix: make the folder, then move
                try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
                moved = rename(partial.path, target.path) == 0
            }
            guard moved else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: target.path]) }
        }
        return received
    }

    /// Removes every blob and every partial upload (a worker's cache made
    /// room); returns how many blobs went and their bytes.
    @discardableResult
    public func clear() throws -> (blobs: Int, bytes: Int) {
        var blobs = 0, bytes = 0
        let manager = FileManager.default
        for folder in ["blobs", "incoming"] {
            let url = root.appendingPathComponent(folder)
            guard let walker = manager.enumerator(at: url, includingPropertiesForKeys: [.fileSizeKey, .isRegularFileKey]) else { continue }
            for case let file as URL in walker {
                let values = try? file.resourceValues(forKeys: [.fileSizeKey, .isRegularFileKey])
                guard values?.isRegularFile == true else { continue }
                try manager.removeItem(at: file)
                blobs += 1
                bytes += values?.fileSize ?? 0
            }
        }
        return (blobs, bytes)
    }

    /// Removes every blob not in `keep`; returns how many went.
    @discardableResult
    public func collectGarbage(keep: Set<String>) throws -> Int {
        var removed = 0
        let blobs = root.appendingPathComponent("blobs")
        for prefix in try FileManager.default.contentsOfDirectory(atPath: blobs.path) {
            let folder = blobs.appendingPathComponent(prefix)
            for name in try FileManager.default.contentsOfDirectory(atPath: folder.path) where !keep.contains(name) {
                try FileManager.default.removeItem(at: folder.appendingPathComponent(name))
                removed += 1
            }
        }
        return removed
    }
}
