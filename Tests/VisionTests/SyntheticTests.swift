import Foundation
import Testing
import TestSupport
@testable import Vision

@Suite struct SyntheticBenchmarkTests {
    static let names = SyntheticBenchmark.categories.map(\.name)

    /// The generator knows the truth: every normal image keeps its category's
    /// rules and every logical anomaly breaks at least one, read back from the
    /// rendered part mask alone; so in the varied rendering (the second benchmark).
    @Test(arguments: names, Rendering.allCases)
    func normalImagesKeepTheRulesAndLogicalAnomaliesBreakOne(name: String, rendering: Rendering) throws {
        let category = try #require(SyntheticBenchmark.category(named: name))
        for split in [Split.train, .testGood, .testStructural, .testLogical] {
            for index in 0..<6 {
                let (scene, _, mask) = SyntheticBenchmark.render(category, seed: 7, split: split, index: index, size: .small, rendering: rendering)
                let broken = category.ruleViolations(mask, zoom: 0.5)
                if split == .testLogical {
                    #expect(!broken.isEmpty, "\(name) logical #\(index) keeps every rule")
                    #expect(!scene.defects.isEmpty)
                } else if split == .testStructural {
                    #expect(!scene.defects.isEmpty, "\(name) structural #\(index) has no defect region")
                } else {
                    #expect(broken.isEmpty, "\(name) \(split.rawValue) #\(index): \(broken)")
                    #expect(scene.defects.isEmpty)
                }
            }
        }
    }

    /// Structural defects are visible at the 256-px working size, as MVTec
    /// LOCO's are: every defect region covers at least 32 working-size pixels
    /// (two cells of the stride-4 part masks). The generator's first
    /// washer scratches (2 px wide on a 380-px scene) covered 20-23.
    @Test(arguments: names)
    func structuralDefectsCoverSeveralMaskCellsAtTheWorkingSize(name: String) throws {
        let category = try #require(SyntheticBenchmark.category(named: name))
        let (w, h) = SyntheticBenchmark.pixelSize(category, .default)
        let working = Preprocessor(cropMargin: category.cropMargin, targetSize: 256).resizedSize(width: w, height: h)
        let scale = Double(working.width * working.height) / Double((w - 2 * category.cropMargin) * (h - 2 * category.cropMargin))
        for index in 0..<16 {
            let scene = SyntheticBenchmark.scene(category, seed: 0, split: .testStructural, index: index).scene
            for region in scene.defects {
                let mask = Canvas.regionMask(region.shapes, placement: scene.placement, width: w, height: h, value: 1)
                let area = Double(mask.pixels.filter { $0 != 0 }.count) * scale
                #expect(area >= 32, "\(name) structural #\(index) (defect \(region.pixelValue)): \(Int(area)) px at 256 px")
            }
        }
    }

    /// Every defect type a category declares in `defects_config.json` occurs
    /// among the default benchmark's 40 images of its split (a declared type
    /// with no image would be missing from the per-type tables), and the
    /// first logical image of each type breaks a rule.
    @Test(arguments: names)
    func everyDeclaredDefectTypeOccursInTheDefaultTestSet(name: String) throws {
        let category = try #require(SyntheticBenchmark.category(named: name))
        var seen: Set<Int> = [], firstLogical: [Int: Int] = [:]
        for split in [Split.testLogical, .testStructural] {
            for index in 0..<SyntheticBenchmark.Size.default.count(split) {
                for region in SyntheticBenchmark.scene(category, seed: 0, split: split, index: index).scene.defects {
                    seen.insert(Int(region.pixelValue))
                    if split == .testLogical, firstLogical[Int(region.pixelValue)] == nil { firstLogical[Int(region.pixelValue)] = index }
                }
            }
        }
        #expect(seen == Set(category.defectTypes.map(\.pixelValue)), "\(name): seen \(seen.sorted())")
        for (value, index) in firstLogical {
            let mask = SyntheticBenchmark.render(category, seed: 0, split: .testLogical, index: index, size: .small).mask
            #expect(!category.ruleViolations(mask, zoom: 0.5).isEmpty, "\(name) logical #\(index) (defect \(value)) keeps every rule")
        }
    }

