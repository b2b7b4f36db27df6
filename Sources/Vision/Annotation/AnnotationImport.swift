import Foundation

/// Turns a few-shot annotation (VIA JSON, LabelMe JSON or a PNG class-index
/// mask) into a 1-channel class-index mask the size of its image.
public enum AnnotationImport {
    public static func mask(for label: CategoryManifest.FewShotLabel, manifest: CategoryManifest,
                            categoryRoot: URL, imageWidth: Int, imageHeight: Int) throws -> Image {
        let url = categoryRoot.appendingPathComponent(label.annotation)
        let imageName = (label.image as NSString).lastPathComponent
        switch label.format {
        case .via: return try via(url, imageName: imageName, manifest: manifest, width: imageWidth, height: imageHeight)
        case .labelme: return try labelMe(url, manifest: manifest, width: imageWidth, height: imageHeight)
        case .png: return try png(url, manifest: manifest, width: imageWidth, height: imageHeight)
        }
    }

    // MARK: PNG class-index masks

    public static func png(_ url: URL, manifest: CategoryManifest, width: Int, height: Int) throws -> Image {
        let mask: Image
        do {
            mask = try PNG.read(url, mode: .indices)
        } catch {
            throw DatasetError.badImage(file: url.path, detail: "\(error)")
        }
        guard mask.channels == 1 else {
            throw DatasetError.badImage(file: url.path, detail: "a class-index mask must be gray or palette, found \(mask.channels) channels")
        }
        guard mask.width == width, mask.height == height else {
            throw DatasetError.sizeMismatch(file: url.path, expected: (width, height), found: (mask.width, mask.height))
        }
        if let bad = mask.pixels.first(where: { Int($0) >= manifest.classCount }) {
            throw DatasetError.malformed(file: url.path, field: "",
                                         problem: "pixel value \(bad) is not a class id (the manifest has \(manifest.classCount) classes)")
        }
        return mask
    }

    // MARK: VGG Image Annotator

    /// VIA JSON, either an export (`{key: {filename, regions, ...}}`) or a
    /// project (`{"_via_img_metadata": {...}}`). Regions are filled in reverse
    /// order over background 0, as the PSAD reference does, so the first
    /// region ends up on top. Shapes: polygon, polyline (closed), rect, circle, ellipse.
    public static func via(_ url: URL, imageName: String, manifest: CategoryManifest, width: Int, height: Int) throws -> Image {
        let root = try jsonObject(url)
        let images = (root["_via_img_metadata"] as? [String: Any]) ?? root
        guard let (key, entry) = images.first(where: { ($0.value as? [String: Any])?["filename"] as? String == imageName })
            .map({ ($0.key, $0.value as! [String: Any]) })
        else {
            throw DatasetError.malformed(file: url.path, field: "", problem: "no entry with filename '\(imageName)'")
        }
        let regions: [Any]
        if let list = entry["regions"] as? [Any] {
            regions = list
        } else if let dict = entry["regions"] as? [String: Any] {  // VIA 1.x: {"0": {...}, "1": {...}}
            regions = dict.keys.sorted { (Int($0) ?? 0) < (Int($1) ?? 0) }.map { dict[$0]! }
        } else {
            throw DatasetError.malformed(file: url.path, field: "\(key).regions", problem: "expected a list of regions")
        }
        var mask = Image(width: width, height: height, channels: 1)
        for (i, raw) in regions.enumerated().reversed() {
            let field = "\(key).regions[\(i)]"
            guard let region = raw as? [String: Any], let shape = region["shape_attributes"] as? [String: Any] else {
                throw DatasetError.malformed(file: url.path, field: field, problem: "expected shape_attributes")
            }
            let attributes = region["region_attributes"] as? [String: Any] ?? [:]
            guard let rawLabel = attributes["label"] else {
                throw DatasetError.malformed(file: url.path, field: "\(field).region_attributes.label", problem: "required field is missing")
            }
            let label = (rawLabel as? String) ?? "\(rawLabel)"
            guard let id = manifest.classID(forLabel: label) else {
                throw DatasetError.malformed(file: url.path, field: "\(field).region_attributes.label",
                                             problem: "'\(label)' is neither a class name nor a class id of the manifest")
            }
            try drawVIA(shape, into: &mask, value: UInt8(id), file: url.path, field: "\(field).shape_attributes")
        }
        return mask
    }

