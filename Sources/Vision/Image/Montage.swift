/// Lays images out in a grid on a plain canvas: each row's images are
/// resized to `height` (keeping their aspect) and placed left to right.
public enum Montage {
    public static func grid(_ rows: [[Image]], height: Int, gap: Int = 6, background: UInt8 = 255) -> Image {
        let scaled = rows.map { row in
            row.map { image -> Image in
                let rgb = image.channels == 3 ? image : image.rgb()
                let w = max(1, Int((Double(rgb.width) * Double(height) / Double(rgb.height)).rounded()))
                return rgb.resizedSmooth(width: w, height: height)
            }
        }
        let width = scaled.map { $0.reduce(gap) { $0 + $1.width + gap } }.max() ?? gap
        let total = gap + rows.count * (height + gap)
        var canvas = Image(width: width, height: total, channels: 3, value: background)
        for (r, row) in scaled.enumerated() {
            var x = gap
            let y = gap + r * (height + gap)
            for image in row {
                for yy in 0..<image.height {
                    let dst = ((y + yy) * width + x) * 3
                    canvas.pixels.replaceSubrange(dst..<(dst + image.width * 3),
                                                  with: image.pixels[(yy * image.width * 3)..<((yy + 1) * image.width * 3)])
                }
                x += image.width + gap
            }
        }
        return canvas
    }
}

extension Image {
    /// The image as 3-channel RGB (gray replicated; alpha dropped).
    public func rgb() -> Image {
        if channels == 3 { return self }
        var out = Image(width: width, height: height, channels: 3)
        for i in 0..<(width * height) {
            let v = pixels[i * channels]
            let (r, g, b) = channels >= 3 ? (v, pixels[i * channels + 1], pixels[i * channels + 2]) : (v, v, v)
            out.pixels[i * 3] = r; out.pixels[i * 3 + 1] = g; out.pixels[i * 3 + 2] = b
        }
        return out
    }
}
