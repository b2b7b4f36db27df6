import Foundation
import Testing
import TestSupport
import Tensor
@testable import Vision

@Suite struct PreprocessTests {
    @Test func longSideBecomesTheTargetAndThePaddingIsBottomRight() {
        let p = Preprocessor(targetSize: 64)
        let out = p.image(Image(width: 200, height: 100, channels: 3, value: 200))
        #expect(out.width == 64 && out.height == 64)
        #expect(out[x: 63, y: 31, channel: 0] == 200 && out[x: 0, y: 32, channel: 0] == 0)
    }

    @Test func aSquareFitStretchesWithoutPadding() {
        // PatchCore's input as the reference makes it: the whole (cropped) image on the square.
        let p = Preprocessor(cropMargin: 2, targetSize: 32, fit: .square)
        #expect(p.resizedSize(width: 204, height: 104) == (32, 32))
        let out = p.image(Image(width: 204, height: 104, channels: 3, value: 200))
        #expect(out.width == 32 && out.height == 32 && out.pixels.allSatisfy { $0 == 200 })
    }

    @Test func cropMarginComesOffEverySide() {
        var image = Image(width: 30, height: 20, channels: 1, value: 9)
        image[x: 5, y: 5, channel: 0] = 1
        let cropped = image.cropped(top: 5, left: 5, bottom: 5, right: 5)
        #expect(cropped.width == 20 && cropped.height == 10 && cropped[x: 0, y: 0, channel: 0] == 1)
        #expect(Preprocessor(cropMargin: 5, targetSize: 40).resizedSize(width: 30, height: 20) == (40, 20))
    }

    @Test func shrinkingIsAntialiased() {
        // A 1-pixel checkerboard shrunk by 4 becomes flat gray, not aliased stripes.
        var board = Image(width: 64, height: 64, channels: 1)
        for y in 0..<64 { for x in 0..<64 where (x + y) % 2 == 0 { board[x: x, y: y, channel: 0] = 255 } }
        let small = board.resizedSmooth(width: 16, height: 16)
        #expect(small.pixels.allSatisfy { abs(Int($0) - 128) <= 20 })
    }

    @Test func imagesAndMasksStayAligned() {
        // A bright rectangle drawn in an image and as class 1 in its mask.
        var image = Image(width: 300, height: 180, channels: 3)
        var mask = Image(width: 300, height: 180, channels: 1)
        Raster.fillPolygon(&mask, xs: [90, 210, 210, 90], ys: [40, 40, 130, 130], value: 1)
        for i in 0..<mask.pixels.count where mask.pixels[i] == 1 { for c in 0..<3 { image.pixels[i * 3 + c] = 255 } }
        let p = Preprocessor(cropMargin: 10, targetSize: 100)
        let small = p.image(image), smallMask = p.mask(mask)
        var both = 0, either = 0
        for i in 0..<(100 * 100) {
            let bright = small.pixels[i * 3] > 127, labelled = smallMask.pixels[i] == 1
            if bright && labelled { both += 1 }
            if bright || labelled { either += 1 }
        }
        #expect(Double(both) / Double(either) > 0.95)
    }

    @Test func nearestKeepsClassIdsExact() {
        let mask = Image(width: 6, height: 3, channels: 1, pixels: [0, 0, 3, 3, 5, 5, 0, 0, 3, 3, 5, 5, 0, 0, 3, 3, 5, 5])
        #expect(Set(mask.resizedNearest(width: 17, height: 9).pixels) == [0, 3, 5])
    }
}

/// A tiny category in the LOCO layout, written by hand.
func writeTinyLocoCategory(at root: URL, skip: String? = nil, config: String? = nil) throws {
    let fm = FileManager.default
    for split in Split.allCases where split.rawValue != skip {
        let dir = root.appendingPathComponent(split.rawValue)
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        for id in ["001", "000"] { try PNG.write(Image(width: 8, height: 6, channels: 3), to: dir.appendingPathComponent("\(id).png")) }
    }
    let gt = root.appendingPathComponent("ground_truth/logical_anomalies/000")
    try fm.createDirectory(at: gt, withIntermediateDirectories: true)
    try PNG.write(Image(width: 8, height: 6, channels: 1, value: 1), to: gt.appendingPathComponent("000.png"))
    let defects = config ?? #"[{"defect_name": "extra_pin", "pixel_value": 1, "saturation_threshold": 0.5, "relative_saturation": true}]"#
    try Data(defects.utf8).write(to: root.appendingPathComponent("defects_config.json"))
}

