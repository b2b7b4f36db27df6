import Tensor

/// Splicing connectors in the spirit of MVTec LOCO's `splicing_connectors`:
/// two connectors with the same number of slots (2, 3 or 5: three products)
/// joined at the same slot by a cable whose colour depends on that number.
///
/// Logical: connectors with different slot counts, a cable of the wrong
/// colour, a cable joining different slots, no cable, a second cable, a
/// connector missing: six of the nine kinds of LOCO's splicing connectors,
/// so that the one no part statistic sees (which slot the cable joins) is
/// one kind in six, as it is one in nine there, and not one in four.
/// Structural: a cut cable, dirt on the cable, a piece
/// broken off a connector, a stretch of cable in another colour.
public struct CablePair: SyntheticCategory {
    public init() {}
    public let name = "cable_pair"
    public let size = (width: 440, height: 240)
    public let classes = ["background", "connector", "clamp", "cable_yellow", "cable_blue", "cable_red", "cable_end"]
    public let productTypes = ["2_slots", "3_slots", "5_slots"]
    public let defectTypes = [
        DefectConfig(defectName: "mismatched_connectors", pixelValue: 1, saturationThreshold: 0.5, relativeSaturation: true),
        DefectConfig(defectName: "wrong_cable_colour", pixelValue: 2, saturationThreshold: 0.5, relativeSaturation: true),
        DefectConfig(defectName: "wrong_slot", pixelValue: 3, saturationThreshold: 0.5, relativeSaturation: true),
        DefectConfig(defectName: "missing_cable", pixelValue: 4, saturationThreshold: 1500, relativeSaturation: false),
        DefectConfig(defectName: "cut_cable", pixelValue: 5, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "contamination", pixelValue: 6, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "broken_connector", pixelValue: 7, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "cable_colour", pixelValue: 8, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "extra_cable", pixelValue: 9, saturationThreshold: 0.5, relativeSaturation: true),
        DefectConfig(defectName: "missing_connector", pixelValue: 10, saturationThreshold: 2000, relativeSaturation: false),
    ]

    static let slots = [2, 3, 5]
    static let cableColours = [Colour(0.95, 0.82, 0.1), Colour(0.12, 0.32, 0.88), Colour(0.85, 0.1, 0.1)]
    static let pitch = 20.0, leftX = 78.0, rightX = 362.0, midY = 120.0

    static func slotY(_ i: Int, of n: Int) -> Double { midY + (Double(i) - Double(n - 1) / 2) * pitch }
    static func bodyHeight(_ n: Int) -> Double { 24 + pitch * Double(n) }

    func connector(x: Double, slots n: Int, side: Double, _ m: (body: Material, clamp: Material)) -> [Layer] {
        var layers = [Layer(.roundedRect(centre: Point(x, Self.midY), width: 56, height: Self.bodyHeight(n), radius: 6, angle: 0), m.body, classID: 1)]
        for i in 0..<n {
            layers.append(Layer(.roundedRect(centre: Point(x - side * 8, Self.slotY(i, of: n)), width: 22, height: 12, radius: 3, angle: 0),
                                m.clamp, classID: 2))
        }
        return layers
    }

    public let logicalKinds = 6

    public func scene(_ kind: SampleKind, productType: Int?, rng: inout SeededGenerator) -> Scene {
        scene(kind, productType: productType, logicalKind: nil, rng: &rng)
    }

