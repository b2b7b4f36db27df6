/// Where each part lies in a mask: per foreground class, the centroid
/// (x, y) and the second central moments (xx, yy, xy) of its pixels, in
/// units of the mask's width and height, pixel centres at (i + 0.5) / size.
///
/// The histogram bank (SPEC-PSAD, stage 5) sees how much of each part there
/// is, the composition bank what it looks like, the instance bank how many
/// pieces it has; none sees where it is. A cable joining the wrong slots has
/// the areas, features and pieces of a good one: only its position and
/// orientation differ. The geometry bank (memory type letter `g`, not in the
/// paper) standardises these vectors and compares them as the histogram bank
/// compares its own.
public enum PartGeometry {
    /// Numbers per foreground class.
    public static let width = 5

    /// - Parameters:
    ///   - labels: class ids laid out [height, width].
    /// - Returns: `width * (classes - 1)` numbers, class 1's first; zeros
    ///   for a class with no pixel.
    public static func vector(labels: [Int32], height: Int, width w: Int, classes: Int) -> [Double] {
        precondition(labels.count == height * w, "\(labels.count) labels for \(w)x\(height)")
        let parts = max(classes - 1, 0)
        // Per class: count, sums of x, y, x², y², xy (pixel centres in units of the size).
        var sums = [Double](repeating: 0, count: parts * 6)
        for y in 0..<height {
            let fy = (Double(y) + 0.5) / Double(height)
            for x in 0..<w {
                let c = Int(labels[y * w + x])
                guard c > 0, c < classes else { continue }
                let fx = (Double(x) + 0.5) / Double(w), o = (c - 1) * 6
                sums[o] += 1; sums[o + 1] += fx; sums[o + 2] += fy
                sums[o + 3] += fx * fx; sums[o + 4] += fy * fy; sums[o + 5] += fx * fy
            }
        }
        var out = [Double](repeating: 0, count: parts * Self.width)
        for c in 0..<parts where sums[c * 6] > 0 {
            let s = Array(sums[(c * 6)..<(c * 6 + 6)]), n = s[0]
            let cx = s[1] / n, cy = s[2] / n
            // Central moments from the raw ones; clamped at 0 against rounding for a one-pixel-wide part.
            out[c * Self.width] = cx
            out[c * Self.width + 1] = cy
            out[c * Self.width + 2] = Swift.max(s[3] / n - cx * cx, 0)
            out[c * Self.width + 3] = Swift.max(s[4] / n - cy * cy, 0)
            out[c * Self.width + 4] = s[5] / n - cx * cy
        }
        return out
    }
}