    /// The varied rendering: per category another tint and a wider canvas
    /// (the same for all its images), per image another brightness and more
    /// jitter; the same seed draws the same images, and the part mask is the
    /// reference's mask moved, not another scene.
    @Test(arguments: names)
    func theVariedRenderingChangesTheLookNotTheScene(name: String) throws {
        let category = try #require(SyntheticBenchmark.category(named: name))
        let reference = SyntheticBenchmark.render(category, seed: 3, split: .train, index: 1, size: .small)
        let varied = SyntheticBenchmark.render(category, seed: 3, split: .train, index: 1, size: .small, rendering: .varied)
        let again = SyntheticBenchmark.render(category, seed: 3, split: .train, index: 1, size: .small, rendering: .varied)
        let other = SyntheticBenchmark.render(category, seed: 3, split: .train, index: 2, size: .small, rendering: .varied)
        #expect(varied.image.pixels == again.image.pixels && varied.mask.pixels == again.mask.pixels)
        #expect(varied.image.height == reference.image.height && other.image.width == varied.image.width)
        #expect(varied.image.width >= reference.image.width)
        #expect(varied.scene.layers.count == reference.scene.layers.count)
        // The same parts, painted: class areas within the few percent a
        // rotation and the edge pixels change.
        for c in 1..<category.classes.count {
            let a = reference.mask.pixels.filter { Int($0) == c }.count, b = varied.mask.pixels.filter { Int($0) == c }.count
            #expect(abs(a - b) <= max(8, a / 10), "\(name) class \(c): \(a) vs \(b) pixels")
        }
        let colours = { (scene: Scene) in scene.background.colour }
        #expect(colours(varied.scene) != colours(reference.scene))
    }

    /// At LOCO's scale: 1,600 px on the long side, and pin_grid labelled per
    /// compartment (26 classes, like pushpins) with the same rules.
    @Test func locoSizeDrawsLargeImagesAndTwentySixPinGridClasses() throws {
        let fine = try #require(SyntheticBenchmark.categories(.loco).first { $0.name == "pin_grid" })
        #expect(fine.classes.count == 26 && Set(fine.classes).count == 26)
        #expect(SyntheticBenchmark.categories(.loco).map { SyntheticBenchmark.pixelSize($0, .loco) }.allSatisfy { max($0.0, $0.1) == 1600 })
        #expect(SyntheticBenchmark.Size.loco.count(.train) == 350 && SyntheticBenchmark.Size.loco.count(.testLogical) == 100)
        // Rendered at a quarter of LOCO's zoom to keep the test fast; classes and rules do not depend on the zoom.
        let normal = SyntheticBenchmark.render(fine, seed: 0, split: .train, index: 0, size: .default).mask
        let ids = Set(normal.pixels)
        #expect(ids.isSubset(of: Set(0..<26)) && ids.count == 26, "\(ids.sorted())")
        #expect(fine.ruleViolations(normal, zoom: 1).isEmpty)
        let logical = SyntheticBenchmark.render(fine, seed: 0, split: .testLogical, index: 0, size: .default).mask
        #expect(!fine.ruleViolations(logical, zoom: 1).isEmpty)
    }

    @Test func sameSeedSameImagesOtherSeedOtherImages() throws {
        let category = PinGrid()
        let a = SyntheticBenchmark.render(category, seed: 1, split: .train, index: 3, size: .small)
        let b = SyntheticBenchmark.render(category, seed: 1, split: .train, index: 3, size: .small)
        let c = SyntheticBenchmark.render(category, seed: 2, split: .train, index: 3, size: .small)
        #expect(a.image == b.image && a.mask == b.mask)
        #expect(a.image != c.image)
    }

    @Test func normalImagesDifferAtThePixelLevel() {
        // No pixel-exact template: two normal images differ in most pixels.
        for category in SyntheticBenchmark.categories {
            let a = SyntheticBenchmark.render(category, seed: 1, split: .train, index: 0, size: .small).image
            let b = SyntheticBenchmark.render(category, seed: 1, split: .train, index: 3, size: .small).image
            let differing = zip(a.pixels, b.pixels).filter { abs(Int($0) - Int($1)) > 8 }.count
            #expect(Double(differing) > 0.2 * Double(a.pixels.count), "\(category.name)")
        }
    }

