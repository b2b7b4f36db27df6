/// Filled shapes on a class-index mask. A pixel (x, y) belongs to a shape
/// when its centre (x + 0.5, y + 0.5) lies inside (even-odd rule for
/// polygons), so an axis-aligned rectangle with integer corners covers
/// exactly its area.
public enum Raster {
    /// Fills the polygon with vertices (xs[i], ys[i]) with `value`.
    public static func fillPolygon(_ mask: inout Image, xs: [Double], ys: [Double], value: UInt8) {
        precondition(mask.channels == 1 && xs.count == ys.count)
        guard xs.count >= 3 else { return }
        let n = xs.count
        let yMin = max(0, Int((ys.min()! - 0.5).rounded(.up))), yMax = min(mask.height - 1, Int((ys.max()! - 0.5).rounded(.down)))
        guard yMin <= yMax else { return }
        var crossings: [Double] = []
        for y in yMin...yMax {
            let cy = Double(y) + 0.5
            crossings.removeAll(keepingCapacity: true)
            for i in 0..<n {
                let (x0, y0, x1, y1) = (xs[i], ys[i], xs[(i + 1) % n], ys[(i + 1) % n])
                // Half-open rule: an edge counts when cy is in [min y, max y).
                if (y0 <= cy && cy < y1) || (y1 <= cy && cy < y0) {
                    crossings.append(x0 + (cy - y0) * (x1 - x0) / (y1 - y0))
                }
            }
            crossings.sort()
            var k = 0
            while k + 1 < crossings.count {
                // Pixels whose centre x + 0.5 lies in [left, right).
                let first = max(0, Int((crossings[k] - 0.5).rounded(.up)))
                let last = min(mask.width - 1, Int((crossings[k + 1] - 0.5).rounded(.up)) - 1)
                if first <= last { for x in first...last { mask.pixels[y * mask.width + x] = value } }
                k += 2
            }
        }
    }

    /// Fills the ellipse centred at (cx, cy) with radii rx, ry, rotated by
    /// `angle` radians.
    public static func fillEllipse(_ mask: inout Image, cx: Double, cy: Double, rx: Double, ry: Double,
                                   angle: Double = 0, value: UInt8) {
        precondition(mask.channels == 1)
        guard rx > 0, ry > 0 else { return }
        let r = max(rx, ry)
        let c = cos(angle), s = sin(angle)
        let y0 = max(0, Int(cy - r - 1)), y1 = min(mask.height - 1, Int(cy + r + 1))
        let x0 = max(0, Int(cx - r - 1)), x1 = min(mask.width - 1, Int(cx + r + 1))
        guard y0 <= y1, x0 <= x1 else { return }
        for y in y0...y1 {
            for x in x0...x1 {
                let dx = Double(x) + 0.5 - cx, dy = Double(y) + 0.5 - cy
                let u = (dx * c + dy * s) / rx, v = (-dx * s + dy * c) / ry
                if u * u + v * v <= 1 { mask.pixels[y * mask.width + x] = value }
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
