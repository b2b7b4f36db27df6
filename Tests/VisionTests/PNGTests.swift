import Foundation
import Testing
import TestSupport
@testable import Vision

@Suite struct PNGTests {
    func fixture(_ name: String) throws -> URL {
        try #require(Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: "png"))
    }

    static func pattern(width: Int, height: Int, channels: Int) -> Image {
        var image = Image(width: width, height: height, channels: channels)
        for i in 0..<image.pixels.count { image.pixels[i] = UInt8((i * 37 + 11) % 256) }
        return image
    }

    @Test(arguments: [1, 2, 3, 4])
    func roundTripEveryChannelCount(channels: Int) throws {
        let image = Self.pattern(width: 7, height: 5, channels: channels)
        let back = try PNG.decode(try PNG.encode(image), source: "mem")
        #expect(back == image)
    }

    @Test func paletteMaskReadsAsIndicesOrColours() throws {
        let mask = Image(width: 3, height: 1, channels: 1, pixels: [0, 2, 1])
        let palette: [UInt8] = [0, 0, 0, 255, 0, 0, 0, 0, 255]
        let data = try PNG.encode(mask, palette: palette)
        #expect(try PNG.decode(data, source: "m", mode: .indices) == mask)
        #expect(try PNG.decode(data, source: "m", mode: .colours).pixels == [0, 0, 0, 0, 0, 255, 255, 0, 0])
    }

    /// Masks of more than 16 classes (LOCO's pushpins has 26) keep every
    /// class id; masks of up to 16 are the bytes they always were.
    @Test func masksOfUpTo256ClassesKeepTheirIds() throws {
        for classes in [2, 16, 17, 26, 256] {
            let mask = Image(width: classes, height: 2, channels: 1, pixels: (0..<(2 * classes)).map { UInt8($0 % classes) })
            let data = try PNG.encodeMask(mask)
            #expect(try PNG.decode(data, source: "m", mode: .indices) == mask, "\(classes) classes")
            // The PLTE chunk has one entry per class, at least 16.
            let plte = try #require(data.range(of: Data("PLTE".utf8)))
            let length = data[(plte.lowerBound - 4)..<plte.lowerBound].reduce(0) { $0 << 8 | Int($1) }
            #expect(length == 3 * max(16, classes), "\(classes) classes")
            if classes <= 16 { #expect(data == (try PNG.encode(mask, palette: ClassPalette.base))) }
            // Viewed as colours, neighbouring ids are told apart.
            let colours = try PNG.decode(data, source: "m", mode: .colours)
            for i in 1..<classes {
                #expect(colours.pixels[(i - 1) * 3..<i * 3] != colours.pixels[i * 3..<(i + 1) * 3], "ids \(i - 1) and \(i)")
            }
        }
        #expect(ClassPalette.rgb(count: 1000).count == 768)
        #expect(throws: PNGError.self) { try PNG.encodeMask(Image(width: 1, height: 1, channels: 3)) }
    }

    @Test func sixteenBitSamplesKeepTheirHighByte() throws {
        let gray = try PNG.read(try fixture("gray16"))
        #expect(gray.channels == 1 && gray.width == 3 && gray.height == 2)
        #expect(gray.pixels == [10, 200, 255, 0, 77, 128])
        let rgb = try PNG.read(try fixture("rgb16"))
        #expect(rgb.pixels == [1, 2, 3, 250, 251, 252])
    }

    @Test func lowBitDepthsExpand() throws {
        #expect(try PNG.read(try fixture("gray1")).pixels == [255, 0, 255, 255, 0, 0, 0, 0, 0, 255])
        let indices = try PNG.read(try fixture("palette4"), mode: .indices)
        #expect(indices.channels == 1 && indices.pixels == [0, 1, 2, 3, 4, 1])
        let colours = try PNG.read(try fixture("palette4"), mode: .colours)
        #expect(colours.channels == 4) // tRNS becomes alpha
        #expect(Array(colours.pixels[16..<20]) == [9, 9, 9, 0])
    }

    @Test func corruptFilesGiveTypedErrorsNamingTheFile() throws {
        let dir = try TemporaryDirectory()
        let good = try PNG.encode(Self.pattern(width: 40, height: 30, channels: 3))
        var badCRC = good
        badCRC[good.count / 2] ^= 0xFF
        let cases: [(String, Data)] = [
            ("truncated.png", good.prefix(good.count / 2)),
            ("empty.png", Data()),
            ("text.png", Data("not an image at all".utf8)),
            ("badcrc.png", badCRC),
            ("header-only.png", good.prefix(33)),
        ]
        for (name, data) in cases {
            let url = dir.url.appendingPathComponent(name)
            try data.write(to: url)
            do {
                _ = try PNG.read(url)
                Issue.record("\(name) was accepted")
            } catch let error as PNGError {
                guard case .corrupt(let file, _) = error else { Issue.record("\(name): \(error)"); continue }
                #expect(file == url.path)
            }
        }
    }

    @Test func dimensionsComeFromTheHeaderAlone() throws {
        let dir = try TemporaryDirectory()
        let good = try PNG.encode(Self.pattern(width: 300, height: 7, channels: 3))
        let cases: [(String, Data)] = [("good.png", good), ("short.png", good.prefix(20)), ("text.png", Data(String(repeating: "x", count: 40).utf8))]
        for (name, data) in cases { try data.write(to: dir.url.appendingPathComponent(name)) }
        let size = try PNG.dimensions(dir.url.appendingPathComponent("good.png"))
        #expect(size.width == 300 && size.height == 7)
        for name in ["short.png", "text.png"] {
            let url = dir.url.appendingPathComponent(name)
            #expect(throws: PNGError.corrupt(file: url.path, detail: "no PNG signature")) { try PNG.dimensions(url) }
        }
        #expect(throws: PNGError.self) { try PNG.dimensions(dir.url.appendingPathComponent("missing.png")) }
    }

    @Test func missingFileIsUnreadable() {
        #expect(throws: PNGError.self) { try PNG.read(URL(fileURLWithPath: "/nonexistent/a.png")) }
    }

    @Test func writeIsAtomicAndReadable() throws {
        let dir = try TemporaryDirectory()
        let url = dir.url.appendingPathComponent("a.png")
        let image = Self.pattern(width: 4, height: 4, channels: 3)
        try PNG.write(image, to: url)
        #expect(try PNG.read(url) == image)
        #expect(throws: PNGError.self) {
            try PNG.write(image, to: dir.url.appendingPathComponent("missing-dir/a.png"))
        }
    }

    @Test func tensorConversionRoundTrips() {
        let image = Self.pattern(width: 5, height: 3, channels: 3)
        let t = image.tensor()
        #expect(t.shape == [1, 3, 3, 5])
        // Channel planes, each value / 255.
        #expect(t.storage == (0..<3).flatMap { c in (0..<15).map { Float(image.pixels[$0 * 3 + c]) / 255 } })
        #expect(Image(tensor: t) == image)
    }
}