@Suite struct LocoLayoutTests {
    @Test func listsSplitsInSortedOrderWithGroundTruth() throws {
        let dir = try TemporaryDirectory()
        try writeTinyLocoCategory(at: dir.url)
        let category = try LocoCategory(root: dir.url)
        #expect(category[.train].map(\.id) == ["000", "001"])
        #expect(category[.testLogical][0].groundTruth.map(\.lastPathComponent) == ["000.png"])
        #expect(category[.testLogical][1].groundTruth.isEmpty)
        #expect(category.defect(pixelValue: 1)?.defectName == "extra_pin")
        #expect(category.defects[0].relativeSaturation)
    }

    @Test func aMissingRequiredSplitIsNamed() throws {
        let dir = try TemporaryDirectory()
        try writeTinyLocoCategory(at: dir.url, skip: "train/good")
        #expect(throws: DatasetError.missing(path: dir.url.appendingPathComponent("train/good").path,
                                             what: "split folder train/good")) { try LocoCategory(root: dir.url) }
    }

    /// Real categories need not have every split: no validation images, or
    /// anomalies of one kind only.
    @Test(arguments: ["validation/good", "test/structural_anomalies", "test/logical_anomalies"])
    func anOptionalSplitMayBeAbsent(split: String) throws {
        let dir = try TemporaryDirectory()
        try writeTinyLocoCategory(at: dir.url, skip: split)
        let category = try LocoCategory(root: dir.url)
        #expect(category[Split(rawValue: split)!].isEmpty && category[.train].count == 2)
    }

    @Test func aCategoryWithoutAnyAnomalyIsNamed() throws {
        let dir = try TemporaryDirectory()
        try writeTinyLocoCategory(at: dir.url, skip: "test/structural_anomalies")
        try FileManager.default.removeItem(at: dir.url.appendingPathComponent("test/logical_anomalies"))
        #expect(throws: DatasetError.missing(path: dir.url.appendingPathComponent("test").path,
                                             what: "anomalous test images (test/logical_anomalies or test/structural_anomalies)")) {
            try LocoCategory(root: dir.url)
        }
    }

    @Test func anEmptySplitIsNamed() throws {
        let dir = try TemporaryDirectory()
        try writeTinyLocoCategory(at: dir.url)
        for f in ["000.png", "001.png"] {
            try FileManager.default.removeItem(at: dir.url.appendingPathComponent("test/good/\(f)"))
        }
        #expect(throws: DatasetError.emptySplit(path: dir.url.appendingPathComponent("test/good").path)) {
            try LocoCategory(root: dir.url)
        }
    }

    @Test(arguments: [
        (#"[{"defect_name": "x", "pixel_value": 1, "saturation_threshold": 0.5}]"#, "relative_saturation"),
        (#"[{"defect_name": "x", "pixel_value": 0, "saturation_threshold": 0.5, "relative_saturation": true}]"#, "[0].pixel_value"),
        (#"[{"defect_name": "x", "pixel_value": 1, "saturation_threshold": "big", "relative_saturation": true}]"#, "saturation_threshold"),
        (#"{"oops": "#, "not valid JSON"),
    ])
    func malformedDefectsConfigNamesTheField(json: String, field: String) throws {
        let dir = try TemporaryDirectory()
        try writeTinyLocoCategory(at: dir.url, config: json)
        do {
            _ = try LocoCategory(root: dir.url)
            Issue.record("accepted \(json)")
        } catch {
            #expect("\(error)".contains(field), "\(error)")
            #expect("\(error)".contains("defects_config.json"))
        }
    }
}

@Suite struct ManifestTests {
    func manifestFile(_ json: String) throws -> (TemporaryDirectory, URL) {
        let c = try AnnotatedCategory()
        try Data("{}".utf8).write(to: c.root.appendingPathComponent("labels/000.json"))
        try Data(json.utf8).write(to: c.root.appendingPathComponent(CategoryManifest.fileName))
        return (c.dir, c.root)
    }

    static let good = #"""
    {"category": "toy", "classes": [{"id": 0, "name": "background"}, {"id": 1, "name": "box"}],
     "product_types": [{"name": "a", "index_range": [0, 0]}],
     "few_shot": [{"image": "train/good/000.png", "annotation": "labels/000.json", "format": "via"}],
     "preprocess": {"target_size": 64, "crop_margin": 2}, "histogram_classes": [1]}
    """#

    @Test func aGoodManifestLoadsAndRoundTrips() throws {
        let (dir, root) = try manifestFile(Self.good)
        let m = try CategoryManifest.load(categoryRoot: root)
        #expect(m.classCount == 2 && m.preprocess.cropMargin == 2 && m.fewShot[0].format == .via)
        #expect(m.rotationDegrees == nil && m.augmentationRotationDegrees == 20)
        #expect(m.classID(forLabel: "box") == 1 && m.classID(forLabel: "1") == 1 && m.classID(forLabel: "lid") == nil)
        try m.write(to: root)
        #expect(try CategoryManifest.load(categoryRoot: root) == m)
        _ = dir
    }

    @Test(arguments: [
        (#""target_size": 64"#, #""target_size": "big""#, "preprocess.target_size"),
        (#"{"id": 1, "name": "box"}"#, #"{"id": 2, "name": "box"}"#, "classes[1].id"),
        (#""format": "via""#, #""format": "coco""#, "few_shot[0].format"),
        (#""annotation": "labels/000.json""#, #""annotation": "labels/404.json""#, "few_shot[0].annotation"),
        (#""index_range": [0, 0]"#, #""index_range": [3, 1]"#, "product_types[0].index_range"),
        (#""histogram_classes": [1]"#, #""histogram_classes": [5]"#, "histogram_classes[0]"),
        (#""histogram_classes": [1]"#, #""histogram_classes": [1], "rotation_degrees": 270"#, "rotation_degrees"),
        (#""category": "toy", "#, "", "category"),
    ])
    func badFieldsAreNamed(from: String, to: String, field: String) throws {
        let (dir, root) = try manifestFile(Self.good.replacingOccurrences(of: from, with: to))
        do {
            _ = try CategoryManifest.load(categoryRoot: root)
            Issue.record("accepted a manifest with a bad \(field)")
        } catch {
            #expect("\(error)".contains(field), "\(error)")
            #expect("\(error)".contains(CategoryManifest.fileName))
        }
        _ = dir
    }
}

@Suite struct AugmentTests {
    @Test func aQuarterTurnMovesTheTopRowToTheRightColumn() {
        // Counter-clockwise in image coordinates (y down): angle +pi/2 maps (x, y) -> (-y, x) about the centre.
        var image = Image(width: 4, height: 4, channels: 1)
        for x in 0..<4 { image[x: x, y: 0, channel: 0] = 200 }
        let turned = image.rotated(by: Double.pi / 2, nearest: true)
        #expect((0..<4).allSatisfy { turned[x: 3, y: $0, channel: 0] == 200 })
        #expect(turned.pixels.filter { $0 == 200 }.count == 4)
    }

    @Test func imageAndMaskRotateTogether() {
        var image = Image(width: 40, height: 30, channels: 3), mask = Image(width: 40, height: 30, channels: 1)
        Raster.fillPolygon(&mask, xs: [10, 25, 25, 10], ys: [8, 8, 20, 20], value: 1)
        for i in 0..<mask.pixels.count where mask.pixels[i] == 1 { for c in 0..<3 { image.pixels[i * 3 + c] = 255 } }
        let a = 0.4
        let ri = image.rotated(by: a, nearest: false), rm = mask.rotated(by: a, nearest: true)
        var agree = 0, labelled = 0
        for i in 0..<rm.pixels.count where rm.pixels[i] == 1 { labelled += 1; if ri.pixels[i * 3] > 127 { agree += 1 } }
        #expect(labelled > 150 && Double(agree) / Double(labelled) > 0.95)
    }

    /// The rotation, the colour operations and the resizing round without
    /// libm; the integers and bytes are libm's `floor` and `round` (half away
    /// from zero) on every kind of value: integers, halves, a hair either
    /// side of them, negatives, levels past 255.
    @Test func theRotationsRoundingIsLibms() {
        var values: [Double] = [0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 255.5, 254.49999999999997, 1 - 1e-16, -1e-300, 1e-300]
        for n in -40...300 {
            let x = Double(n)
            values += [x, x + 0.5, x - 0.5, x.nextUp, x.nextDown, (x + 0.5).nextUp, (x + 0.5).nextDown, x + 0.25, x - 0.75]
        }
        var state: UInt64 = 11
        for _ in 0..<10_000 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            values.append(Double(state >> 11) / Double(1 << 53) * 700 - 200)
        }
        for x in values {
            #expect(ExactRounding.floor(x) == Int(x.rounded(.down)), "floor \(x)")
            #expect(ExactRounding.halfAway(x) == Int(x.rounded()), "round \(x)")
            #expect(ExactRounding.byte(x) == UInt8(min(max(x.rounded(), 0), 255)), "byte \(x)")
            // The Float path (resizing): the same values as floats, and their neighbours.
            for f in [Float(x), Float(x).nextUp, Float(x).nextDown] {
                #expect(ExactRounding.halfAway(f) == Int(f.rounded()), "round \(f)")
                #expect(ExactRounding.byte(f) == UInt8(min(max(f.rounded(), 0), 255)), "byte \(f)")
            }
        }
    }

    /// The rotation as it was written with libm's `round` and `floor` and a
    /// bounds check per corner: the kernel gives its bytes exactly.
    @Test func theRotationGivesTheSameBytesAsTheLibmVersion() {
        func reference(_ image: Image, _ angle: Double, nearest: Bool) -> Image {
            var out = Image(width: image.width, height: image.height, channels: image.channels)
            let (width, height, channels) = (image.width, image.height, image.channels)
            RotationGrid.forEachPixel(width: width, height: height, angle: angle) { x, y, sx, sy in
                let o = (y * width + x) * channels
                if nearest {
                    let ix = Int(sx.rounded()), iy = Int(sy.rounded())
                    guard ix >= 0, iy >= 0, ix < width, iy < height else { return }
                    for k in 0..<channels { out.pixels[o + k] = image.pixels[(iy * width + ix) * channels + k] }
                } else {
                    let x0 = Int(sx.rounded(.down)), y0 = Int(sy.rounded(.down))
                    guard x0 >= -1, y0 >= -1, x0 < width, y0 < height else { return }
                    let fx = sx - Double(x0), fy = sy - Double(y0)
                    for k in 0..<channels {
                        func at(_ xx: Int, _ yy: Int) -> Double {
                            (xx >= 0 && yy >= 0 && xx < width && yy < height) ? Double(image.pixels[(yy * width + xx) * channels + k]) : 0
                        }
                        let top: Double = (1 - fx) * at(x0, y0) + fx * at(x0 + 1, y0)
                        let bottom: Double = (1 - fx) * at(x0, y0 + 1) + fx * at(x0 + 1, y0 + 1)
                        let v: Double = (1 - fy) * top + fy * bottom
                        out.pixels[o + k] = UInt8(min(max(v.rounded(), 0), 255))
                    }
                }
            }
            return out
        }
        var state: UInt32 = 3
        for (w, h, c) in [(37, 29, 3), (16, 16, 1), (5, 41, 3)] {
            var image = Image(width: w, height: h, channels: c)
            for i in image.pixels.indices { state = state &* 1_664_525 &+ 1_013_904_223; image.pixels[i] = UInt8(state >> 24) }
            for angle in [0, 0.3, -0.35, Double.pi / 2, Double.pi, -2.2, 3.0, 0.7853981633974483] {
                for nearest in [false, true] {
                    #expect(image.rotated(by: angle, nearest: nearest).pixels == reference(image, angle, nearest: nearest).pixels,
                            "\(w)x\(h)x\(c), angle \(angle), nearest \(nearest)")
                }
            }
        }
    }

    /// A float tensor's planes rotate as the image does: the same sampling,
    /// before the image's rounding to a byte (so within half a level).
    @Test func tensorPlanesRotateAsTheImage() {
        var image = Image(width: 23, height: 17, channels: 2)
        var state: UInt32 = 7
        for i in image.pixels.indices { state = state &* 1_664_525 &+ 1_013_904_223; image.pixels[i] = UInt8(state >> 24) }
        var planes = Tensor(zeros: [1, 2, 17, 23])
        for c in 0..<2 { for y in 0..<17 { for x in 0..<23 { planes[0, c, y, x] = Float(image[x: x, y: y, channel: c]) } } }
        for angle in [0.4, -1.1, 2.9] {
            let turned = image.rotated(by: angle, nearest: false), turnedPlanes = planes.rotatedPlanes(by: angle)
            var worst: Float = 0
            for c in 0..<2 { for y in 0..<17 { for x in 0..<23 {
                worst = max(worst, abs(turnedPlanes[0, c, y, x] - Float(turned[x: x, y: y, channel: c])))
            } } }
            // 0.5 of the rounding, plus float against double sums of four terms under 256.
            #expect(worst <= 0.5 + 1e-3, "angle \(angle): \(worst)")
        }
    }

    /// Turning by -a undoes turning by a where every sample stayed inside:
    /// bilinear sampling reproduces a linear plane exactly; outside, 0.
    @Test func rotatingPlanesBackRestoresTheInterior() {
        let h = 40, w = 50
        var plane = Tensor(zeros: [1, 1, h, w])
        for y in 0..<h { for x in 0..<w { plane[0, 0, y, x] = 2 * Float(x) + 3 * Float(y) + 1 } }
        let a = 0.35
        let back = plane.rotatedPlanes(by: a).rotatedPlanes(by: -a)
        var worst: Float = 0, compared = 0
        for y in 0..<h { for x in 0..<w {
            let dx = Double(x) + 0.5 - Double(w) / 2, dy = Double(y) + 0.5 - Double(h) / 2
            guard (dx * dx + dy * dy).squareRoot() < Double(min(h, w)) / 2 - 2 else { continue }
            worst = max(worst, abs(back[0, 0, y, x] - plane[0, 0, y, x])); compared += 1
        } }
        #expect(compared > 900 && worst < 1e-3, "\(compared) pixels, worst \(worst)")
        // A corner turned by 45 degrees samples outside: 0; the centre keeps its value.
        let ones = Tensor(zeros: [1, 1, h, w], value: 1).rotatedPlanes(by: Double.pi / 4)
        #expect(ones[0, 0, 0, 0] == 0 && ones[0, 0, h / 2, w / 2] == 1)
    }

    @Test func colourOperationsByHand() {
        let image = Image(width: 2, height: 1, channels: 3, pixels: [10, 200, 130, 255, 0, 127])
        #expect(image.posterized(bits: 4).pixels == [0, 192, 128, 240, 0, 112])
        #expect(image.solarized().pixels == [10, 55, 125, 0, 0, 127])
        #expect(image.grayscale().pixels == [135, 135, 135, 91, 91, 91])
        #expect(image.tinted(gains: [1, 0.5, 2]).pixels == [10, 100, 255, 255, 0, 254])
        let flat = Image(width: 3, height: 3, channels: 1, value: 90)
        #expect(flat.sharpened() == flat && flat.equalized() == flat)
    }
}

/// `resizedSmooth` against Pillow's `BILINEAR` resize (ops/fixtures/pil_resize.py):
/// shrinking by 2.3 to 10, enlarging, gray and RGB, one axis alone.
@Suite struct ResizeFixtureTests {
    struct Case: Decodable {
        let height: Int, width: Int, channels: Int, outHeight: Int, outWidth: Int
        let input: [UInt8], output: [UInt8]
    }

    /// Pillow rounds its horizontal pass to 8 bits (error at most 1/2), this
    /// keeps it in Float; the vertical pass is a convex combination, so the
    /// exact outputs differ by at most 1/2 before the final rounding, and
    /// the rounded ones by at most one grey level.
    @Test func matchesPillowWithinOneGreyLevel() throws {
        let url = try #require(Bundle.module.url(forResource: "Fixtures/resize", withExtension: "json"))
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        struct File: Decodable { let cases: [Case] }
        let cases = try decoder.decode(File.self, from: Data(contentsOf: url)).cases
        #expect(cases.count == 5)
        for c in cases {
            var image = Image(width: c.width, height: c.height, channels: c.channels)
            image.pixels = c.input
            let out = image.resizedSmooth(width: c.outWidth, height: c.outHeight)
            #expect(out.width == c.outWidth && out.height == c.outHeight && out.channels == c.channels)
            let differences = zip(out.pixels, c.output).map { abs(Int($0) - Int($1)) }
            #expect(differences.max() ?? 9 <= 1, "\(c.width)x\(c.height) -> \(c.outWidth)x\(c.outHeight): largest difference \(differences.max() ?? -1)")
            // Most exact: a misplaced tap or weight would move most of them (measured: 2-18% differ).
            #expect(differences.filter { $0 > 0 }.count * 4 <= differences.count, "\(differences.filter { $0 > 0 }.count) of \(differences.count) differ")
        }
    }
}
