import Tensor

/// How a benchmark is drawn: as the categories were designed (`reference`,
/// the benchmark the defaults were chosen on), or with the rendering varied
/// the way another production line would vary it (`varied`: the second,
/// untuned benchmark, on which no choice of the method is made).
///
/// `varied` draws per category, from the seed and the category's name: a
/// tint of every colour (each channel x [0.85, 1.15]) and a canvas widened
/// by a factor in [1, 1.3] (another aspect ratio, the product centred on the
/// wider background; the masks and ground truth follow, being drawn with the
/// same placement). Per image: a brightness in [0.88, 1.12], a lighting
/// gradient twice as steep as the reference's, and twice its placement
/// jitter (shift up to 5 % of the size, rotation up to 5 degrees more).
public enum Rendering: String, CaseIterable, Sendable {
    case reference, varied

    /// The category-wide draws (tint, width factor).
    struct CategoryLook {
        var tint: (Float, Float, Float) = (1, 1, 1)
        var widthFactor = 1.0
    }

    func look(_ category: any SyntheticCategory, seed: UInt64) -> CategoryLook {
        guard self == .varied else { return CategoryLook() }
        var rng = SyntheticBenchmark.generator(seed: seed ^ 0x5EC0_4D, category: category.name, split: .train, index: -1)
        func u(_ a: Double, _ b: Double) -> Double { rng.uniform(a, b) }
        return CategoryLook(tint: (Float(u(0.85, 1.15)), Float(u(0.85, 1.15)), Float(u(0.85, 1.15))), widthFactor: u(1, 1.3))
    }

    /// Applies the variation to one image's scene (its own generator draws the per-image part).
    func vary(_ scene: inout Scene, _ look: CategoryLook, size: (width: Int, height: Int), rng: inout SeededGenerator) {
        guard self == .varied else { return }
        let brightness = Float(rng.uniform(0.88, 1.12))
        func paint(_ c: Colour) -> Colour {
            Colour(min(1, c.r * look.tint.0 * brightness), min(1, c.g * look.tint.1 * brightness), min(1, c.b * look.tint.2 * brightness))
        }
        scene.background.colour = paint(scene.background.colour)
        for i in scene.layers.indices {
            if case let .paint(material, classID) = scene.layers[i].effect {
                var m = material
                m.colour = paint(m.colour)
                scene.layers[i].effect = .paint(m, classID: classID)
            }
        }
        scene.light = (scene.light.x * 2, scene.light.y * 2)
        // Twice the jitter: as much again, drawn here, on top of the category's own.
        scene.placement.shift = scene.placement.shift + Point(rng.uniform(-0.025, 0.025) * Double(size.width),
                                                              rng.uniform(-0.025, 0.025) * Double(size.height))
        scene.placement.angle += rng.uniform(-5, 5) * Double.pi / 180
        // Centred on the wider canvas.
        scene.placement.shift = scene.placement.shift + Point((look.widthFactor - 1) * Double(size.width) / 2, 0)
    }
}
