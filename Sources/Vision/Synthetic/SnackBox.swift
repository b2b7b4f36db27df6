import Tensor

/// A breakfast box in the spirit of MVTec LOCO's `breakfast_box`: two
/// tangerines and a nectarine on the left; cereal and banana chips in about
/// equal amounts and a few almonds on the right.
///
/// Logical: one or three tangerines, the two piles far from equal, no
/// almonds. Structural: dirt, a bruised fruit, a scratch on the tray.
public struct SnackBox: SyntheticCategory {
    public init() {}
    public let name = "snack_box"
    public let size = (width: 420, height: 300)
    public let classes = ["background", "tray", "tangerine", "nectarine", "cereal", "banana_chips", "almonds"]
    public let productTypes: [String] = []
    /// As the reference treats breakfast_box: any angle.
    public let rotationDegrees = 180.0
    public let defectTypes = [
        DefectConfig(defectName: "fruit_count", pixelValue: 1, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "ingredient_ratio", pixelValue: 2, saturationThreshold: 0.5, relativeSaturation: true),
        DefectConfig(defectName: "missing_almonds", pixelValue: 3, saturationThreshold: 600, relativeSaturation: false),
        DefectConfig(defectName: "contamination", pixelValue: 4, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "bruised_fruit", pixelValue: 5, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "scratch", pixelValue: 6, saturationThreshold: 1, relativeSaturation: true),
    ]

    static let centre = Point(210, 150)
    static let tangerineRadius = 27.0, nectarineRadius = 31.0, pileRadius = 45.0
    static let almondArea = 4 * Double.pi * 9 * 5.5

    /// Non-overlapping fruit centres in the left compartment.
    func placeFruit(_ radii: [Double], _ rng: inout SeededGenerator) -> [Point] {
        for _ in 0..<1000 {
            var placed: [Point] = []
            for r in radii {
                for _ in 0..<200 {
                    let p = Point(rng.uniform(32 + r, 198 - r), rng.uniform(32 + r, 268 - r))
                    if zip(placed, radii).allSatisfy({ ($0.0 - p).length > $0.1 + r + 5 }) { placed.append(p); break }
                }
            }
            if placed.count == radii.count { return placed }
        }
        preconditionFailure("snack_box: no room for \(radii.count) fruit; the generator's geometry is wrong")
    }

    func pile(centre: Point, radius: Double, colour: Colour, classID: UInt8, _ rng: inout SeededGenerator) -> [Layer] {
        var layers = [Layer(StructuralDefect.blob(centre: centre, radius: radius, roughness: 0.08, &rng, vertices: 20),
                            Material(colour, texture: 0.22), classID: classID)]
        // Flakes: darker and lighter bits inside the pile.
        for _ in 0..<Int(radius / 3) {
            let a = rng.uniform(0, 2 * Double.pi), d = rng.uniform(0, radius * 0.75)
            let flake = Shape.ellipse(centre: centre + Point(cos(a), sin(a)) * d, rx: rng.uniform(3, 6), ry: rng.uniform(2, 4),
                                      angle: rng.uniform(0, Double.pi))
            layers.append(Layer(flake, Material(colour.scaled(Float(rng.uniform(0.75, 1.1))), .dome, texture: 0.1), classID: classID))
        }
        return layers
    }

