import Foundation
import Tensor

/// Writes the synthetic benchmark: five categories in the MVTec LOCO AD
/// layout, each with a manifest, few-shot annotations, ground-truth masks and
/// `defects_config.json` — the project's embedded default data.
///
/// Deterministic: every image is drawn from a generator seeded by the
/// benchmark seed, the category, the split and the image index, so any
/// subset can be regenerated alone. The part masks of every image are kept
/// in `synthetic_truth/<split>/<id>.png` (outside the LOCO layout, which
/// readers ignore) for measuring segmentation.
public enum SyntheticBenchmark {
    public static let categories: [any SyntheticCategory] = [SnackBox(), BottleLabel(), PinGrid(), BoltBag(), CablePair()]

    /// The categories as drawn at `size`: at `loco` and `large`, pin_grid is labelled per
    /// compartment (26 classes, as LOCO's pushpins).
    public static func categories(_ size: Size) -> [any SyntheticCategory] {
        size == .loco || size == .large ? categories.map { $0 is PinGrid ? PinGrid(perCompartment: true) : $0 } : categories
    }

    public enum Size: String, CaseIterable, Sendable {
        /// About 120 train, 30 validation and 40 images per test split, full size.
        case `default`
        /// A few images per split at half size, for tests.
        case small
        /// As `small`'s counts at `loco`'s resolution, for tests of real image sizes.
        case large
        /// MVTec LOCO's scale: 350 train, 60 validation, 100 good and 100 of
        /// each anomaly kind in test, long side 1,600 px (drawn 3.6-4x larger).
        case loco

        func zoom(_ category: any SyntheticCategory) -> Double {
            switch self {
            case .default: 1
            case .small: 0.5
            case .loco, .large: 1600 / Double(max(category.size.width, category.size.height))
            }
        }

        func count(_ split: Split) -> Int {
            switch (self, split) {
            case (.default, .train): 120
            case (.default, .validation): 30
            case (.default, _): 40
            case (.small, .train), (.large, .train): 8
            case (.small, .validation), (.large, .validation): 2
            case (.small, _), (.large, _): 4
            case (.loco, .train): 350
            case (.loco, .validation): 60
            case (.loco, _): 100
            }
        }
    }

    public static func category(named name: String) -> (any SyntheticCategory)? {
        categories.first { $0.name == name }
    }

    /// Writes the named categories (all by default) under `root`.
    public static func write(to root: URL, seed: UInt64, size: Size, rendering: Rendering = .reference, only names: [String]? = nil,
                             progress: (String) -> Void = { _ in }) throws {
        for category in categories(size) where names?.contains(category.name) ?? true {
            try write(category, to: root.appendingPathComponent(category.name), seed: seed, size: size, rendering: rendering)
            progress(category.name)
        }
    }

    /// The generator for one image.
    static func generator(seed: UInt64, category: String, split: Split, index: Int) -> SeededGenerator {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in "\(category)/\(split.rawValue)/\(index)".utf8 { h = (h ^ UInt64(byte)) &* 0x100_0000_01B3 }
        return SeededGenerator(seed: h ^ seed)
    }

    static func kind(of split: Split) -> SampleKind {
        switch split {
        case .testLogical: .logical
        case .testStructural: .structural
        default: .normal
        }
    }

    /// The scene of one image, in full-size coordinates, and its generator
    /// after drawing it. Product types go round by index; so do logical kinds
    /// where the category assigns them (`logicalKinds`), one kind for each
    /// run of `productTypes.count` images.
    static func scene(_ category: any SyntheticCategory, seed: UInt64, split: Split, index: Int, rendering: Rendering = .reference)
        -> (scene: Scene, rng: SeededGenerator)
    {
        var rng = generator(seed: seed, category: category.name, split: split, index: index)
        let types = category.productTypes.count
        let type = types == 0 ? nil : index % types
        let logicalKind = split == .testLogical && category.logicalKinds > 0
            ? (index / max(types, 1)) % category.logicalKinds : nil
        var scene = category.scene(kind(of: split), productType: type, logicalKind: logicalKind, rng: &rng)
        scene.productType = type
        rendering.vary(&scene, rendering.look(category, seed: seed), size: category.size, rng: &rng)
        return (scene, rng)
    }

    /// Renders one image: the scene, its image, its part mask.
    public static func render(_ category: any SyntheticCategory, seed: UInt64, split: Split, index: Int, size: Size,
                              rendering: Rendering = .reference) -> (scene: Scene, image: Image, mask: Image)
    {
        var (scene, rng) = scene(category, seed: seed, split: split, index: index, rendering: rendering)
        scene.placement.zoom = size.zoom(category)
        let (w, h) = pixelSize(category, size, rendering.look(category, seed: seed))
        let (image, mask) = Canvas.render(scene, width: w, height: h, seed: rng.next())
        return (scene, image, mask)
    }

    static func pixelSize(_ category: any SyntheticCategory, _ size: Size, _ look: Rendering.CategoryLook = .init()) -> (Int, Int) {
        (Int((Double(category.size.width) * look.widthFactor * size.zoom(category)).rounded()),
         Int((Double(category.size.height) * size.zoom(category)).rounded()))
    }

