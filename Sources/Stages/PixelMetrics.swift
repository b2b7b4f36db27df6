import Anomaly
import Tensor
import Vision

/// Pixel-level metrics from anomaly maps (the project's addition to PSAD):
/// pixel AUROC over every test pixel, and sPRO integrated to an FPR limit
/// with each region's saturation from `defects_config.json`.
public enum PixelMetrics {
    public struct Result: Codable, Equatable, Sendable {
        public let pixelAUROC: Double
        public let spro: Double
        public let fprLimit: Double
    }

    /// One anomalous test image: its anomaly map and its ground-truth
    /// regions in the same frame (one mask per region, pixel value = defect
    /// id), and the factor that brings absolute (pixel-count) saturation
    /// thresholds, given for the native image, into this frame.
    public struct AnomalousImage: Sendable {
        public let map: [Float]
        public let regions: [Image]
        public let absoluteThresholdScale: Double
        public init(map: [Float], regions: [Image], absoluteThresholdScale: Double = 1) {
            self.map = map; self.regions = regions; self.absoluteThresholdScale = absoluteThresholdScale
        }
    }

    /// - Parameters:
    ///   - goodMaps: anomaly maps of the anomaly-free test images (native size, flattened).
    public static func compute(goodMaps: [[Float]], anomalous: [AnomalousImage], defects: [DefectConfig],
                               fprLimit: Double = 0.05) throws -> Result {
        var sproRegions: [SPRO.Region] = []
        var scores: [Float] = [], labels: [Bool] = []
        for image in anomalous {
            var inside = [Bool](repeating: false, count: image.map.count)
            for region in image.regions {
                guard region.pixels.count == image.map.count else {
                    throw DatasetError.malformed(file: "ground truth", field: "",
                                                 problem: "a region mask has \(region.pixels.count) pixels, its anomaly map \(image.map.count)")
                }
                guard let value = region.pixels.first(where: { $0 != 0 }) else { continue }
                guard let defect = defects.first(where: { $0.pixelValue == Int(value) }) else {
                    throw DatasetError.malformed(file: "defects_config.json", field: "pixel_value",
                                                 problem: "no defect with pixel value \(value)")
                }
                var values: [Float] = []
                for (p, v) in region.pixels.enumerated() where v != 0 { values.append(image.map[p]); inside[p] = true }
                let threshold = defect.relativeSaturation ? defect.saturationThreshold : defect.saturationThreshold * image.absoluteThresholdScale
                sproRegions.append(SPRO.Region(values: values, saturationThreshold: threshold, relative: defect.relativeSaturation))
            }
            scores += image.map
            labels += inside
        }
        for map in goodMaps {
            scores += map
            labels += [Bool](repeating: false, count: map.count)
        }
        let spro = SPRO(regions: sproRegions, normalValues: goodMaps.flatMap { $0 })
        return Result(pixelAUROC: ROC(scores: scores, labels: labels).area, spro: spro.area(fprLimit: fprLimit), fprLimit: fprLimit)
    }
}
