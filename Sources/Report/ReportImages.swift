import Foundation
import Vision

/// The pictures of a report, made from what the stages wrote: a test image
/// (read from the dataset and preprocessed as the stages saw it) with its
/// predicted part segmentation blended in, and its anomaly map in colour.
struct ReportImages {
    let category: LocoCategory
    let preprocessor: Preprocessor

    init(categoryRoot: URL, size: Int) throws {
        category = try LocoCategory(root: categoryRoot)
        var settings = try CategoryManifest.load(categoryRoot: categoryRoot).preprocess
        settings.targetSize = size
        preprocessor = Preprocessor(settings)
    }

    /// The preprocessed test image `test/<split>/<id>.png`, or nil if the
    /// dataset does not list it.
    func image(split: String, id: String) throws -> Image? {
        guard let split = Split(rawValue: "test/\(split)"), let sample = category[split].first(where: { $0.id == id }) else { return nil }
        return preprocessor.image(try PNG.read(sample.url))
    }

    /// The part mask (a palette PNG of class indices) blended over the image
    /// where a part was predicted; over black when there is no image.
    static func overlay(_ image: Image?, mask: Data, size: Int) throws -> Data {
        let indices = try PNG.decode(mask, source: "part mask", mode: .indices)
        let colours = try PNG.decode(mask, source: "part mask", mode: .colours).rgb()
        let base = image?.rgb() ?? Image(width: indices.width, height: indices.height, channels: 3)
        guard base.width == indices.width, base.height == indices.height else {
            throw PNGError.corrupt(file: "part mask", detail: "\(indices.width)x\(indices.height), the image is \(base.width)x\(base.height)")
        }
        var out = base
        for p in 0..<(indices.width * indices.height) where indices.pixels[p * indices.channels] != 0 {
            for c in 0..<3 {
                out.pixels[p * 3 + c] = UInt8((Double(base.pixels[p * 3 + c]) * 0.45 + Double(colours.pixels[p * 3 + c]) * 0.55).rounded())
            }
        }
        return try PNG.encode(out)
    }

    /// An 8-bit gray anomaly map through a dark-blue-to-yellow colour scale
    /// (low is dark, high is bright, so it also reads in gray print).
    static func heat(_ map: Data) throws -> Data {
        let gray = try PNG.decode(map, source: "anomaly map", mode: .colours)
        var out = Image(width: gray.width, height: gray.height, channels: 3)
        for p in 0..<(gray.width * gray.height) {
            let rgb = colour(gray.pixels[p * gray.channels])
            out.pixels[p * 3] = rgb.0; out.pixels[p * 3 + 1] = rgb.1; out.pixels[p * 3 + 2] = rgb.2
        }
        return try PNG.encode(out)
    }

    /// Stops of the colour scale at 0, 1/4, 1/2, 3/4 and 1 (viridis' ends and quartiles).
    static let stops: [(Double, Double, Double)] = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]

    static func colour(_ value: UInt8) -> (UInt8, UInt8, UInt8) {
        let t = Double(value) / 255 * Double(stops.count - 1)
        let i = min(Int(t), stops.count - 2), f = t - Double(i)
        let a = stops[i], b = stops[i + 1]
        func mix(_ x: Double, _ y: Double) -> UInt8 { UInt8((x + (y - x) * f).rounded()) }
        return (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
    }
}
