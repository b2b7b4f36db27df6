import AtomicWrite
import CPNG
import Foundation
import Tensor

/// Errors reading or writing PNG files. Each names the file.
public enum PNGError: Error, CustomStringConvertible, Equatable {
    /// The file could not be opened or read at all.
    case unreadable(file: String, reason: String)
    /// The bytes are not a valid PNG (truncated, bad CRC, bad signature …).
    case corrupt(file: String, detail: String)
    /// The image could not be encoded or written.
    case cannotWrite(file: String, detail: String)

    public var description: String {
        switch self {
        case let .unreadable(file, reason): "\(file): cannot read PNG: \(reason)"
        case let .corrupt(file, detail): "\(file): corrupt or unsupported PNG: \(detail)"
        case let .cannotWrite(file, detail): "\(file): cannot write PNG: \(detail)"
        }
    }
}

/// PNG decoding and encoding through libpng. All libpng calls (and its
/// setjmp/longjmp error handling) stay in the `CPNG` C target.
public enum PNG {
    /// How colour is decoded.
    public enum Mode: Sendable {
        /// Gray stays 1 channel, gray+alpha 2, RGB 3, RGBA 4; palette images
        /// expand to RGB(A); 16-bit samples are reduced to 8; low bit depths expand.
        case colours
        /// As `colours`, except palette images give their palette indices
        /// (1 channel): the reading for class-index masks.
        case indices
    }

    public static func read(_ url: URL, mode: Mode = .colours) throws -> Image {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw PNGError.unreadable(file: url.path, reason: (error as NSError).localizedDescription)
        }
        return try decode(data, source: url.path, mode: mode)
    }

    /// An image's width and height from its header alone (the IHDR chunk),
    /// without decoding: for checks that need only the size.
    public static func dimensions(_ url: URL) throws -> (width: Int, height: Int) {
        let head: Data
        do {
            let handle = try FileHandle(forReadingFrom: url)
            defer { try? handle.close() }
            head = try handle.read(upToCount: 24) ?? Data()
        } catch {
            throw PNGError.unreadable(file: url.path, reason: (error as NSError).localizedDescription)
        }
        let bytes = [UInt8](head)
        guard bytes.count == 24, bytes[0..<8].elementsEqual([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) else {
            throw PNGError.corrupt(file: url.path, detail: "no PNG signature")
        }
        guard bytes[12..<16].elementsEqual(Array("IHDR".utf8)) else {
            throw PNGError.corrupt(file: url.path, detail: "the first chunk is not IHDR")
        }
        func word(_ at: Int) -> Int { bytes[at..<(at + 4)].reduce(0) { $0 << 8 | Int($1) } }
        let (width, height) = (word(16), word(20))
        guard width > 0, height > 0 else { throw PNGError.corrupt(file: url.path, detail: "zero width or height") }
        return (width, height)
    }

    /// Decodes PNG bytes; `source` names them in errors.
    public static func decode(_ data: Data, source: String, mode: Mode = .colours) throws -> Image {
        var image = psad_png_image()
        var message = [CChar](repeating: 0, count: Int(PSAD_PNG_MESSAGE_SIZE))
        let status = data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> Int32 in
            let base = raw.bindMemory(to: UInt8.self).baseAddress
            return psad_png_decode(base, raw.count, mode == .indices ? PSAD_PNG_INDICES : PSAD_PNG_COLOURS,
                                   &image, &message)
        }
        guard status == 0 else {
            throw PNGError.corrupt(file: source, detail: text(message))
        }
        defer { psad_png_free(&image) }
        let count = Int(image.width) * Int(image.height) * Int(image.channels)
        let pixels = Array(UnsafeBufferPointer(start: image.pixels, count: count))
        return Image(width: Int(image.width), height: Int(image.height), channels: Int(image.channels), pixels: pixels)
    }

    /// Encodes an image. With a `palette` (RGB triples, at most 256) a
    /// 1-channel image is written as a palette image, its values the indices.
    public static func encode(_ image: Image, palette: [UInt8]? = nil, destination: String = "<memory>") throws -> Data {
        var message = [CChar](repeating: 0, count: Int(PSAD_PNG_MESSAGE_SIZE))
        var out: UnsafeMutablePointer<UInt8>?
        var size = 0
        if let palette, palette.count % 3 != 0 {
            throw PNGError.cannotWrite(file: destination, detail: "palette has \(palette.count) bytes, not RGB triples")
        }
        let status = image.pixels.withUnsafeBufferPointer { px in
            if let palette {
                return palette.withUnsafeBufferPointer { pal in
                    psad_png_encode(px.baseAddress, UInt32(image.width), UInt32(image.height), Int32(image.channels),
                                    pal.baseAddress, Int32(palette.count / 3), &out, &size, &message)
                }
            }
            return psad_png_encode(px.baseAddress, UInt32(image.width), UInt32(image.height), Int32(image.channels),
                                   nil, 0, &out, &size, &message)
        }
        guard status == 0, let out else {
            throw PNGError.cannotWrite(file: destination, detail: text(message))
        }
        defer { psad_png_free_buffer(out) }
        return Data(bytes: out, count: size)
    }

    /// Encodes and writes atomically (temporary file renamed into place).
    public static func write(_ image: Image, to url: URL, palette: [UInt8]? = nil) throws {
        let data = try encode(image, palette: palette, destination: url.path)
        do {
            try AtomicFile.write(data, to: url)
        } catch {
            throw PNGError.cannotWrite(file: url.path, detail: (error as NSError).localizedDescription)
        }
    }

    /// The NUL-terminated message the C layer filled in.
    private static func text(_ message: [CChar]) -> String {
        String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension PNG {
    /// The linked libpng's version.
    public static var libraryVersion: String { String(cString: psad_png_version()) }
}
