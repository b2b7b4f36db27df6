import Foundation

/// Whole-or-nothing file writes: the bytes go to a temporary file beside
/// the destination, which is then renamed over it (one `rename(2)` on the
/// same file system), so a reader or a crash never sees half a file.
///
/// Foundation's `Data.write(to:options: .atomic)` on Linux stages the
/// write in a fresh `/tmp/TemporaryDirectory.*` folder that it never
/// removes — one leaked folder per write, thousands per method run.
public enum AtomicFile {
    public static func write(_ data: Data, to url: URL) throws {
        let temporary = url.deletingLastPathComponent()
            .appendingPathComponent("\(partialPrefix(url))\(UUID().uuidString).partial")
        do {
            try data.write(to: temporary)
            if rename(temporary.path, url.path) != 0 {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: url.path,
                                                               NSLocalizedDescriptionKey: String(cString: strerror(errno))])
            }
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw error
        }
    }

    /// Removes what writes to `url` cut off by a kill left beside it (a
    /// write in progress elsewhere loses its file and fails).
    public static func removePartials(of url: URL) {
        let folder = url.deletingLastPathComponent(), prefix = partialPrefix(url)
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        where name.hasPrefix(prefix) && name.hasSuffix(".partial") {
            try? FileManager.default.removeItem(at: folder.appendingPathComponent(name))
        }
    }

    static func partialPrefix(_ url: URL) -> String { ".\(url.lastPathComponent)." }
}
