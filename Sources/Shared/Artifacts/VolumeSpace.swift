import Foundation

/// Free space on a file system, and whether an error says it ran out.
public enum VolumeSpace {
    /// Bytes free for this process (not the root reserve) on the file system holding `path`.
    public static func freeBytes(at path: String) -> UInt64? {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return nil }
        return UInt64(info.f_bavail) * UInt64(info.f_frsize)
    }

    /// True when `error`, or an error under it, is ENOSPC (or EDQUOT, a quota spent).
    public static func isNoSpace(_ error: any Error) -> Bool {
        let ns = error as NSError
        if ns.domain == NSPOSIXErrorDomain, ns.code == Int(ENOSPC) || ns.code == Int(EDQUOT) { return true }
        if let posix = error as? POSIXError, posix.code == .ENOSPC || posix.code == .EDQUOT { return true }
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? any Error { return isNoSpace(underlying) }
        return false
    }

    /// "12.3 MiB free" (or "free space unknown").
    public static func describeFree(at path: String) -> String {
        freeBytes(at: path).map { String(format: "%.1f MiB free", Double($0) / 1_048_576) } ?? "free space unknown"
    }
}