    public func scene(_ kind: SampleKind, productType: Int?, logicalKind: Int?, rng: inout SeededGenerator) -> Scene {
        let type = productType ?? 0
        let n = Self.slots[type]
        var scene = baseScene(Colour(0.82, 0.8, 0.76), &rng)
        let materials = (body: Material(rng.jitter(Colour(0.93, 0.93, 0.9), 0.02), texture: 0.02),
                         clamp: Material(rng.jitter(Colour(0.95, 0.55, 0.15), 0.03), .glossy, texture: 0.03))
        // Logical: 0 mismatched connectors, 1 cable colour, 2 wrong slot,
        // 3 no cable, 4 a second cable, 5 the right connector missing.
        let logical = kind == .logical ? logicalKind ?? rng.int(0...(logicalKinds - 1)) : -1
        let rightSlots = logical == 0 ? rng.pick(Self.slots.filter { $0 != n }) : n
        scene.layers += connector(x: Self.leftX, slots: n, side: 1, materials)
        let right = connector(x: Self.rightX, slots: rightSlots, side: -1, materials)
        if logical == 5 {
            scene.defects.append(DefectRegion(pixelValue: 10, shapes: right.map(\.shape)))
        } else {
            scene.layers += right
        }
        if logical == 0 { scene.defects.append(DefectRegion(pixelValue: 1, shapes: right.map(\.shape))) }

        let k = rng.int(0...(n - 1))
        var kRight = min(k, rightSlots - 1)
        if logical == 2 { kRight = (k + rng.int(1...(n - 1))) % n }
        let colour = logical == 1 ? (type + rng.int(1...2)) % 3 : type
        let a = Point(104, Self.slotY(k, of: n)), b = Point(336, Self.slotY(kRight, of: rightSlots))
        let control = Point(220 + rng.uniform(-30, 30), Self.midY + rng.uniform(-70, 70))
        let path = bezier(a, control, b)
        let cable = Shape.stroke(path, width: 10)
        let ends = [Shape.roundedRect(centre: a, width: 16, height: 9, radius: 2, angle: 0),
                    Shape.roundedRect(centre: b, width: 16, height: 9, radius: 2, angle: 0)]
        if logical == 3 {
            scene.defects.append(DefectRegion(pixelValue: 4, shapes: [cable] + ends))
            return scene
        }
        let cableMaterial = Material(rng.jitter(Self.cableColours[colour], 0.04), .glossy, texture: 0.03)
        let metal = Material(Colour(0.75, 0.75, 0.72), .glossy)
        // Structural: 0 cut cable, 1 dirt, 2 broken connector, 3 cable colour.
        let flaw = kind == .structural ? rng.int(0...3) : -1
        if flaw == 0 {
            let m = rng.int(8...16)
            scene.add(.stroke(Array(path[...m]), width: 10), cableMaterial, UInt8(3 + colour))
            scene.add(.stroke(Array(path[(m + 2)...]), width: 10), cableMaterial, UInt8(3 + colour))
            scene.defects.append(DefectRegion(pixelValue: 5, shapes: [.circle((path[m] + path[m + 2]) * 0.5, 12)]))
        } else {
            scene.add(cable, cableMaterial, UInt8(3 + colour))
        }
        for end in ends { scene.add(end, metal, 6) }
        if logical == 1 || logical == 2 { scene.defects.append(DefectRegion(pixelValue: logical == 1 ? 2 : 3, shapes: [cable])) }
        if logical == 4 {
            // A second cable of the same colour joining another slot on both sides.
            let k2 = (k + rng.int(1...(n - 1))) % n
            let a2 = Point(104, Self.slotY(k2, of: n)), b2 = Point(336, Self.slotY(k2, of: n))
            let extra = Shape.stroke(bezier(a2, Point(220 + rng.uniform(-30, 30), Self.midY + rng.uniform(-70, 70)), b2), width: 10)
            let extraEnds = [a2, b2].map { Shape.roundedRect(centre: $0, width: 16, height: 9, radius: 2, angle: 0) }
            scene.add(extra, Material(rng.jitter(Self.cableColours[colour], 0.04), .glossy, texture: 0.03), UInt8(3 + colour))
            for end in extraEnds { scene.add(end, metal, 6) }
            scene.defects.append(DefectRegion(pixelValue: 9, shapes: [extra] + extraEnds))
        }

        switch flaw {
        case 1:
            let t = rng.int(6...18)
            let blob = StructuralDefect.contamination(at: path[t] + Point(rng.uniform(-6, 6), rng.uniform(-6, 6)),
                                                      radius: rng.uniform(9, 13), &rng)
            scene.layers.append(Layer(blob, StructuralDefect.dirt, classID: nil))
            scene.defects.append(DefectRegion(pixelValue: 6, shapes: [blob]))
        case 2:
            // A piece off one of the outer corners, reaching into the first clamp.
            let x = rng.chance(0.5) ? Self.leftX : Self.rightX
            let sy: Double = rng.chance(0.5) ? -1 : 1, sx: Double = x < 220 ? -1 : 1
            let corner = Point(x + sx * 28, Self.midY + sy * Self.bodyHeight(x < 220 ? n : rightSlots) / 2)
            let chip = Shape.polygon([corner + Point(sx * 2, sy * 2), corner + Point(-sx * rng.uniform(26, 36), sy * 2),
                                      corner + Point(-sx * rng.uniform(8, 14), -sy * rng.uniform(14, 20)),
                                      corner + Point(sx * 2, -sy * rng.uniform(22, 30))])
            scene.layers.append(Layer(chip, scene.background, classID: 0))
            scene.defects.append(DefectRegion(pixelValue: 7, shapes: [chip]))
        case 3:
            // A stretch of the cable's insulation in one of the other colours.
            let other = (colour + rng.int(1...2)) % 3
            let m = rng.int(6...14)
            let stretch = Shape.stroke(Array(path[m...(m + rng.int(3...5))]), width: 10)
            scene.add(stretch, Material(rng.jitter(Self.cableColours[other], 0.04), .glossy, texture: 0.03), UInt8(3 + other))
            scene.defects.append(DefectRegion(pixelValue: 8, shapes: [stretch]))
        default:
            break
        }
        return scene
    }

    public func ruleViolations(_ mask: Image, zoom: Double) -> [String] {
        var violations: [String] = []
        let centreX = Double(mask.width) / 2
        let bodies = mask.components(minArea: Int(800 * zoom * zoom)) { $0 == 1 || $0 == 2 }
        guard bodies.count == 2 else { return ["\(bodies.count) connectors, not 2"] }
        let clamps = mask.components(minArea: Int(80 * zoom * zoom)) { $0 == 2 }
        let left = clamps.filter { $0.centroidX < centreX }.count, right = clamps.filter { $0.centroidX >= centreX }.count
        if left != right { violations.append("connectors with \(left) and \(right) slots") }
        let cables = (0..<3).filter { c in mask.pixels.filter { $0 == UInt8(3 + c) }.count > Int(300 * zoom * zoom) }
        if cables.isEmpty { return violations + ["no cable"] }
        if let type = Self.slots.firstIndex(of: left), cables != [type] {
            violations.append("cable colours \(cables) for \(left) slots (expected \(type))")
        }
        // The slot each cable end sits at, counted from the top of its connector:
        // slot i is centred (i + 0.5 - n / 2) pitches from the connector's middle.
        let ends = mask.components(minArea: Int(40 * zoom * zoom)) { $0 == 6 }
        let slotIndex = ends.map { end -> Int in
            let body = bodies.min { abs($0.centroidX - end.centroidX) < abs($1.centroidX - end.centroidX) }!
            let n = body.centroidX < centreX ? left : right
            return Int(((end.centroidY - body.centroidY) / (Self.pitch * zoom) + Double(n) / 2).rounded(.down))
        }
        if slotIndex.count != 2 || slotIndex[0] != slotIndex[1] {
            violations.append("cable ends at slots \(slotIndex)")
        }
        return violations
    }
}
