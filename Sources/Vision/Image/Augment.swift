import Tensor

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Augmentations of labelled images for few-shot segmentation (SPEC-PSAD,
/// stage 2): a rotation of image and mask together, then colour operations
/// each applied with probability 0.2 (image only).
extension Image {
    /// Rotated by `angle` radians about the centre, same size, uncovered
    /// pixels 0. Images sample bilinearly, masks (`nearest`) take the nearest
    /// pixel, with the same mapping.
    public func rotated(by angle: Double, nearest: Bool) -> Image {
        var out = Image(width: width, height: height, channels: channels)
        let (width, height, channels) = (self.width, self.height, self.channels)
        pixels.withUnsafeBufferPointer { src in
            out.pixels.withUnsafeMutableBufferPointer { dst in
                let src = src.baseAddress!, dst = dst.baseAddress!
                RotationGrid.forEachPixel(width: width, height: height, angle: angle) { x, y, sx, sy in
                    let o = (y &* width &+ x) &* channels
                    if nearest {
                        let ix = ExactRounding.halfAway(sx), iy = ExactRounding.halfAway(sy)
                        guard ix >= 0, iy >= 0, ix < width, iy < height else { return }
                        let i = (iy &* width &+ ix) &* channels
                        for k in 0..<channels { dst[o &+ k] = src[i &+ k] }
                    } else {
                        let x0 = ExactRounding.floor(sx), y0 = ExactRounding.floor(sy)
                        guard x0 >= -1, y0 >= -1, x0 < width, y0 < height else { return }
                        let fx = sx - Double(x0), fy = sy - Double(y0)
                        // A corner outside the image reads 0; the others' offsets.
                        let inX0 = x0 >= 0, inX1 = x0 &+ 1 < width, inY0 = y0 >= 0, inY1 = y0 &+ 1 < height
                        let i00 = (y0 &* width &+ x0) &* channels, i10 = i00 &+ channels
                        let i01 = i00 &+ width &* channels, i11 = i01 &+ channels
                        for k in 0..<channels {
                            let a: Double = inX0 && inY0 ? Double(src[i00 &+ k]) : 0, b: Double = inX1 && inY0 ? Double(src[i10 &+ k]) : 0
                            let c: Double = inX0 && inY1 ? Double(src[i01 &+ k]) : 0, d: Double = inX1 && inY1 ? Double(src[i11 &+ k]) : 0
                            let top: Double = (1 - fx) * a + fx * b
                            let bottom: Double = (1 - fx) * c + fx * d
                            let v: Double = (1 - fy) * top + fy * bottom
                            dst[o &+ k] = ExactRounding.byte(v)
                        }
                    }
                }
            }
        }
        return out
    }

    /// Applies `f` to every channel value.
    func mapValues(_ f: (UInt8) -> UInt8) -> Image {
        Image(width: width, height: height, channels: channels, pixels: pixels.map(f))
    }

    /// ITU-R 601 luma replicated into every channel.
    public func grayscale() -> Image {
        guard channels >= 3 else { return self }
        var out = self
        for i in 0..<(width * height) {
            let p = i * channels
            let r = 0.299 * Double(pixels[p]), g = 0.587 * Double(pixels[p + 1]), b = 0.114 * Double(pixels[p + 2])
            let l = ExactRounding.byte(r + g + b)
            out.pixels[p] = l; out.pixels[p + 1] = l; out.pixels[p + 2] = l
        }
        return out
    }

    /// Keeps the top `bits` bits of every value.
    public func posterized(bits: Int) -> Image { mapValues { $0 & UInt8(truncatingIfNeeded: 0xFF << (8 - bits)) } }

    /// Inverts values at or above `threshold`.
    public func solarized(threshold: UInt8 = 128) -> Image { mapValues { $0 >= threshold ? 255 - $0 : $0 } }

    /// Brightness scales values; contrast then blends them with the image's
    /// mean level: v' = mean + (v * brightness - mean) * contrast.
    public func adjusted(brightness: Double, contrast: Double) -> Image {
        let mean = pixels.reduce(0) { $0 + Double($1) } / Double(max(pixels.count, 1))
        return mapValues { v in
            let b = Double(v) * brightness
            return ExactRounding.byte(mean + (b - mean) * contrast)
        }
    }

    /// Per-channel gains (colour jitter).
    public func tinted(gains: [Double]) -> Image {
        var out = self
        for i in 0..<pixels.count {
            out.pixels[i] = ExactRounding.byte(Double(pixels[i]) * gains[i % channels])
        }
        return out
    }

    /// Per-channel histogram equalisation (PIL's ImageOps.equalize).
    public func equalized() -> Image {
        var out = self
        for k in 0..<channels {
            var histogram = [Int](repeating: 0, count: 256)
            for i in 0..<(width * height) { histogram[Int(pixels[i * channels + k])] += 1 }
            let nonzero = histogram.filter { $0 > 0 }
            guard nonzero.count > 1 else { continue }
            let step = (histogram.reduce(0, +) - nonzero.last!) / 255
            guard step > 0 else { continue }
            var lut = [UInt8](repeating: 0, count: 256), n = step / 2
            for v in 0..<256 {
                lut[v] = UInt8(min(n / step, 255))
                n += histogram[v]
            }
            for i in 0..<(width * height) { out.pixels[i * channels + k] = lut[Int(pixels[i * channels + k])] }
        }
        return out
    }

    /// PIL's SHARPEN filter: centre 32, neighbours -2, divided by 16; borders kept.
    public func sharpened() -> Image {
        var out = self
        for y in 1..<max(height - 1, 1) {
            for x in 1..<max(width - 1, 1) {
                for k in 0..<channels {
                    var s = 0
                    for dy in -1...1 { for dx in -1...1 {
                        s += (dx == 0 && dy == 0 ? 32 : -2) * Int(pixels[((y + dy) * width + x + dx) * channels + k])
                    } }
                    out.pixels[(y * width + x) * channels + k] = ExactRounding.byte(Double(s) / 16)
                }
            }
        }
        return out
    }

    /// Each colour operation with probability `p`, in a fixed order.
    public func colourAugmented(_ rng: inout SeededGenerator, p: Double = 0.2) -> Image {
        var image = self
        if rng.nextUniform() < Float(p) { image = image.grayscale() }
        if rng.nextUniform() < Float(p) { image = image.posterized(bits: 4) }
        if rng.nextUniform() < Float(p) { image = image.equalized() }
        if rng.nextUniform() < Float(p) { image = image.sharpened() }
        if rng.nextUniform() < Float(p) {
            image = image.adjusted(brightness: 0.8 + 0.4 * Double(rng.nextUniform()), contrast: 0.8 + 0.4 * Double(rng.nextUniform()))
        }
        if rng.nextUniform() < Float(p) { image = image.solarized() }
        if rng.nextUniform() < Float(p) { image = image.tinted(gains: (0..<channels).map { _ in 0.9 + 0.2 * Double(rng.nextUniform()) }) }
        return image
    }
}

extension Image {
    /// Mirrored left to right.
    public func flippedHorizontally() -> Image {
        var out = self
        for y in 0..<height {
            for x in 0..<width {
                for k in 0..<channels { out.pixels[(y * width + x) * channels + k] = pixels[(y * width + width - 1 - x) * channels + k] }
            }
        }
        return out
    }

    /// Mirrored top to bottom.
    public func flippedVertically() -> Image {
        var out = self
        let row = width * channels
        for y in 0..<height {
            out.pixels.replaceSubrange(y * row..<(y + 1) * row, with: pixels[(height - 1 - y) * row..<(height - y) * row])
        }
        return out
    }
}

/// Where a rotation about the image centre samples: ``Image/rotated(by:nearest:)``
/// and ``Tensor/rotatedPlanes(by:)`` share it, so that rotating by `-angle`
/// undoes rotating by `angle` (up to the resampling).
enum RotationGrid {
    /// Calls `body(x, y, sx, sy)` for every output pixel: (sx, sy) is the
    /// source position (pixel centres at integers) the inverse rotation of
    /// the output pixel's centre lands on.
    @inline(__always)
    static func forEachPixel(width: Int, height: Int, angle: Double, _ body: (Int, Int, Double, Double) -> Void) {
        let cx = Double(width) / 2, cy = Double(height) / 2, c = cos(angle), s = sin(angle)
        for y in 0..<height {
            let dy = Double(y) + 0.5 - cy
            for x in 0..<width {
                let dx = Double(x) + 0.5 - cx
                body(x, y, c * dx + s * dy + cx - 0.5, -s * dx + c * dy + cy - 0.5)
            }
        }
    }
}

extension Tensor {
    /// Every [H, W] plane of an [N, C, H, W] tensor rotated by `angle`
    /// radians about its centre as ``Image/rotated(by:nearest:)`` rotates an
    /// image (bilinear, 0 outside): rotating a view's class probabilities by
    /// `-angle` brings them back to the frame of the image the view was
    /// rotated from; a pixel the view did not see gets 0 in every plane, one
    /// it saw partly the share it saw.
    public func rotatedPlanes(by angle: Double) -> Tensor {
        let (n, c, h, w) = nchw
        var out = Tensor(zeros: shape)
        let planes = n * c, area = h * w
        withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                RotationGrid.forEachPixel(width: w, height: h, angle: angle) { x, y, sx, sy in
                    let x0 = ExactRounding.floor(sx), y0 = ExactRounding.floor(sy)
                    guard x0 >= -1, y0 >= -1, x0 < w, y0 < h else { return }
                    let fx = Float(sx - Double(x0)), fy = Float(sy - Double(y0))
                    // The four corners' weights, 0 for a corner outside the plane.
                    let inX0 = x0 >= 0, inX1 = x0 + 1 < w, inY0 = y0 >= 0, inY1 = y0 + 1 < h
                    let w00: Float = inX0 && inY0 ? (1 - fx) * (1 - fy) : 0, w10: Float = inX1 && inY0 ? fx * (1 - fy) : 0
                    let w01: Float = inX0 && inY1 ? (1 - fx) * fy : 0, w11: Float = inX1 && inY1 ? fx * fy : 0
                    let cx0 = Swift.max(x0, 0), cx1 = Swift.min(x0 + 1, w - 1), cy0 = Swift.max(y0, 0), cy1 = Swift.min(y0 + 1, h - 1)
                    let i00 = cy0 * w + cx0, i10 = cy0 * w + cx1, i01 = cy1 * w + cx0, i11 = cy1 * w + cx1, o = y * w + x
                    for p in 0..<planes {
                        let b = p * area
                        dst[b + o] = w00 * src[b + i00] + w10 * src[b + i10] + w01 * src[b + i01] + w11 * src[b + i11]
                    }
                }
            }
        }
        return out
    }
}
