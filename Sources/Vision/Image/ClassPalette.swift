import Foundation

/// Colours for class-index masks stored as palette PNGs: the pixel value is
/// the class id, the palette only makes the file viewable. Sixteen fixed,
/// distinct colours first, then one generated colour per further class up
/// to 256 (MVTec LOCO's pushpins has 26 part classes).
public enum ClassPalette {
    /// The first 16 colours, RGB triples.
    public static let base: [UInt8] = [
        0, 0, 0, 230, 25, 75, 60, 180, 75, 255, 225, 25, 0, 130, 200, 245, 130, 48, 145, 30, 180, 70, 240, 240,
        240, 50, 230, 210, 245, 60, 250, 190, 212, 0, 128, 128, 220, 190, 255, 170, 110, 40, 255, 250, 200, 128, 0, 0,
    ]

    /// RGB triples for classes 0..<count: at least the 16 base colours (so a
    /// mask of up to 16 classes is written the same whatever its class
    /// count), at most 256. Colours past 16 step the hue by the golden
    /// angle at two brightness levels, so neighbouring ids differ.
    public static func rgb(count: Int) -> [UInt8] {
        let n = min(256, max(16, count))
        var out = base
        for i in 16..<n {
            let hue = (Double(i - 16) * 0.618_033_988_75).truncatingRemainder(dividingBy: 1)
            let value = i % 2 == 0 ? 0.95 : 0.65
            out += hsv(hue: hue, saturation: 0.75, value: value)
        }
        return out
    }

    static func hsv(hue: Double, saturation s: Double, value v: Double) -> [UInt8] {
        let h = hue * 6, sector = Int(h) % 6, f = h - Double(Int(h))
        let p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f))
        let (r, g, b): (Double, Double, Double) = switch sector {
        case 0: (v, t, p)
        case 1: (q, v, p)
        case 2: (p, v, t)
        case 3: (p, q, v)
        case 4: (t, p, v)
        default: (v, p, q)
        }
        return [r, g, b].map { UInt8(($0 * 255).rounded()) }
    }
}

extension PNG {
    /// A 1-channel class-index mask as a palette PNG with an entry for every
    /// index up to its largest (``ClassPalette/rgb(count:)``).
    public static func encodeMask(_ mask: Image, destination: String = "<memory>") throws -> Data {
        guard mask.channels == 1 else {
            throw PNGError.cannotWrite(file: destination, detail: "a class-index mask has 1 channel, not \(mask.channels)")
        }
        return try encode(mask, palette: ClassPalette.rgb(count: Int(mask.pixels.max() ?? 0) + 1), destination: destination)
    }

    /// ``encodeMask(_:destination:)``, written atomically.
    public static func writeMask(_ mask: Image, to url: URL) throws {
        guard mask.channels == 1 else {
            throw PNGError.cannotWrite(file: url.path, detail: "a class-index mask has 1 channel, not \(mask.channels)")
        }
        try write(mask, to: url, palette: ClassPalette.rgb(count: Int(mask.pixels.max() ?? 0) + 1))
    }
}