    @Test func writesALayoutThatReadsBackWithItsManifest() throws {
        let dir = try TemporaryDirectory()
        try SyntheticBenchmark.write(to: dir.url, seed: 3, size: .small, only: ["pin_grid", "cable_pair", "bolt_bag"])
        for name in ["pin_grid", "cable_pair", "bolt_bag"] {
            let root = dir.url.appendingPathComponent(name)
            let category = try LocoCategory(root: root)
            let manifest = try CategoryManifest.load(categoryRoot: root)
            let spec = try #require(SyntheticBenchmark.category(named: name))
            #expect(category[.train].count == 8 && category[.testLogical].count == 4)
            #expect(manifest.classCount == spec.classes.count)
            // bolt_bag's loose parts rotate by any angle (the reference's screw_bag); the others by 20 degrees.
            #expect(manifest.augmentationRotationDegrees == (name == "bolt_bag" ? 180 : 20))
            #expect(category.defects.count == spec.defectTypes.count)
            // Every anomalous image has ground truth, with known pixel values.
            for sample in category[.testLogical] + category[.testStructural] {
                #expect(!sample.groundTruth.isEmpty, "\(sample.url.path)")
                for url in sample.groundTruth {
                    let gt = try PNG.read(url)
                    let values = Set(gt.pixels).subtracting([0])
                    #expect(values.count == 1 && category.defect(pixelValue: Int(values.first!)) != nil)
                }
            }
            // Few-shot labels import to masks close to the truth.
            for label in manifest.fewShot {
                let image = try PNG.read(root.appendingPathComponent(label.image))
                let imported = try AnnotationImport.mask(for: label, manifest: manifest, categoryRoot: root,
                                                         imageWidth: image.width, imageHeight: image.height)
                let truth = try PNG.read(root.appendingPathComponent("synthetic_truth/\(label.image)"), mode: .indices)
                let agree = zip(imported.pixels, truth.pixels).filter { $0 == $1 }.count
                #expect(Double(agree) > 0.95 * Double(truth.pixels.count), "\(name) \(label.image): \(agree)/\(truth.pixels.count)")
            }
        }
        let types = try CategoryManifest.load(categoryRoot: dir.url.appendingPathComponent("cable_pair")).productTypes
        #expect(types?.map(\.name) == ["2_slots", "3_slots", "5_slots"])
        #expect(types?.map { $0.images?.count ?? 0 }.reduce(0, +) == 8)
    }
}

/// The renderer's per-pixel tests take the rotation's cosine and sine once;
/// they answer as the formulas that take them for every point.
@Suite struct SyntheticGeometryTests {
    @Test func theRenderersContainmentAndInverseAreTheFormulasPerPoint() {
        var state: UInt64 = 5
        func uniform(_ lo: Double, _ hi: Double) -> Double {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return lo + (hi - lo) * Double(state >> 11) / Double(1 << 53)
        }
        var inside = 0, tested = 0
        for _ in 0..<40 {
            let angle = uniform(-4, 4), c = Point(uniform(20, 80), uniform(20, 80))
            let (w, h, rx, ry) = (uniform(10, 40), uniform(10, 40), uniform(5, 30), uniform(5, 30))
            let r = min(w, h) * uniform(0, 0.5)
            let placement = Placement(centre: Point(uniform(0, 100), uniform(0, 100)), angle: uniform(-0.5, 0.5),
                                      shift: Point(uniform(-9, 9), uniform(-9, 9)), zoom: uniform(0.3, 2))
            for _ in 0..<500 {
                let q = Point(uniform(0, 100), uniform(0, 100))
                // The inverse placement, cos and sin per point.
                let d = q * (1 / placement.zoom) - placement.shift - placement.centre
                let (ca, sa) = (cos(placement.angle), sin(placement.angle))
                let expected = Point(placement.centre.x + ca * d.x + sa * d.y, placement.centre.y - sa * d.x + ca * d.y)
                let p = placement.inverse(q)
                #expect(p.x == expected.x && p.y == expected.y)
                // Ellipse and rounded rectangle, cos and sin of -angle per point.
                let (u, v) = rotate(p - c, -angle)
                let inEllipse = (u * u) / (rx * rx) + (v * v) / (ry * ry) <= 1
                let qx = abs(u) - (w / 2 - r), qy = abs(v) - (h / 2 - r)
                let inRect = qx <= 0 || qy <= 0 ? abs(u) <= w / 2 && abs(v) <= h / 2 : qx * qx + qy * qy <= r * r
                let ellipse = Shape.ellipse(centre: c, rx: rx, ry: ry, angle: angle)
                let rect = Shape.roundedRect(centre: c, width: w, height: h, radius: r, angle: angle)
                #expect(ellipse.containment(p) == inEllipse && ellipse.contains(p) == inEllipse)
                #expect(rect.containment(p) == inRect && rect.contains(p) == inRect)
                inside += (inEllipse ? 1 : 0) + (inRect ? 1 : 0)
                tested += 2
            }
        }
        // Both answers occur, so the comparison says something.
        #expect(inside > tested / 20 && inside < tested * 19 / 20)
    }
}
