import Tensor

/// An RGB colour with components in [0, 1].
public struct Colour: Equatable, Sendable {
    public var r: Float, g: Float, b: Float
    public init(_ r: Float, _ g: Float, _ b: Float) { self.r = r; self.g = g; self.b = b }

    func scaled(_ f: Float) -> Colour { Colour(r * f, g * f, b * f) }
}

/// How a part's surface looks.
public struct Material: Equatable, Sendable {
    public enum Shading: Equatable, Sendable {
        /// Uniform.
        case flat
        /// Brighter towards the upper left of the shape, darker at its rim (fruit, pin heads).
        case dome
        /// Brighter along the middle (bottles, cables, bolts).
        case glossy
    }

    public var colour: Colour
    public var shading: Shading
    /// Amplitude of a fixed multiplicative texture (cereal is rough, glass smooth).
    public var texture: Float

    public init(_ colour: Colour, _ shading: Shading = .flat, texture: Float = 0.03) {
        self.colour = colour; self.shading = shading; self.texture = texture
    }
}

/// One thing drawn on the canvas, bottom to top.
public struct Layer: Sendable {
    public enum Effect: Sendable {
        /// Paints the material; the mask takes `classID` where the shape covers
        /// at least half a pixel (nil leaves the mask alone: stains, dirt).
        case paint(Material, classID: UInt8?)
        /// Multiplies the colour underneath (dents, shadows, rust).
        case darken(Float)
    }

    public var shape: Shape
    public var effect: Effect

    public init(_ shape: Shape, _ material: Material, classID: UInt8?) { self.shape = shape; effect = .paint(material, classID: classID) }
    public init(_ shape: Shape, darken factor: Float) { self.shape = shape; effect = .darken(factor) }
}

/// A defect region of an anomalous image: its pixel value in the ground-truth
/// masks (the defect type's entry in `defects_config.json`) and its extent.
public struct DefectRegion: Sendable {
    public var pixelValue: UInt8
    public var shapes: [Shape]
}

/// Everything needed to render one image and its truth.
public struct Scene: Sendable {
    public var background: Material
    public var layers: [Layer] = []
    /// Where the product sits in the image (position and rotation jitter);
    /// layers and defect regions are given before it is applied.
    public var placement: Placement = .identity
    public var defects: [DefectRegion] = []
    public var productType: Int? = nil
    /// Lighting gradient across the image (fraction of brightness per image width/height).
    public var light: (x: Float, y: Float) = (0, 0)

    public init(background: Material) { self.background = background }

    mutating func add(_ shape: Shape, _ material: Material, _ classID: UInt8?) { layers.append(Layer(shape, material, classID: classID)) }
}

/// Colour jitter for the generators.
extension SeededGenerator {
    mutating func jitter(_ c: Colour, _ amount: Float) -> Colour {
        let f = 1 + amount * (2 * nextUniform() - 1)
        return Colour(min(1, c.r * f), min(1, c.g * f), min(1, c.b * f))
    }
}
