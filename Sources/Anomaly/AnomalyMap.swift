#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Tensor

/// Pixel anomaly maps from patch distances: the grid of per-patch nearest
/// distances upsampled bilinearly to the image size, then smoothed with a
/// Gaussian (sigma 4, as PatchCore) — scipy.ndimage.gaussian_filter's
/// conventions: kernel truncated at 4 sigma, 'reflect' borders.
public enum AnomalyMap {
    public static func from(patchDistances: [Float], gridHeight gh: Int, gridWidth gw: Int, height: Int, width: Int,
                            sigma: Double = 4) -> Tensor {
        precondition(patchDistances.count == gh * gw)
        let grid = Tensor(shape: [1, 1, gh, gw], storage: patchDistances)
        return gaussianBlur(Tensor.resizeBilinear(grid, height: height, width: width, alignCorners: false), sigma: sigma)
    }

    /// Separable Gaussian blur of every plane.
    public static func gaussianBlur(_ x: Tensor, sigma: Double, truncate: Double = 4) -> Tensor {
        let radius = Int(truncate * sigma + 0.5)
        var kernel = (-radius...radius).map { exp(-0.5 * Double($0 * $0) / (sigma * sigma)) }
        let total = kernel.reduce(0, +)
        kernel = kernel.map { $0 / total }
        let (n, c, h, w) = x.nchw
        /// scipy's 'reflect': (d c b a | a b c d | d c b a).
        func reflect(_ i: Int, _ size: Int) -> Int {
            var i = i
            let period = 2 * size
            i = ((i % period) + period) % period
            return i < size ? i : period - 1 - i
        }
        var tmp = x, out = x
        for plane in 0..<(n * c) {
            let base = plane * h * w
            for y in 0..<h {
                for xx in 0..<w {
                    var s = 0.0
                    for (k, wt) in kernel.enumerated() { s += wt * Double(x.storage[base + y * w + reflect(xx + k - radius, w)]) }
                    tmp.storage[base + y * w + xx] = Float(s)
                }
            }
            for y in 0..<h {
                for xx in 0..<w {
                    var s = 0.0
                    for (k, wt) in kernel.enumerated() { s += wt * Double(tmp.storage[base + reflect(y + k - radius, h) * w + xx]) }
                    out.storage[base + y * w + xx] = Float(s)
                }
            }
        }
        return out
    }
}
