import Foundation
import Testing
import TestSupport
@testable import Vision

@Suite struct RasterTests {
    func count(_ mask: Image, _ value: UInt8) -> Int { mask.pixels.filter { $0 == value }.count }

    @Test func rectangleWithIntegerCornersCoversExactlyItsArea() {
        var mask = Image(width: 40, height: 30, channels: 1)
        Raster.fillPolygon(&mask, xs: [5, 25, 25, 5], ys: [3, 3, 13, 13], value: 2)
        #expect(count(mask, 2) == 200)
        #expect(mask[x: 5, y: 3, channel: 0] == 2 && mask[x: 24, y: 12, channel: 0] == 2)
        #expect(mask[x: 25, y: 3, channel: 0] == 0 && mask[x: 5, y: 13, channel: 0] == 0)
    }

    @Test func triangleAndCircleAreasAreCloseToGeometry() {
        var mask = Image(width: 200, height: 200, channels: 1)
        Raster.fillPolygon(&mask, xs: [10, 190, 10], ys: [10, 10, 130], value: 1)  // area 180*120/2 = 10800
        #expect(abs(Double(count(mask, 1)) - 10800) < 0.01 * 10800)
        var disc = Image(width: 200, height: 200, channels: 1)
        Raster.fillEllipse(&disc, cx: 100, cy: 100, rx: 60, ry: 60, value: 3)  // pi r^2 = 11309.7
        #expect(abs(Double(count(disc, 3)) - Double.pi * 3600) < 0.01 * Double.pi * 3600)
    }

    @Test func concaveAndSelfOverlappingPolygonsUseEvenOdd() {
        // An L shape: 20x20 square minus its 10x10 top-right quarter = 300.
        var mask = Image(width: 30, height: 30, channels: 1)
        Raster.fillPolygon(&mask, xs: [0, 10, 10, 20, 20, 0], ys: [0, 0, 10, 10, 20, 20], value: 1)
        #expect(count(mask, 1) == 300)
    }

    @Test func shapesOutsideTheImageAreClipped() {
        var mask = Image(width: 10, height: 10, channels: 1)
        Raster.fillPolygon(&mask, xs: [-5, 5, 5, -5], ys: [-5, -5, 5, 5], value: 1)
        Raster.fillEllipse(&mask, cx: 100, cy: 100, rx: 3, ry: 3, value: 2)
        #expect(count(mask, 1) == 25 && count(mask, 2) == 0)
    }
}

/// A category folder with one image and annotation files, for import tests.
struct AnnotatedCategory {
    let dir: TemporaryDirectory
    let manifest: CategoryManifest
    var root: URL { dir.url }