    public func scene(_ kind: SampleKind, productType: Int?, rng: inout SeededGenerator) -> Scene {
        var scene = baseScene(Colour(0.32, 0.3, 0.28), &rng)
        let tray = Material(rng.jitter(Colour(0.9, 0.9, 0.86), 0.03), texture: 0.02)
        scene.add(.roundedRect(centre: Self.centre, width: 384, height: 262, radius: 16, angle: 0), tray, 1)
        scene.add(.stroke([Point(210, 26), Point(210, 274)], width: 8), Material(tray.colour.scaled(0.85)), 1)

        let logical = kind == .logical ? rng.int(0...2) : -1
        // Fruit: two tangerines and a nectarine (logical 0: one or three tangerines).
        let extraTangerine = logical == 0 && rng.chance(0.5)
        let tangerines = (logical == 0 && !extraTangerine) ? 1 : (extraTangerine ? 3 : 2)
        var radii = (0..<(logical == 0 && !extraTangerine ? 2 : tangerines)).map { _ in Self.tangerineRadius + rng.uniform(-2, 2) }
        radii.append(Self.nectarineRadius + rng.uniform(-2, 2))
        let spots = placeFruit(radii, &rng)
        let orange = rng.jitter(Colour(0.98, 0.56, 0.1), 0.04), red = rng.jitter(Colour(0.82, 0.26, 0.18), 0.04)
        var fruits: [Shape] = []
        for (i, (p, r)) in zip(spots, radii).enumerated() {
            let isNectarine = i == radii.count - 1
            let shape = Shape.ellipse(centre: p, rx: r, ry: r * rng.uniform(0.93, 1.0), angle: rng.uniform(0, Double.pi))
            if logical == 0 && !extraTangerine && i == 0 {
                scene.defects.append(DefectRegion(pixelValue: 1, shapes: [shape]))  // where the missing one would be
                continue
            }
            scene.add(shape, Material(isNectarine ? red : rng.jitter(orange, 0.03), .dome, texture: 0.05), isNectarine ? 3 : 2)
            fruits.append(shape)
            if extraTangerine && i == 0 { scene.defects.append(DefectRegion(pixelValue: 1, shapes: [shape])) }
        }

        // Piles of about equal area (logical 1: one of them far smaller).
        var cereal = Self.pileRadius + rng.uniform(-3, 3)
        var chips = cereal * rng.uniform(0.92, 1.08).squareRoot()
        var shrunk: Int?
        if logical == 1 {
            shrunk = rng.int(0...1)
            if shrunk == 0 { cereal *= rng.uniform(0.45, 0.6) } else { chips *= rng.uniform(0.45, 0.6) }
        }
        let cerealCentre = Point(290 + rng.uniform(-4, 4), 88 + rng.uniform(-5, 5))
        let chipsCentre = Point(290 + rng.uniform(-4, 4), 210 + rng.uniform(-5, 5))
        scene.layers += pile(centre: cerealCentre, radius: cereal, colour: rng.jitter(Colour(0.78, 0.6, 0.35), 0.04), classID: 4, &rng)
        scene.layers += pile(centre: chipsCentre, radius: chips, colour: rng.jitter(Colour(0.96, 0.88, 0.62), 0.03), classID: 5, &rng)
        if let shrunk {
            let (c, r) = shrunk == 0 ? (cerealCentre, cereal) : (chipsCentre, chips)
            scene.defects.append(DefectRegion(pixelValue: 2, shapes: [.circle(c, r * 1.1)]))
        }

        // Almonds in a column at the right (logical 2: none).
        let almondCentre = Point(364 + rng.uniform(-3, 3), 150 + rng.uniform(-10, 10))
        if logical == 2 {
            scene.defects.append(DefectRegion(pixelValue: 3, shapes: [.ellipse(centre: almondCentre, rx: 16, ry: 36, angle: 0)]))
        } else {
            let brown = rng.jitter(Colour(0.56, 0.34, 0.18), 0.05)
            for k in 0..<4 {
                let p = almondCentre + Point(rng.uniform(-3, 3), (Double(k) - 1.5) * 15)
                scene.add(.ellipse(centre: p, rx: 9, ry: 5.5, angle: rng.uniform(-0.3, 0.3)), Material(brown, .dome, texture: 0.06), 6)
            }
        }

        if kind == .structural {
            switch rng.int(0...2) {
            case 0:
                let on = rng.chance(0.5) ? cerealCentre : chipsCentre
                let blob = StructuralDefect.contamination(at: on + Point(rng.uniform(-15, 15), rng.uniform(-15, 15)),
                                                          radius: rng.uniform(10, 15), &rng)
                scene.layers.append(Layer(blob, StructuralDefect.dirt, classID: nil))
                scene.defects.append(DefectRegion(pixelValue: 4, shapes: [blob]))
            case 1:
                guard case let .ellipse(c, rx, _, _) = fruits[rng.int(0...(fruits.count - 1))] else { break }
                let bruise = Shape.ellipse(centre: c + Point(rng.uniform(-rx, rx) * 0.4, rng.uniform(-rx, rx) * 0.4),
                                           rx: rng.uniform(8, 12), ry: rng.uniform(6, 9), angle: rng.uniform(0, Double.pi))
                scene.layers.append(Layer(bruise, darken: 0.5))
                scene.defects.append(DefectRegion(pixelValue: 5, shapes: [bruise]))
            default:
                let at = Point(rng.uniform(40, 190), rng.chance(0.5) ? rng.uniform(34, 40) : rng.uniform(262, 268))
                let scratch = StructuralDefect.scratch(at: at, length: rng.uniform(40, 60), &rng)
                scene.layers.append(Layer(scratch, Material(Colour(0.55, 0.55, 0.55)), classID: nil))
                scene.defects.append(DefectRegion(pixelValue: 6, shapes: [scratch]))
            }
        }
        return scene
    }

    public func ruleViolations(_ mask: Image, zoom: Double) -> [String] {
        let frame = MaskFrame(mask, zoom: zoom, designCentre: Self.centre) { $0 != 0 }
        var violations: [String] = []
        let minFruit = Int(0.4 * Double.pi * 25 * 25 * zoom * zoom)
        let tangerines = mask.components(minArea: minFruit) { $0 == 2 }
        let nectarines = mask.components(minArea: minFruit) { $0 == 3 }
        if tangerines.count != 2 { violations.append("\(tangerines.count) tangerines, not 2") }
        if nectarines.count != 1 { violations.append("\(nectarines.count) nectarines, not 1") }
        for fruit in tangerines + nectarines where frame.toDesign(fruit.centroid).x > 210 {
            violations.append("fruit in the right compartment")
        }
        let cereal = Double(mask.pixels.filter { $0 == 4 }.count), chips = Double(mask.pixels.filter { $0 == 5 }.count)
        let ratio = chips / max(cereal, 1)
        if !(0.7...1.43).contains(ratio) { violations.append(String(format: "chips/cereal area ratio %.2f outside 0.70-1.43", ratio)) }
        let almonds = Double(mask.pixels.filter { $0 == 6 }.count) / (zoom * zoom)
        if almonds < 0.6 * Self.almondArea { violations.append("almonds missing") }
        return violations
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
