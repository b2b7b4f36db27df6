import Tensor

/// Renders a ``Scene`` to an RGB image and its class-index mask.
///
/// Each pixel is sampled at 2x2 points, so edges are antialiased in the
/// image; the mask takes a part's class where it covers half the pixel or
/// more. A fixed texture, lighting gradient and sensor noise make every image
/// differ at the pixel level.
struct Canvas {
    let width: Int, height: Int
    private(set) var rgb: [Float]
    private(set) var mask: [UInt8]
    private let seed: UInt64

    init(width: Int, height: Int, seed: UInt64) {
        self.width = width
        self.height = height
        self.seed = seed
        rgb = [Float](repeating: 0, count: width * height * 3)
        mask = [UInt8](repeating: 0, count: width * height)
    }

    /// Renders the scene: background, layers bottom to top, lighting and noise.
    static func render(_ scene: Scene, width: Int, height: Int, seed: UInt64) -> (image: Image, mask: Image) {
        var canvas = Canvas(width: width, height: height, seed: seed)
        canvas.fillBackground(scene.background)
        for layer in scene.layers { canvas.draw(layer, placement: scene.placement) }
        return (canvas.finish(light: scene.light), Image(width: width, height: height, channels: 1, pixels: canvas.mask))
    }

    /// Rasterises shapes (after placement) into a ground-truth mask.
    static func regionMask(_ shapes: [Shape], placement: Placement, width: Int, height: Int, value: UInt8) -> Image {
        var canvas = Canvas(width: width, height: height, seed: 0)
        for shape in shapes {
            canvas.draw(Layer(shape, Material(Colour(1, 1, 1)), classID: value), placement: placement)
        }
        return Image(width: width, height: height, channels: 1, pixels: canvas.mask)
    }

    mutating func fillBackground(_ m: Material) {
        for y in 0..<height {
            for x in 0..<width {
                let t = 1 + m.texture * texture(x, y, scale: 23)
                let i = (y * width + x) * 3
                rgb[i] = m.colour.r * t; rgb[i + 1] = m.colour.g * t; rgb[i + 2] = m.colour.b * t
            }
        }
    }

    mutating func draw(_ layer: Layer, placement: Placement) {
        let (x0, y0, x1, y1) = layer.shape.bounds
        let corners = [Point(x0, y0), Point(x1, y0), Point(x0, y1), Point(x1, y1)].map(placement.apply)
        let minX = max(0, Int(corners.map(\.x).min()!.rounded(.down)) - 1)
        let maxX = min(width - 1, Int(corners.map(\.x).max()!.rounded(.up)) + 1)
        let minY = max(0, Int(corners.map(\.y).min()!.rounded(.down)) - 1)
        let maxY = min(height - 1, Int(corners.map(\.y).max()!.rounded(.up)) + 1)
        guard minX <= maxX, minY <= maxY else { return }
        let centre = Point((x0 + x1) / 2, (y0 + y1) / 2)
        let radius = max(x1 - x0, y1 - y0) / 2
        let inverse = placement.inverse, inside = layer.shape.containment
        for y in minY...maxY {
            for x in minX...maxX {
                var hits = 0
                var local = Point(0, 0)
                for (dx, dy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
                    let p = inverse(Point(Double(x) + dx, Double(y) + dy))
                    if inside(p) { hits += 1; local = p }
                }
                guard hits > 0 else { continue }
                let coverage = Float(hits) / 4
                let i = (y * width + x) * 3
                switch layer.effect {
                case let .paint(material, classID):
                    let c = shade(material, at: local, centre: centre, radius: radius, x: x, y: y)
                    rgb[i] = rgb[i] * (1 - coverage) + c.r * coverage
                    rgb[i + 1] = rgb[i + 1] * (1 - coverage) + c.g * coverage
                    rgb[i + 2] = rgb[i + 2] * (1 - coverage) + c.b * coverage
                    if let classID, hits >= 2 { mask[y * width + x] = classID }
                case let .darken(factor):
                    let f = 1 - (1 - factor) * coverage
                    rgb[i] *= f; rgb[i + 1] *= f; rgb[i + 2] *= f
                }
            }
        }
    }

    func shade(_ m: Material, at p: Point, centre: Point, radius: Double, x: Int, y: Int) -> Colour {
        var f: Float = 1
        let d = radius > 0 ? Point((p.x - centre.x) / radius, (p.y - centre.y) / radius) : Point(0, 0)
        switch m.shading {
        case .flat: break
        case .dome:
            let highlight = Point(d.x + 0.35, d.y + 0.35).length
            f = Float(1.18 - 0.38 * min(1, highlight * highlight))
        case .glossy:
            f = Float(0.85 + 0.3 * max(0, 1 - abs(d.x + 0.2) * 1.6))
        }
        f *= 1 + m.texture * texture(x, y, scale: 3)
        return m.colour.scaled(f)
    }

    /// A fixed pseudo-random texture in [-1, 1], smooth over `scale` pixels.
    func texture(_ x: Int, _ y: Int, scale: Int) -> Float {
        let gx = x / scale, gy = y / scale
        let fx = Float(x % scale) / Float(scale), fy = Float(y % scale) / Float(scale)
        let a = hash(gx, gy), b = hash(gx + 1, gy), c = hash(gx, gy + 1), d = hash(gx + 1, gy + 1)
        let top = a + (b - a) * fx, bottom = c + (d - c) * fx
        return top + (bottom - top) * fy
    }

    func hash(_ x: Int, _ y: Int) -> Float {
        var h = UInt64(bitPattern: Int64(x)) &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(bitPattern: Int64(y)) &* 0xC2B2_AE3D_27D4_EB4F ^ seed
        h = (h ^ (h >> 31)) &* 0xBF58_476D_1CE4_E5B9
        h ^= h >> 29
        return Float(h >> 40) / Float(1 << 23) - 1
    }

    /// Lighting gradient, sensor noise, quantisation to 8 bits.
    func finish(light: (x: Float, y: Float)) -> Image {
        var rng = SeededGenerator(seed: seed ^ 0x5151)
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            let ly = light.y * (Float(y) / Float(height) - 0.5)
            for x in 0..<width {
                let f = 1 + light.x * (Float(x) / Float(width) - 0.5) + ly
                for c in 0..<3 {
                    let i = (y * width + x) * 3 + c
                    let v = rgb[i] * f + 0.012 * rng.nextNormal()
                    pixels[i] = UInt8(min(max(v * 255, 0), 255).rounded())
                }
            }
        }
        return Image(width: width, height: height, channels: 3, pixels: pixels)
    }
}