    static func drawVIA(_ shape: [String: Any], into mask: inout Image, value: UInt8, file: String, field: String) throws {
        func number(_ key: String) throws -> Double {
            guard let n = shape[key] as? NSNumber else {
                throw DatasetError.malformed(file: file, field: "\(field).\(key)", problem: "expected a number")
            }
            return n.doubleValue
        }
        func numbers(_ key: String) throws -> [Double] {
            guard let list = shape[key] as? [NSNumber] else {
                throw DatasetError.malformed(file: file, field: "\(field).\(key)", problem: "expected a list of numbers")
            }
            return list.map(\.doubleValue)
        }
        switch shape["name"] as? String {
        case "polygon", "polyline":
            let xs = try numbers("all_points_x"), ys = try numbers("all_points_y")
            guard xs.count == ys.count, xs.count >= 3 else {
                throw DatasetError.malformed(file: file, field: field,
                                             problem: "a polygon needs as many x as y values, at least 3 (found \(xs.count) and \(ys.count))")
            }
            Raster.fillPolygon(&mask, xs: xs, ys: ys, value: value)
        case "rect":
            let x = try number("x"), y = try number("y"), w = try number("width"), h = try number("height")
            Raster.fillPolygon(&mask, xs: [x, x + w, x + w, x], ys: [y, y, y + h, y + h], value: value)
        case "circle":
            let r = try number("r")
            Raster.fillEllipse(&mask, cx: try number("cx"), cy: try number("cy"), rx: r, ry: r, value: value)
        case "ellipse":
            Raster.fillEllipse(&mask, cx: try number("cx"), cy: try number("cy"), rx: try number("rx"), ry: try number("ry"),
                               angle: (shape["theta"] as? NSNumber)?.doubleValue ?? 0, value: value)
        case let other:
            throw DatasetError.malformed(file: file, field: "\(field).name",
                                         problem: "unsupported shape \(other.map { "'\($0)'" } ?? "(none)"); expected polygon, polyline, rect, circle or ellipse")
        }
    }

    // MARK: LabelMe

    /// LabelMe JSON: `shapes[i] = {label, points, shape_type}` drawn in order
    /// (later shapes on top); label names map through the manifest's classes.
    public static func labelMe(_ url: URL, manifest: CategoryManifest, width: Int, height: Int) throws -> Image {
        let root = try jsonObject(url)
        if let w = (root["imageWidth"] as? NSNumber)?.intValue, let h = (root["imageHeight"] as? NSNumber)?.intValue,
           (w, h) != (width, height) {
            throw DatasetError.sizeMismatch(file: url.path, expected: (width, height), found: (w, h))
        }
        guard let shapes = root["shapes"] as? [Any] else {
            throw DatasetError.malformed(file: url.path, field: "shapes", problem: "expected a list of shapes")
        }
        var mask = Image(width: width, height: height, channels: 1)
        for (i, raw) in shapes.enumerated() {
            let field = "shapes[\(i)]"
            guard let shape = raw as? [String: Any], let label = shape["label"] as? String else {
                throw DatasetError.malformed(file: url.path, field: "\(field).label", problem: "expected a string")
            }
            guard let id = manifest.classID(forLabel: label) else {
                throw DatasetError.malformed(file: url.path, field: "\(field).label",
                                             problem: "'\(label)' is not a class of the manifest")
            }
            guard let points = shape["points"] as? [[NSNumber]], points.allSatisfy({ $0.count == 2 }) else {
                throw DatasetError.malformed(file: url.path, field: "\(field).points", problem: "expected a list of [x, y] pairs")
            }
            let xs = points.map { $0[0].doubleValue }, ys = points.map { $0[1].doubleValue }
            let type = shape["shape_type"] as? String ?? "polygon"
            switch (type, points.count) {
            case ("polygon", 3...):
                Raster.fillPolygon(&mask, xs: xs, ys: ys, value: UInt8(id))
            case ("rectangle", 2):
                let (x0, x1, y0, y1) = (min(xs[0], xs[1]), max(xs[0], xs[1]), min(ys[0], ys[1]), max(ys[0], ys[1]))
                Raster.fillPolygon(&mask, xs: [x0, x1, x1, x0], ys: [y0, y0, y1, y1], value: UInt8(id))
            case ("circle", 2):
                let r = ((xs[1] - xs[0]) * (xs[1] - xs[0]) + (ys[1] - ys[0]) * (ys[1] - ys[0])).squareRoot()
                Raster.fillEllipse(&mask, cx: xs[0], cy: ys[0], rx: r, ry: r, value: UInt8(id))
            default:
                throw DatasetError.malformed(file: url.path, field: field,
                                             problem: "unsupported shape_type '\(type)' with \(points.count) points (polygon: 3 or more, rectangle and circle: 2)")
            }
        }
        return mask
    }

    static func jsonObject(_ url: URL) throws -> [String: Any] {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw DatasetError.missing(path: url.path, what: "annotation file")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) else {
            throw DatasetError.malformed(file: url.path, field: "", problem: "not valid JSON")
        }
        guard let dict = object as? [String: Any] else {
            throw DatasetError.malformed(file: url.path, field: "", problem: "expected a JSON object at the top level")
        }
        return dict
    }
}
