import AtomicWrite
import Foundation
import Tensor

/// What the MVTec LOCO layout cannot say about a category: its part classes,
/// product types, few-shot labelled images and preprocessing. Stored as
/// `psad-manifest.json` in the category folder (README: "Category manifest").
public struct CategoryManifest: Codable, Equatable, Sendable {
    public static let fileName = "psad-manifest.json"

    public struct PartClass: Codable, Equatable, Sendable {
        public var id: Int
        public var name: String
        public init(id: Int, name: String) { self.id = id; self.name = name }
    }

    /// A product variant. Its train images are listed explicitly (`images`,
    /// paths relative to the category folder) or by a rule (`index_range`,
    /// inclusive positions in the sorted `train/good` listing).
    public struct ProductType: Codable, Equatable, Sendable {
        public var name: String
        public var images: [String]?
        public var indexRange: [Int]?
        public init(name: String, images: [String]? = nil, indexRange: [Int]? = nil) {
            self.name = name; self.images = images; self.indexRange = indexRange
        }
    }

    /// How a few-shot annotation file is written.
    public enum AnnotationFormat: String, Codable, Sendable {
        /// VGG Image Annotator JSON (the PSAD reference's format).
        case via
        /// LabelMe JSON.
        case labelme
        /// A PNG whose pixel values (gray or palette indices) are class ids.
        case png
    }

    public struct FewShotLabel: Codable, Equatable, Sendable {
        /// The labelled image, relative to the category folder.
        public var image: String
        /// The annotation file, relative to the category folder.
        public var annotation: String
        public var format: AnnotationFormat
        public init(image: String, annotation: String, format: AnnotationFormat) {
            self.image = image; self.annotation = annotation; self.format = format
        }
    }

    public struct Preprocess: Codable, Equatable, Sendable {
        /// Pixels cropped off each side before resizing (screw_bag: 150).
        public var cropMargin: Int?
        /// The long side after resizing; the image is then padded to a square.
        public var targetSize: Int
        public init(cropMargin: Int? = nil, targetSize: Int) { self.cropMargin = cropMargin; self.targetSize = targetSize }
    }

    public var category: String
    public var classes: [PartClass]
    public var productTypes: [ProductType]?
    public var fewShot: [FewShotLabel]
    public var preprocess: Preprocess
    /// Foreground classes the histogram-matching loss uses (default: all
    /// foreground classes; the reference uses 1, 2, 3, 6 for breakfast_box).
    public var histogramClasses: [Int]?
    /// The largest rotation, in degrees either way, of an augmented training
    /// view (segment-train's labelled views, unet-train's images); absent:
    /// ``defaultRotationDegrees``. The reference: 180 (any angle) for
    /// breakfast_box and screw_bag, 20 for the others.
    public var rotationDegrees: Double?
    public static let defaultRotationDegrees = 20.0

    public init(category: String, classes: [PartClass], productTypes: [ProductType]? = nil, fewShot: [FewShotLabel],
                preprocess: Preprocess, histogramClasses: [Int]? = nil, rotationDegrees: Double? = nil) {
        self.category = category; self.classes = classes; self.productTypes = productTypes
        self.fewShot = fewShot; self.preprocess = preprocess; self.histogramClasses = histogramClasses
        self.rotationDegrees = rotationDegrees
    }

    /// The rotation range augmentation uses for this category.
    public var augmentationRotationDegrees: Double { rotationDegrees ?? Self.defaultRotationDegrees }

    public var classCount: Int { classes.count }

    /// The class id for an annotation label: a class name, or an id written as a number.
    public func classID(forLabel label: String) -> Int? {
        if let c = classes.first(where: { $0.name == label }) { return c.id }
        if let id = Int(label.trimmingCharacters(in: .whitespaces)), classes.contains(where: { $0.id == id }) { return id }
        return nil
    }

    /// Reads and validates `psad-manifest.json` in `categoryRoot`.
    public static func load(categoryRoot: URL) throws -> CategoryManifest {
        let url = categoryRoot.appendingPathComponent(fileName)
        let manifest = try DatasetError.decodeJSON(CategoryManifest.self, from: url)
        try manifest.validate(file: url.path, categoryRoot: categoryRoot)
        return manifest
    }

    /// Checks every field that decoding cannot: ids 0..<C with 0 the
    /// background, known classes, existing files, well-formed type rules.
    public func validate(file: String, categoryRoot: URL) throws {
        func bad(_ field: String, _ problem: String) -> DatasetError { .malformed(file: file, field: field, problem: problem) }
        guard classes.count >= 2 else { throw bad("classes", "needs the background and at least one part class") }
        for (i, c) in classes.enumerated() where c.id != i {
            throw bad("classes[\(i)].id", "ids must be 0, 1, 2, ... in order; found \(c.id) at position \(i)")
        }
        guard Set(classes.map(\.name)).count == classes.count else { throw bad("classes", "class names must be unique") }
        guard preprocess.targetSize >= 8 else { throw bad("preprocess.target_size", "must be at least 8, found \(preprocess.targetSize)") }
        if let m = preprocess.cropMargin, m < 0 { throw bad("preprocess.crop_margin", "must not be negative, found \(m)") }
        if let r = rotationDegrees, !(0...180).contains(r) {
            throw bad("rotation_degrees", "must be between 0 and 180 (any angle), found \(r)")
        }
        for (i, k) in (histogramClasses ?? []).enumerated() where !(1..<classes.count).contains(k) {
            throw bad("histogram_classes[\(i)]", "must be a foreground class id in 1..<\(classes.count), found \(k)")
        }
        let fm = FileManager.default
        for (i, t) in (productTypes ?? []).enumerated() {
            switch (t.images, t.indexRange) {
            case (let images?, nil):
                for (j, path) in images.enumerated() where !fm.fileExists(atPath: categoryRoot.appendingPathComponent(path).path) {
                    throw bad("product_types[\(i)].images[\(j)]", "no such file: \(path)")
                }
            case (nil, let range?):
                guard range.count == 2, range[0] >= 0, range[0] <= range[1] else {
                    throw bad("product_types[\(i)].index_range", "must be [first, last] with 0 <= first <= last")
                }
            default:
                throw bad("product_types[\(i)]", "give exactly one of 'images' or 'index_range'")
            }
        }
        guard !fewShot.isEmpty else { throw bad("few_shot", "needs at least one labelled image") }
        for (i, label) in fewShot.enumerated() {
            if !fm.fileExists(atPath: categoryRoot.appendingPathComponent(label.image).path) {
                throw bad("few_shot[\(i)].image", "no such file: \(label.image)")
            }
            if !fm.fileExists(atPath: categoryRoot.appendingPathComponent(label.annotation).path) {
                throw bad("few_shot[\(i)].annotation", "no such file: \(label.annotation)")
            }
        }
    }

    /// The product type of each train image (by position in the sorted
    /// listing), or nil for every image when the category has one type.
    public func productTypeIndex(ofTrain samples: [LocoSample], categoryRoot: URL) -> [Int?] {
        guard let types = productTypes, !types.isEmpty else { return samples.map { _ in nil } }
        return samples.enumerated().map { position, sample in
            types.firstIndex { t in
                if let range = t.indexRange { return (range[0]...range[1]).contains(position) }
                let relative = "\(Split.train.rawValue)/\(sample.url.lastPathComponent)"
                return t.images?.contains(relative) ?? false
            }
        }
    }

    /// Writes the manifest as pretty, sorted, snake_case JSON.
    public func write(to categoryRoot: URL) throws {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try AtomicFile.write(encoder.encode(self), to: categoryRoot.appendingPathComponent(Self.fileName))
    }
}
