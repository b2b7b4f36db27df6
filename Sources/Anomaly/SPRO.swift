/// Saturated per-region overlap (sPRO), the pixel metric of MVTec LOCO AD
/// (Bergmann et al., IJCV 2022), integrated over false-positive rates.
///
/// For a threshold t, each defect region R with saturation s_R contributes
/// min(|{p in R : map(p) >= t}| / s_R, 1); sPRO(t) is their mean over all
/// regions. FPR(t) is the fraction of pixels of anomaly-free test images
/// with map(p) >= t. The result is the area under sPRO over FPR in
/// [0, limit], divided by `limit` (1 = perfect).
public struct SPRO: Sendable {
    /// A ground-truth region: the anomaly-map values inside it and the
    /// number of pixels that saturate it (s_R).
    public struct Region: Sendable {
        public let values: [Float]
        public let saturation: Double

        /// `saturationThreshold` as `defects_config.json` gives it: a fraction
        /// of the region's area when `relative`, else pixels (capped at the area).
        public init(values: [Float], saturationThreshold: Double, relative: Bool) {
            self.values = values.sorted(by: >)
            let area = Double(values.count)
            saturation = max(1, relative ? saturationThreshold * area : min(saturationThreshold, area))
        }
    }

    public let regions: [Region]
    /// Anomaly-map values of every pixel of the anomaly-free images, descending.
    let normal: [Float]

    public init(regions: [Region], normalValues: [Float]) {
        precondition(!regions.isEmpty && !normalValues.isEmpty, "sPRO needs defect regions and anomaly-free pixels")
        self.regions = regions
        normal = normalValues.sorted(by: >)
    }

    /// Pixels of a descending array at or above t.
    static func countAtLeast(_ sorted: [Float], _ t: Float) -> Int {
        var lo = 0, hi = sorted.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if sorted[mid] >= t { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    public func spro(threshold t: Float) -> Double {
        regions.reduce(0) { $0 + min(Double(Self.countAtLeast($1.values, t)) / $1.saturation, 1) } / Double(regions.count)
    }

    public func falsePositiveRate(threshold t: Float) -> Double {
        Double(Self.countAtLeast(normal, t)) / Double(normal.count)
    }

    /// Area under sPRO(FPR) for FPR in [0, limit], divided by limit. The
    /// curve is evaluated at every distinct anomaly-free value (each a step
    /// in FPR) and interpolated linearly at FPR = limit.
    public func area(fprLimit limit: Double = 0.05) -> Double {
        precondition(limit > 0 && limit <= 1)
        var points: [(fpr: Double, spro: Double)] = [(0, spro(threshold: normal[0].nextUp))]
        var i = 0
        while i < normal.count {
            let t = normal[i]
            while i < normal.count && normal[i] == t { i += 1 }
            let fpr = Double(i) / Double(normal.count)
            points.append((fpr, spro(threshold: t)))
            if fpr >= limit { break }
        }
        var total = 0.0
        for k in 1..<points.count {
            let (f0, s0) = points[k - 1], (f1, s1) = points[k]
            guard f0 < limit else { break }
            if f1 <= limit {
                total += (f1 - f0) * (s0 + s1) / 2
            } else {
                let sAtLimit = s0 + (s1 - s0) * (limit - f0) / (f1 - f0)
                total += (limit - f0) * (s0 + sAtLimit) / 2
            }
        }
        // Past the last anomaly-free value FPR is 1; below limit the curve ends there.
        return total / limit
    }
}
