import Tensor

/// Juice bottles in the spirit of MVTec LOCO's `juice_bottle`: three
/// products (orange, cherry, banana) whose juice colour must match the
/// fruit on the label, with the label at a fixed height, a fixed fill level
/// and a lower label.
///
/// Logical: juice of another product, label too high or too low, too little
/// juice, no lower label. Structural: a particle in the juice, a scratch on
/// the label, a stain on the lower label, a torn label corner, a piece
/// broken off the cap.
public struct BottleLabel: SyntheticCategory {
    public init() {}
    public let name = "bottle_label"
    public let size = (width: 220, height: 440)
    public let classes = ["background", "bottle", "juice_orange", "juice_cherry", "juice_banana", "label",
                          "icon_orange", "icon_cherry", "icon_banana", "lower_label"]
    public let productTypes = ["orange", "cherry", "banana"]
    public let defectTypes = [
        DefectConfig(defectName: "wrong_juice", pixelValue: 1, saturationThreshold: 0.5, relativeSaturation: true),
        DefectConfig(defectName: "label_position", pixelValue: 2, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "fill_level", pixelValue: 3, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "missing_lower_label", pixelValue: 4, saturationThreshold: 2700, relativeSaturation: false),
        DefectConfig(defectName: "contamination", pixelValue: 5, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "label_scratch", pixelValue: 6, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "stain", pixelValue: 7, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "torn_label", pixelValue: 8, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "broken_cap", pixelValue: 9, saturationThreshold: 1, relativeSaturation: true),
    ]

    static let juice = [Colour(1, 0.58, 0.08), Colour(0.62, 0.04, 0.14), Colour(0.98, 0.88, 0.32)]
    static let capTop = 19.0, fillLevel = 140.0, labelY = 230.0, lowerLabelY = 356.0

    func icon(_ type: Int, at c: Point, _ rng: inout SeededGenerator) -> [Layer] {
        let id = UInt8(6 + type)
        switch type {
        case 0:
            return [Layer(.circle(c, 19), Material(Colour(1, 0.55, 0.05), .dome), classID: id),
                    Layer(.ellipse(centre: c + Point(8, -20), rx: 8, ry: 4, angle: -0.5), Material(Colour(0.2, 0.6, 0.2)), classID: id)]
        case 1:
            return [Layer(.stroke([c + Point(-10, 2), c + Point(2, -20), c + Point(12, 2)], width: 2.5), Material(Colour(0.3, 0.45, 0.15)), classID: id),
                    Layer(.circle(c + Point(-10, 8), 11), Material(Colour(0.75, 0.05, 0.12), .dome), classID: id),
                    Layer(.circle(c + Point(12, 8), 11), Material(Colour(0.75, 0.05, 0.12), .dome), classID: id)]
        default:
            let outer = (0...12).map { i -> Point in
                let t = Double.pi * (0.15 + 0.7 * Double(i) / 12)
                return c + Point(-26 * cos(t), 22 * sin(t) - 10)
            }
            let inner = (0...12).reversed().map { i -> Point in
                let t = Double.pi * (0.15 + 0.7 * Double(i) / 12)
                return c + Point(-20 * cos(t), 12 * sin(t) - 8)
            }
            return [Layer(.polygon(outer + inner), Material(Colour(0.98, 0.86, 0.2), .glossy), classID: id)]
        }
    }

