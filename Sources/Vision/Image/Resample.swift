/// Geometry on images: crop, resize, pad. Images resample smoothly
/// (antialiased when shrinking); class-index masks by nearest neighbour.
/// Both map pixel centres the same way — output pixel i covers input
/// coordinates [i * s, (i + 1) * s) with s = in / out — so an image and its
/// mask stay aligned.
extension Image {
    /// The image without `top`, `left`, `bottom`, `right` pixels at its edges.
    public func cropped(top: Int, left: Int, bottom: Int, right: Int) -> Image {
        precondition(top >= 0 && left >= 0 && bottom >= 0 && right >= 0)
        let w = width - left - right, h = height - top - bottom
        precondition(w > 0 && h > 0, "cropping \(top),\(left),\(bottom),\(right) leaves nothing of \(width)x\(height)")
        var out = Image(width: w, height: h, channels: channels)
        for y in 0..<h {
            let src = ((y + top) * width + left) * channels
            out.pixels.replaceSubrange((y * w * channels)..<((y + 1) * w * channels),
                                       with: pixels[src..<(src + w * channels)])
        }
        return out
    }

    /// Nearest-neighbour resize: output pixel i takes input floor((i + 0.5) * in / out).
    public func resizedNearest(width ow: Int, height oh: Int) -> Image {
        let xs = (0..<ow).map { min(width - 1, Int((Double($0) + 0.5) * Double(width) / Double(ow))) }
        var out = Image(width: ow, height: oh, channels: channels)
        for y in 0..<oh {
            let sy = min(height - 1, Int((Double(y) + 0.5) * Double(height) / Double(oh)))
            for x in 0..<ow {
                for c in 0..<channels { out.pixels[(y * ow + x) * channels + c] = pixels[(sy * width + xs[x]) * channels + c] }
            }
        }
        return out
    }

    /// Bilinear resize with a triangle filter widened by the scale when
    /// shrinking (antialiased, as Pillow's `BILINEAR`, which the reference's
    /// torchvision `Resize` runs): separable, rows then columns. The
    /// intermediate stays in Float where Pillow rounds it to 8 bits, so
    /// about one output in ten differs from Pillow's by one grey level.
    public func resizedSmooth(width ow: Int, height oh: Int) -> Image {
        let horizontal = TriangleFilter(input: width, output: ow)
        let vertical = TriangleFilter(input: height, output: oh)
        let channels = channels, width = width, height = height
        // Rows: height x ow x channels, in Float. Raw buffers: a 1,600 px
        // photograph is millions of taps, and every stage resizes its inputs.
        var rows = [Float](repeating: 0, count: height * ow * channels)
        pixels.withUnsafeBufferPointer { src in
            rows.withUnsafeMutableBufferPointer { dst in
                for y in 0..<height {
                    for x in 0..<ow {
                        let (start, weights) = horizontal.taps[x]
                        weights.withUnsafeBufferPointer { w in
                            for c in 0..<channels {
                                var acc: Float = 0
                                var at = (y * width + start) * channels + c
                                for k in 0..<w.count {
                                    acc += w[k] * Float(src[at])
                                    at += channels
                                }
                                dst[(y * ow + x) * channels + c] = acc
                            }
                        }
                    }
                }
            }
        }
        var out = Image(width: ow, height: oh, channels: channels)
        let line = ow * channels
        rows.withUnsafeBufferPointer { src in
            out.pixels.withUnsafeMutableBufferPointer { dst in
                for y in 0..<oh {
                    let (start, weights) = vertical.taps[y]
                    weights.withUnsafeBufferPointer { w in
                        for i in 0..<line {
                            var acc: Float = 0
                            var at = start * line + i
                            for k in 0..<w.count {
                                acc += w[k] * src[at]
                                at += line
                            }
                            dst[y * line + i] = ExactRounding.byte(acc)
                        }
                    }
                }
            }
        }
        return out
    }

    /// The image placed at the top-left of a `size x size` canvas of zeros.
    public func paddedToSquare(_ size: Int) -> Image {
        precondition(size >= width && size >= height, "cannot pad \(width)x\(height) into \(size)x\(size)")
        var out = Image(width: size, height: size, channels: channels)
        for y in 0..<height {
            out.pixels.replaceSubrange((y * size * channels)..<((y * size + width) * channels),
                                       with: pixels[(y * width * channels)..<((y + 1) * width * channels)])
        }
        return out
    }
}

/// Normalised triangle-filter taps along one axis. Output i is centred on
/// input coordinate (i + 0.5) * s; the filter's half-width is max(s, 1).
struct TriangleFilter {
    let taps: [(start: Int, weights: [Float])]

    init(input: Int, output: Int) {
        let scale = Double(input) / Double(output)
        let support = max(scale, 1)
        taps = (0..<output).map { i in
            let centre = (Double(i) + 0.5) * scale
            let lo = max(0, Int((centre - support).rounded(.down)))
            let hi = min(input, Int((centre + support).rounded(.up)))
            var weights = (lo..<hi).map { j in Float(max(0, 1 - abs((Double(j) + 0.5 - centre) / support))) }
            let total = weights.reduce(0, +)
            if total > 0 { weights = weights.map { $0 / total } } else { weights = [1] + Array(repeating: 0, count: max(0, hi - lo - 1)) }
            return (lo, weights)
        }
    }
}