    static func write(_ category: any SyntheticCategory, to dir: URL, seed: UInt64, size: Size, rendering: Rendering) throws {
        let fm = FileManager.default
        if fm.fileExists(atPath: dir.path) { try fm.removeItem(at: dir) }
        let (w, h) = pixelSize(category, size, rendering.look(category, seed: seed))
        var trainTypes: [[String]] = category.productTypes.map { _ in [] }
        var fewShot: [CategoryManifest.FewShotLabel] = []
        let labelled: Set<Int> = category.productTypes.isEmpty ? Set(0..<5) : Set(0..<category.productTypes.count)
        try fm.createDirectory(at: dir.appendingPathComponent("annotations"), withIntermediateDirectories: true)
        for split in Split.allCases {
            let folder = dir.appendingPathComponent(split.rawValue)
            let truth = dir.appendingPathComponent("synthetic_truth/\(split.rawValue)")
            try fm.createDirectory(at: folder, withIntermediateDirectories: true)
            try fm.createDirectory(at: truth, withIntermediateDirectories: true)
            // Images are independent: render and write them on all cores.
            let written = Compute.parallelMap(size.count(split)) { index in
                Result { () throws -> (scene: Scene, mask: Image) in
                    let id = String(format: "%03d", index)
                    let (scene, image, mask) = render(category, seed: seed, split: split, index: index, size: size, rendering: rendering)
                    try PNG.write(image, to: folder.appendingPathComponent("\(id).png"))
                    try PNG.writeMask(mask, to: truth.appendingPathComponent("\(id).png"))
                    if let gt = split.groundTruthFolder {
                        let gtDir = dir.appendingPathComponent("ground_truth/\(gt)/\(id)")
                        try fm.createDirectory(at: gtDir, withIntermediateDirectories: true)
                        for (k, region) in scene.defects.enumerated() {
                            let regionMask = Canvas.regionMask(region.shapes, placement: scene.placement, width: w, height: h,
                                                               value: region.pixelValue)
                            try PNG.write(regionMask, to: gtDir.appendingPathComponent(String(format: "%03d.png", k)))
                        }
                    }
                    return (scene, mask)
                }
            }
            guard split == .train else {
                for result in written { _ = try result.get() }
                continue
            }
            for (index, result) in written.enumerated() {
                let (scene, mask) = try result.get()
                let id = String(format: "%03d", index), path = "\(split.rawValue)/\(id).png"
                if let type = scene.productType { trainTypes[type].append(path) }
                if labelled.contains(index) {
                    fewShot.append(try writeAnnotation(category, scene: scene, mask: mask, id: id, dir: dir, image: path))
                }
            }
        }
        let defects = category.defectTypes.map { d in
            var scaled = d
            if !d.relativeSaturation { scaled.saturationThreshold = (d.saturationThreshold * size.zoom(category) * size.zoom(category)).rounded() }
            return scaled
        }
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(defects).write(to: dir.appendingPathComponent("defects_config.json"))
        let manifest = CategoryManifest(
            category: category.name,
            classes: category.classes.enumerated().map { .init(id: $0.offset, name: $0.element) },
            productTypes: category.productTypes.isEmpty ? nil
                : zip(category.productTypes, trainTypes).map { .init(name: $0.0, images: $0.1) },
            fewShot: fewShot,
            preprocess: .init(cropMargin: category.cropMargin > 0 ? Int((Double(category.cropMargin) * size.zoom(category)).rounded()) : nil,
                              targetSize: size == .small ? 128 : 256),
            rotationDegrees: category.rotationDegrees == CategoryManifest.defaultRotationDegrees ? nil : category.rotationDegrees)
        try manifest.write(to: dir)
    }

    /// A few-shot label: the part mask as a palette PNG, or VIA polygons
    /// traced from the scene's shapes (top-most region first).
    static func writeAnnotation(_ category: any SyntheticCategory, scene: Scene, mask: Image, id: String, dir: URL,
                                image: String) throws -> CategoryManifest.FewShotLabel {
        switch category.annotationFormat {
        case .png, .labelme:
            let path = "annotations/\(id).png"
            try PNG.writeMask(mask, to: dir.appendingPathComponent(path))
            return .init(image: image, annotation: path, format: .png)
        case .via:
            var regions: [[String: Any]] = []
            for layer in scene.layers.reversed() {
                guard case let .paint(_, classID?) = layer.effect, let outline = layer.shape.outline() else { continue }
                let points = outline.map(scene.placement.apply)
                regions.append([
                    "shape_attributes": ["name": "polygon",
                                         "all_points_x": points.map { ($0.x * 10).rounded() / 10 },
                                         "all_points_y": points.map { ($0.y * 10).rounded() / 10 }],
                    "region_attributes": ["label": "\(classID)"],
                ])
            }
            let file = "\(id).png"
            let json: [String: Any] = [file: ["filename": file, "size": -1, "regions": regions, "file_attributes": [:] as [String: Any]]]
            let path = "annotations/\(id).json"
            try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
                .write(to: dir.appendingPathComponent(path))
            return .init(image: image, annotation: path, format: .via)
        }
    }

}
