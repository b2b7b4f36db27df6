import Foundation
import Models
import Tensor
import Vision

/// One category of a dataset in the MVTec LOCO AD layout, ready for the
/// stages: its listing, its manifest and the preprocessing (SPEC-PSAD stage 1)
/// at the chosen size. Every read error names the file.
public struct CategoryInput: Sendable {
    public let root: URL
    public let category: LocoCategory
    public let manifest: CategoryManifest
    public let prep: Preprocessor

    public init(root: URL, imageSize: Int? = nil) throws {
        self.root = root
        category = try LocoCategory(root: root)
        manifest = try CategoryManifest.load(categoryRoot: root)
        var settings = manifest.preprocess
        if let imageSize { settings.targetSize = imageSize }
        prep = Preprocessor(settings)
    }

    public var size: Int { prep.targetSize }
    public var classes: Int { manifest.classCount }
    /// test/good, then logical, then structural anomalies: the order of every per-test-image list.
    public var testSamples: [LocoSample] { category[.testGood] + category[.testLogical] + category[.testStructural] }
    public var productTypes: [Int?] { manifest.productTypeIndex(ofTrain: category[.train], categoryRoot: root) }

    /// The preprocessed images of a split.
    public func images(_ split: Split) throws -> [Image] {
        try category[split].map { prep.image(try Self.readImage($0.url)) }
    }

    /// The preprocessed test images in `testSamples` order.
    public func testImages() throws -> [Image] {
        try images(.testGood) + images(.testLogical) + images(.testStructural)
    }

    /// The first `nShot` labelled images of the manifest with their
    /// preprocessed masks and product types.
    public func labelled(nShot: Int) throws -> [SegmentationSample] {
        let types = productTypes
        return try manifest.fewShot.prefix(nShot).map { label in
            let native = try Self.readImage(root.appendingPathComponent(label.image))
            let mask = try AnnotationImport.mask(for: label, manifest: manifest, categoryRoot: root,
                                                 imageWidth: native.width, imageHeight: native.height)
            let name = (label.image as NSString).lastPathComponent
            let position = category[.train].firstIndex { $0.url.lastPathComponent == name }
            return SegmentationSample(image: prep.image(native), mask: prep.mask(mask), productType: position.flatMap { types[$0] })
        }
    }

    /// Encoder taps (strides 4, 8, 16) of each image.
    public static func taps(_ images: [Image], backbone: any Backbone) -> [[Int: Tensor]] {
        images.map { backbone.features(ImageNormalization.imagenet($0.tensor()), strides: [4, 8, 16]) }
    }

    static func readImage(_ url: URL) throws -> Image {
        do { return try PNG.read(url).rgb() } catch { throw DatasetError.badImage(file: url.path, detail: "\(error)") }
    }

    /// Pixel metrics in the preprocessed frame: anomaly maps at the
    /// preprocessing size, ground-truth regions preprocessed like masks,
    /// padding left out, absolute saturation thresholds rescaled by the area ratio.
    /// `maps` holds one full-size map per test image, in `testSamples` order.
    public func pixelMetrics(maps: [[Float]], fprLimit: Double) throws -> PixelMetrics.Result? {
        let anomalousSamples = category[.testLogical] + category[.testStructural]
        guard anomalousSamples.contains(where: { !$0.groundTruth.isEmpty }) else { return nil }
        let goodCount = category[.testGood].count
        let native = try Self.readImage(category[.testGood][0].url)
        let (w, h) = prep.resizedSize(width: native.width, height: native.height)
        let areaRatio = Double(w * h) / Double((native.width - 2 * prep.cropMargin) * (native.height - 2 * prep.cropMargin))
        func cropped(_ full: [Float]) -> [Float] { (0..<h).flatMap { y in (0..<w).map { x in full[y * size + x] } } }
        func unpadded(_ mask: Image) -> Image {
            Image(width: w, height: h, channels: 1, pixels: (0..<h).flatMap { y in Array(mask.pixels[(y * size)..<(y * size + w)]) })
        }
        let goodMaps = (0..<goodCount).map { cropped(maps[$0]) }
        let anomalous = try anomalousSamples.enumerated().map { k, sample in
            PixelMetrics.AnomalousImage(map: cropped(maps[goodCount + k]),
                                        regions: try sample.groundTruth.map { unpadded(prep.mask(try PNG.read($0, mode: .indices))) })
        }
        let defects = category.defects.map { d -> DefectConfig in
            var scaled = d
            if !d.relativeSaturation { scaled.saturationThreshold = d.saturationThreshold * areaRatio }
            return scaled
        }
        return try PixelMetrics.compute(goodMaps: goodMaps, anomalous: anomalous, defects: defects, fprLimit: fprLimit)
    }
}