    init() throws {
        dir = try TemporaryDirectory()
        try FileManager.default.createDirectory(at: dir.url.appendingPathComponent("train/good"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: dir.url.appendingPathComponent("labels"), withIntermediateDirectories: true)
        try PNG.write(Image(width: 40, height: 30, channels: 3), to: dir.url.appendingPathComponent("train/good/000.png"))
        manifest = CategoryManifest(
            category: "toy",
            classes: [.init(id: 0, name: "background"), .init(id: 1, name: "box"), .init(id: 2, name: "pin")],
            fewShot: [.init(image: "train/good/000.png", annotation: "labels/000.json", format: .via)],
            preprocess: .init(targetSize: 32))
    }

    func write(_ text: String, _ name: String) throws -> URL {
        let url = root.appendingPathComponent("labels/\(name)")
        try Data(text.utf8).write(to: url)
        return url
    }
}

@Suite struct AnnotationImportTests {
    @Test func viaPolygonsFillInReverseOrderSoTheFirstRegionIsOnTop() throws {
        let c = try AnnotatedCategory()
        // Region 0 (pin, label by id) lies on region 1 (box, label by name).
        let json = #"""
        {"000.png1234": {"filename": "000.png", "size": 1234, "regions": [
          {"shape_attributes": {"name": "polygon", "all_points_x": [10, 20, 20, 10], "all_points_y": [5, 5, 15, 15]},
           "region_attributes": {"label": "2"}},
          {"shape_attributes": {"name": "rect", "x": 0, "y": 0, "width": 30, "height": 20},
           "region_attributes": {"label": "box"}}
        ]}}
        """#
        let url = try c.write(json, "000.json")
        let mask = try AnnotationImport.via(url, imageName: "000.png", manifest: c.manifest, width: 40, height: 30)
        #expect(mask.pixels.filter { $0 == 2 }.count == 100)
        #expect(mask.pixels.filter { $0 == 1 }.count == 600 - 100)
        #expect(mask.pixels.filter { $0 == 0 }.count == 1200 - 600)
    }

    @Test func viaProjectFilesAndOldRegionDictionariesAreRead() throws {
        let c = try AnnotatedCategory()
        let json = #"""
        {"_via_img_metadata": {"k": {"filename": "000.png", "regions": {
          "0": {"shape_attributes": {"name": "circle", "cx": 20, "cy": 15, "r": 5}, "region_attributes": {"label": 1}}
        }}}}
        """#
        let mask = try AnnotationImport.via(try c.write(json, "p.json"), imageName: "000.png", manifest: c.manifest,
                                            width: 40, height: 30)
        #expect(abs(mask.pixels.filter { $0 == 1 }.count - 79) <= 4)
    }

    @Test func labelMeShapesMapLabelNamesThroughTheManifest() throws {
        let c = try AnnotatedCategory()
        let json = #"""
        {"imageWidth": 40, "imageHeight": 30, "shapes": [
          {"label": "box", "shape_type": "rectangle", "points": [[30, 20], [0, 0]]},
          {"label": "pin", "shape_type": "polygon", "points": [[10, 5], [20, 5], [20, 15], [10, 15]]},
          {"label": "pin", "shape_type": "circle", "points": [[35, 25], [37, 25]]}
        ]}
        """#
        let mask = try AnnotationImport.labelMe(try c.write(json, "l.json"), manifest: c.manifest, width: 40, height: 30)
        #expect(mask.pixels.filter { $0 == 1 }.count == 500)
        #expect(mask[x: 15, y: 10, channel: 0] == 2 && mask[x: 35, y: 25, channel: 0] == 2)
    }

    @Test func pngMasksMustMatchTheImageSizeAndUseKnownClasses() throws {
        let c = try AnnotatedCategory()
        let url = c.root.appendingPathComponent("labels/m.png")
        try PNG.write(Image(width: 40, height: 30, channels: 1, value: 2), to: url, palette: [0, 0, 0, 255, 0, 0, 0, 255, 0])
        #expect(try AnnotationImport.png(url, manifest: c.manifest, width: 40, height: 30).pixels.allSatisfy { $0 == 2 })
        #expect(throws: DatasetError.sizeMismatch(file: url.path, expected: (41, 30), found: (40, 30))) {
            try AnnotationImport.png(url, manifest: c.manifest, width: 41, height: 30)
        }
        try PNG.write(Image(width: 40, height: 30, channels: 1, value: 7), to: url)
        #expect(throws: DatasetError.self) { try AnnotationImport.png(url, manifest: c.manifest, width: 40, height: 30) }
    }

    @Test(arguments: [
        (#"{"k": {"filename": "000.png", "regions": [{"shape_attributes": {"name": "polygon", "all_points_x": [1, 2], "all_points_y": [1, 2, 3]}, "region_attributes": {"label": "1"}}]}}"#,
         "k.regions[0].shape_attributes"),
        (#"{"k": {"filename": "000.png", "regions": [{"shape_attributes": {"name": "rect", "x": 1, "y": 1, "width": 3, "height": 3}, "region_attributes": {"label": "lid"}}]}}"#,
         "'lid' is neither"),
        (#"{"k": {"filename": "000.png", "regions": [{"shape_attributes": {"name": "point", "cx": 1, "cy": 1}, "region_attributes": {"label": "1"}}]}}"#,
         "unsupported shape 'point'"),
        (#"{"k": {"filename": "001.png", "regions": []}}"#, "no entry with filename '000.png'"),
        (#"{"k": {"filename": "000.png", "regions": [{"shape_attributes": {"name": "rect", "x": 1, "y": 1, "width": 3, "height": 3}, "region_attributes": {}}]}}"#,
         "region_attributes.label"),
        (#"{"k": [1, 2"#, "not valid JSON"),
    ])
    func badVIAFilesNameTheFieldAndTheProblem(json: String, expected: String) throws {
        let c = try AnnotatedCategory()
        let url = try c.write(json, "bad.json")
        do {
            _ = try AnnotationImport.via(url, imageName: "000.png", manifest: c.manifest, width: 40, height: 30)
            Issue.record("accepted \(json)")
        } catch {
            #expect("\(error)".contains(expected), "\(error)")
            #expect("\(error)".contains(url.path))
        }
    }
}