    public func scene(_ kind: SampleKind, productType: Int?, rng: inout SeededGenerator) -> Scene {
        let type = productType ?? 0
        var scene = baseScene(Colour(0.24, 0.24, 0.26), &rng, texture: 0.08)
        let glass = Material(rng.jitter(Colour(0.74, 0.8, 0.84), 0.03), .glossy, texture: 0.02)
        scene.add(.roundedRect(centre: Point(110, 250), width: 130, height: 330, radius: 22, angle: 0), glass, 1)
        scene.add(.polygon([Point(86, 92), Point(134, 92), Point(176, 132), Point(44, 132)]), glass, 1)
        scene.add(.roundedRect(centre: Point(110, 66), width: 48, height: 66, radius: 8, angle: 0), glass, 1)
        scene.add(.roundedRect(centre: Point(110, 30), width: 56, height: 22, radius: 4, angle: 0),
                  Material(Colour(0.85, 0.85, 0.85), .glossy), 1)

        let logical = kind == .logical ? rng.int(0...3) : -1
        var juiceType = type
        if logical == 0 { juiceType = (type + rng.int(1...2)) % 3 }
        var fill = Self.fillLevel + rng.uniform(-3, 3)
        if logical == 2 {
            let nominal = fill
            fill += rng.uniform(55, 75)
            scene.defects.append(DefectRegion(pixelValue: 3, shapes: [
                .roundedRect(centre: Point(110, (nominal + fill) / 2), width: 116, height: fill - nominal, radius: 0, angle: 0)]))
        }
        let juiceShape = Shape.roundedRect(centre: Point(110, (fill + 405) / 2), width: 116, height: 405 - fill, radius: 16, angle: 0)
        scene.add(juiceShape, Material(rng.jitter(Self.juice[juiceType], 0.03), .glossy, texture: 0.03), UInt8(2 + juiceType))
        if logical == 0 { scene.defects.append(DefectRegion(pixelValue: 1, shapes: [juiceShape])) }

        var labelY = Self.labelY + rng.uniform(-3, 3)
        if logical == 1 { labelY += (rng.chance(0.5) ? 1 : -1) * rng.uniform(38, 48) }
        let label = Shape.roundedRect(centre: Point(110, labelY), width: 124, height: 78, radius: 6, angle: 0)
        scene.add(label, Material(Colour(0.95, 0.95, 0.92), texture: 0.02), 5)
        scene.layers += icon(type, at: Point(110 + rng.uniform(-2, 2), labelY + 4), &rng)
        if logical == 1 { scene.defects.append(DefectRegion(pixelValue: 2, shapes: [label])) }

        let lowerY = Self.lowerLabelY + rng.uniform(-3, 3)
        let lower = Shape.roundedRect(centre: Point(110, lowerY), width: 124, height: 44, radius: 4, angle: 0)
        if logical == 3 {
            scene.defects.append(DefectRegion(pixelValue: 4, shapes: [lower]))
        } else {
            scene.add(lower, Material(Colour(0.86, 0.89, 0.95), texture: 0.02), 9)
            for k in 0..<3 {
                let y = lowerY - 11 + Double(k) * 11, w = rng.uniform(60, 96)
                scene.add(.stroke([Point(110 - w / 2, y), Point(110 + w / 2, y)], width: 3), Material(Colour(0.45, 0.47, 0.52)), 9)
            }
        }

        if kind == .structural {
            switch rng.int(0...4) {
            case 0:
                let blob = StructuralDefect.contamination(at: Point(110 + rng.uniform(-40, 40), rng.uniform(290, 325)),
                                                          radius: rng.uniform(8, 12), &rng)
                scene.layers.append(Layer(blob, StructuralDefect.dirt, classID: nil))
                scene.defects.append(DefectRegion(pixelValue: 5, shapes: [blob]))
            case 1:
                let scratch = StructuralDefect.scratch(at: Point(110 + rng.uniform(-30, 30), labelY + rng.uniform(-25, 25)),
                                                       length: rng.uniform(35, 50), &rng)
                scene.layers.append(Layer(scratch, Material(Colour(0.45, 0.42, 0.4)), classID: nil))
                scene.defects.append(DefectRegion(pixelValue: 6, shapes: [scratch]))
            case 2:
                let stain = StructuralDefect.blob(centre: Point(110 + rng.uniform(-40, 40), lowerY + rng.uniform(-8, 8)),
                                                  radius: rng.uniform(7, 10), roughness: 0.2, &rng)
                scene.layers.append(Layer(stain, darken: 0.6))
                scene.defects.append(DefectRegion(pixelValue: 7, shapes: [stain]))
            case 4:
                // A piece off one upper corner of the cap (56 x 22 at (110, 30)).
                let sx: Double = rng.chance(0.5) ? -1 : 1
                let corner = Point(110 + sx * 30, 17)
                let chip = Shape.polygon([corner, corner + Point(-sx * rng.uniform(16, 24), 0),
                                          corner + Point(-sx * rng.uniform(4, 8), rng.uniform(10, 14)),
                                          corner + Point(0, rng.uniform(14, 20))])
                scene.layers.append(Layer(chip, scene.background, classID: 0))
                scene.defects.append(DefectRegion(pixelValue: 9, shapes: [chip]))
            default:
                let sx: Double = rng.chance(0.5) ? -1 : 1
                let corner = Point(110 + sx * 62, labelY + 39)
                let tear = Shape.polygon([corner, corner + Point(-sx * rng.uniform(18, 26), 0), corner + Point(0, -rng.uniform(16, 24))])
                scene.layers.append(Layer(tear, Material(Self.juice[juiceType], .glossy, texture: 0.03), classID: UInt8(2 + juiceType)))
                scene.defects.append(DefectRegion(pixelValue: 8, shapes: [tear]))
            }
        }
        return scene
    }

    public func ruleViolations(_ mask: Image, zoom: Double) -> [String] {
        var violations: [String] = []
        let area = (0..<10).map { k in Double(mask.pixels.filter { $0 == UInt8(k) }.count) / (zoom * zoom) }
        let juices = (0..<3).filter { area[2 + $0] > 1500 }
        let icons = (0..<3).filter { area[6 + $0] > 150 }
        if juices.count != 1 || icons.count != 1 || juices != icons {
            violations.append("juice \(juices) does not match the label's fruit \(icons)")
        }
        // Heights are measured from the top of the bottle, in full-size pixels.
        var top = mask.height, labelSum = 0.0, labelCount = 0.0, juiceTop = mask.height
        for y in 0..<mask.height {
            for x in 0..<mask.width {
                let v = mask.pixels[y * mask.width + x]
                if v != 0 { top = min(top, y) }
                if v == 5 { labelSum += Double(y); labelCount += 1 }
                if (2...4).contains(v) { juiceTop = min(juiceTop, y) }
            }
        }
        let labelHeight = (labelSum / max(labelCount, 1) - Double(top)) / zoom
        if abs(labelHeight - (Self.labelY - Self.capTop)) > 15 {
            violations.append(String(format: "label at %.0f px below the cap, not %.0f", labelHeight, Self.labelY - Self.capTop))
        }
        let fillHeight = Double(juiceTop - top) / zoom
        if abs(fillHeight - (Self.fillLevel - Self.capTop)) > 15 {
            violations.append(String(format: "juice starts %.0f px below the cap, not %.0f", fillHeight, Self.fillLevel - Self.capTop))
        }
        if area[9] < 0.5 * 124 * 44 { violations.append("lower label missing") }
        return violations
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
