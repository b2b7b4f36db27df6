import Tensor

/// The kind of image a generator draws.
public enum SampleKind: String, Sendable, CaseIterable {
    case normal, logical, structural
}

/// One synthetic category in the spirit of an MVTec LOCO AD category: its
/// parts, product types, logical rules and defects.
///
/// Scenes are designed at full size (`size`); a zoom renders them smaller.
/// `ruleViolations` reads the rules back from a class mask alone, so tests
/// can check that normal images keep every rule and logical anomalies break
/// one.
public protocol SyntheticCategory: Sendable {
    var name: String { get }
    /// Native image size at full scale (not square).
    var size: (width: Int, height: Int) { get }
    /// Part class names; index 0 is the background.
    var classes: [String] { get }
    /// Product variants (empty: one product).
    var productTypes: [String] { get }
    /// Defect types with pixel values 1, 2, ... and saturation thresholds.
    var defectTypes: [DefectConfig] { get }
    /// Pixels at full scale that preprocessing crops off every side.
    var cropMargin: Int { get }
    /// How its few-shot annotations are written.
    var annotationFormat: CategoryManifest.AnnotationFormat { get }
    /// The largest rotation of an augmented training view (the manifest's
    /// `rotation_degrees`): 180 where the reference allows any angle.
    var rotationDegrees: Double { get }

    /// A scene of the given kind, in full-size coordinates.
    func scene(_ kind: SampleKind, productType: Int?, rng: inout SeededGenerator) -> Scene

    /// Logical anomaly kinds the benchmark assigns in turn by image index
    /// (every product type sees every kind, and every kind occurs in a test
    /// split of a few dozen images, as in LOCO where each kind has its own
    /// folder of images); 0: the category draws the kind at random.
    var logicalKinds: Int { get }

    /// A scene with its logical kind given (in `0..<logicalKinds`; nil: drawn).
    func scene(_ kind: SampleKind, productType: Int?, logicalKind: Int?, rng: inout SeededGenerator) -> Scene

    /// The rules a class mask rendered at `zoom` breaks (empty: all kept).
    func ruleViolations(_ mask: Image, zoom: Double) -> [String]
}

extension SyntheticCategory {
    public var cropMargin: Int { 0 }
    public var logicalKinds: Int { 0 }
    public var rotationDegrees: Double { CategoryManifest.defaultRotationDegrees }

    public func scene(_ kind: SampleKind, productType: Int?, logicalKind: Int?, rng: inout SeededGenerator) -> Scene {
        scene(kind, productType: productType, rng: &rng)
    }
    public var annotationFormat: CategoryManifest.AnnotationFormat { .png }

    /// A random placement of a product about the image centre: shift of a few
    /// percent of the size and a rotation of up to `degrees`.
    func jitteredPlacement(_ rng: inout SeededGenerator, shift: Double = 0.025, degrees: Double = 2.5) -> Placement {
        Placement(centre: Point(Double(size.width) / 2, Double(size.height) / 2),
                  angle: rng.uniform(-degrees, degrees) * Double.pi / 180,
                  shift: Point(rng.uniform(-shift, shift) * Double(size.width), rng.uniform(-shift, shift) * Double(size.height)))
    }

    /// Common scene setup: background, lighting.
    func baseScene(_ background: Colour, _ rng: inout SeededGenerator, texture: Float = 0.05) -> Scene {
        var scene = Scene(background: Material(rng.jitter(background, 0.04), texture: texture))
        scene.light = (Float(rng.uniform(-0.12, 0.12)), Float(rng.uniform(-0.12, 0.12)))
        scene.placement = jitteredPlacement(&rng)
        return scene
    }
}

/// Structural defects every category draws the same way, on a chosen part.
enum StructuralDefect {
    /// An irregular dark blob (dirt, a foreign particle) near `centre`.
    static func contamination(at centre: Point, radius: Double, _ rng: inout SeededGenerator) -> Shape {
        blob(centre: centre, radius: radius, roughness: 0.35, &rng)
    }

    /// A straight scratch of length `length` through `centre`, `width` wide
    /// (full-size pixels: at the 256-px working size a scratch narrower than
    /// about 3 px is thinner than one pixel of the stride-4 part masks).
    static func scratch(at centre: Point, length: Double, width: ClosedRange<Double> = 3...4.5,
                        _ rng: inout SeededGenerator) -> Shape {
        let a = rng.uniform(0, Double.pi)
        let d = Point(cos(a), sin(a)) * (length / 2)
        return .stroke([centre - d, centre + d], width: rng.uniform(width.lowerBound, width.upperBound))
    }

    /// A polygon of `vertices` points around `centre` with radii varying by `roughness`.
    static func blob(centre: Point, radius: Double, roughness: Double, _ rng: inout SeededGenerator, vertices: Int = 14) -> Shape {
        let phase = rng.uniform(0, 2 * Double.pi)
        let points = (0..<vertices).map { i -> Point in
            let t = phase + 2 * Double.pi * Double(i) / Double(vertices)
            let r = radius * (1 + roughness * rng.uniform(-1, 1))
            return Point(centre.x + r * cos(t), centre.y + r * sin(t))
        }
        return .polygon(points)
    }

    static let dirt = Material(Colour(0.22, 0.16, 0.1), .flat, texture: 0.2)
    static let scratchMark = Material(Colour(0.92, 0.92, 0.9), .flat, texture: 0.05)
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
