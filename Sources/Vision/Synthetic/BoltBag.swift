import Tensor

/// A bag of fasteners in the spirit of MVTec LOCO's `screw_bag`: one long
/// bolt, one short bolt, two nuts and two washers, anywhere in the bag. A
/// border around the scene is cropped off in preprocessing (as the reference
/// crops `screw_bag`).
///
/// Logical: an item missing, an extra nut or washer, two bolts of the same
/// length. Structural: dirt on the bag, a bent bolt, a broken bolt (a piece
/// of its shaft gone, the tip displaced), a rusty nut, a gouged washer.
public struct BoltBag: SyntheticCategory {
    public init() {}
    public let name = "bolt_bag"
    public let size = (width: 380, height: 340)
    public let cropMargin = 20
    /// As the reference treats screw_bag: loose parts, any angle.
    public let rotationDegrees = 180.0
    public let classes = ["background", "bag", "bolt", "nut", "washer"]
    public let productTypes: [String] = []
    public let defectTypes = [
        DefectConfig(defectName: "missing_item", pixelValue: 1, saturationThreshold: 400, relativeSaturation: false),
        DefectConfig(defectName: "additional_item", pixelValue: 2, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "wrong_bolt", pixelValue: 3, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "contamination", pixelValue: 4, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "bent_bolt", pixelValue: 5, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "rust", pixelValue: 6, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "scratch", pixelValue: 7, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "broken_bolt", pixelValue: 8, saturationThreshold: 1, relativeSaturation: true),
    ]

    static let centre = Point(190, 170)
    static let longBolt = 95.0, shortBolt = 60.0

    enum Item: Equatable { case bolt(Double), nut, washer
        /// Half the item's thickness around its axis.
        var radius: Double {
            switch self {
            case .bolt: 14
            case .nut: 15
            case .washer: 16
            }
        }
        /// Half the length of its axis (zero for round items).
        var halfLength: Double {
            if case let .bolt(length) = self { return (length + 16) / 2 }
            return 0
        }
    }

    struct Placed {
        var item: Item, centre: Point, angle: Double
        /// The item's axis as a segment; items are capsules around it.
        var axis: (Point, Point) {
            let d = Point(cos(angle), sin(angle)) * item.halfLength
            return (centre - d, centre + d)
        }
        func clearance(to other: Placed) -> Double {
            let (a, b) = axis, (c, d) = other.axis
            // Segment-to-segment distance, sampled along one segment.
            let samples = (0...8).map { a + (b - a) * (Double($0) / 8) } + [c, d]
            var best = Double.infinity
            for (k, p) in samples.enumerated() {
                best = min(best, k < 9 ? segmentDistanceSquared(p, c, d) : segmentDistanceSquared(p, a, b))
            }
            return best.squareRoot() - item.radius - other.item.radius
        }
    }

    /// Items at random spots and angles inside the bag, 6 px apart at least.
    func place(_ items: [Item], _ rng: inout SeededGenerator) -> [Placed] {
        for _ in 0..<1000 {
            var placed: [Placed] = []
            for item in items {
                for _ in 0..<300 {
                    let a = rng.uniform(0, 2 * Double.pi), d = rng.uniform(0, 100)
                    let candidate = Placed(item: item, centre: Self.centre + Point(cos(a) * d, sin(a) * d * 0.85),
                                           angle: rng.uniform(0, Double.pi))
                    let (e0, e1) = candidate.axis
                    let inside = [e0, e1].allSatisfy { p in
                        let q = p - Self.centre
                        return (q.x * q.x) / (112 * 112) + (q.y * q.y) / (100 * 100) <= 1
                    }
                    if inside && placed.allSatisfy({ $0.clearance(to: candidate) > 6 }) {
                        placed.append(candidate)
                        break
                    }
                }
            }
            if placed.count == items.count { return placed }
        }
        preconditionFailure("bolt_bag: no room for \(items.count) items; the generator's geometry is wrong")
    }

    /// How a bolt's shaft is damaged (structural anomalies).
    enum Damage { case none, bent(Double), broken(gap: Double, tilt: Double, shift: Double) }

    func layers(_ p: Placed, steel: Material, brass: Material, silver: Material, bag: Material, damage: Damage = .none) -> [Layer] {
        let dir = Point(cos(p.angle), sin(p.angle))
        switch p.item {
        case let .bolt(length):
            let headCentre = p.centre - dir * (length / 2)
            var shaft: [Layer]
            switch damage {
            case .none:
                shaft = [Layer(.roundedRect(centre: p.centre + dir * 8, width: length, height: 12, radius: 3, angle: p.angle), steel, classID: 2)]
            case let .bent(bend):
                let knee = headCentre + dir * (length * 0.55)
                let bent = Point(cos(p.angle + bend), sin(p.angle + bend))
                shaft = [Layer(.stroke([headCentre, knee, knee + bent * (length * 0.45 + 8)], width: 12), steel, classID: 2)]
            case let .broken(gap, tilt, shift):
                // The shaft snapped at its middle: a piece `gap` long is gone
                // and the tip lies tilted and pushed sideways.
                let brk = headCentre + dir * (length * 0.5)
                let tipDir = Point(cos(p.angle + tilt), sin(p.angle + tilt))
                let tipStart = brk + dir * gap + Point(-dir.y, dir.x) * shift
                let tipLength = max(length * 0.5 + 8 - gap, 10)
                shaft = [Layer(.stroke([headCentre, brk], width: 12), steel, classID: 2),
                         Layer(.stroke([tipStart, tipStart + tipDir * tipLength], width: 12), steel, classID: 2)]
            }
            return shaft + [Layer(.roundedRect(centre: headCentre, width: 16, height: 24, radius: 3, angle: p.angle), steel, classID: 2)]
        case .nut:
            let hexagon = (0..<6).map { k -> Point in
                let t = p.angle + Double(k) * Double.pi / 3
                return p.centre + Point(cos(t), sin(t)) * 14
            }
            return [Layer(.polygon(hexagon), brass, classID: 3), Layer(.circle(p.centre, 6), bag, classID: 1)]
        case .washer:
            return [Layer(.ring(centre: p.centre, outer: 15, inner: 6.5), silver, classID: 4)]
        }
    }

    public func scene(_ kind: SampleKind, productType: Int?, rng: inout SeededGenerator) -> Scene {
        var scene = baseScene(Colour(0.36, 0.26, 0.18), &rng, texture: 0.12)
        // A ruler along the top edge, inside the cropped border.
        scene.add(.roundedRect(centre: Point(190, 9), width: 300, height: 10, radius: 1, angle: 0), Material(Colour(0.85, 0.8, 0.5)), nil)
        let bag = Material(rng.jitter(Colour(0.86, 0.88, 0.9), 0.03), texture: 0.05)
        scene.add(StructuralDefect.blob(centre: Self.centre, radius: 140, roughness: 0.04, &rng, vertices: 28), bag, 1)
        for _ in 0..<4 {  // wrinkles
            let p = Self.centre + Point(rng.uniform(-100, 100), rng.uniform(-90, 90))
            let a = rng.uniform(0, Double.pi), d = Point(cos(a), sin(a)) * rng.uniform(20, 40)
            scene.add(.stroke([p - d, p + d], width: 2), Material(bag.colour.scaled(1.08)), nil)
        }

        var items: [Item] = [.bolt(Self.longBolt), .bolt(Self.shortBolt), .nut, .nut, .washer, .washer]
        let logical = kind == .logical ? rng.int(0...2) : -1
        var missing: Item?
        if logical == 0 { missing = items.remove(at: rng.int(0...(items.count - 1))) }
        if logical == 1 { items.append(rng.chance(0.5) ? .nut : .washer) }
        if logical == 2 {  // both bolts the same length; the second is the wrong one
            let length = rng.chance(0.5) ? Self.longBolt : Self.shortBolt
            items[0] = .bolt(length == Self.longBolt ? Self.longBolt : Self.shortBolt)
            items[1] = items[0]
        }
        var placed = place(items + (missing.map { [$0] } ?? []), &rng)
        let steel = Material(Colour(0.6, 0.62, 0.66), .glossy, texture: 0.04)
        let brass = Material(rng.jitter(Colour(0.78, 0.64, 0.3), 0.04), .dome, texture: 0.04)
        let silver = Material(Colour(0.78, 0.79, 0.8), .dome, texture: 0.03)
        if let missing {
            let ghost = placed.removeLast()
            scene.defects.append(DefectRegion(pixelValue: 1, shapes: layers(ghost, steel: steel, brass: brass, silver: silver, bag: bag).map(\.shape)))
            _ = missing
        }
        // Structural: 0 bent bolt, 1 broken bolt, 2 dirt, 3 rust, 4 gouged washer.
        let flaw = kind == .structural ? rng.int(0...4) : -1
        for (i, p) in placed.enumerated() {
            var damage = Damage.none
            if i == 0 && flaw == 0 { damage = .bent(rng.uniform(0.5, 0.8) * (rng.chance(0.5) ? 1 : -1)) }
            if i == 0 && flaw == 1 {
                damage = .broken(gap: rng.uniform(10, 16), tilt: rng.uniform(0.2, 0.45) * (rng.chance(0.5) ? 1 : -1),
                                 shift: rng.uniform(4, 8) * (rng.chance(0.5) ? 1 : -1))
            }
            let drawn = layers(p, steel: steel, brass: brass, silver: silver, bag: bag, damage: damage)
            scene.layers += drawn
            if logical == 1 && i == placed.count - 1 { scene.defects.append(DefectRegion(pixelValue: 2, shapes: drawn.map(\.shape))) }
            if logical == 2 && i == 1 { scene.defects.append(DefectRegion(pixelValue: 3, shapes: drawn.map(\.shape))) }
            if i == 0 && flaw == 0 { scene.defects.append(DefectRegion(pixelValue: 5, shapes: drawn.map(\.shape))) }
            if i == 0 && flaw == 1 {
                // The whole bolt as it should be, and where its pieces lie now.
                let whole = layers(p, steel: steel, brass: brass, silver: silver, bag: bag).map(\.shape)
                scene.defects.append(DefectRegion(pixelValue: 8, shapes: whole + drawn.map(\.shape)))
            }
        }

        switch flaw {
        case 2:
            var spot = Self.centre
            for _ in 0..<200 {
                spot = Self.centre + Point(rng.uniform(-90, 90), rng.uniform(-80, 80))
                let probe = Placed(item: .nut, centre: spot, angle: 0)
                if placed.allSatisfy({ $0.clearance(to: probe) > 0 }) { break }
            }
            let blob = StructuralDefect.contamination(at: spot, radius: rng.uniform(11, 16), &rng)
            scene.layers.append(Layer(blob, StructuralDefect.dirt, classID: nil))
            scene.defects.append(DefectRegion(pixelValue: 4, shapes: [blob]))
        case 3:
            let nut = placed.first { $0.item == .nut }!
            let rust = StructuralDefect.blob(centre: nut.centre + Point(rng.uniform(-4, 4), rng.uniform(-4, 4)),
                                             radius: rng.uniform(10, 13), roughness: 0.3, &rng)
            scene.layers.append(Layer(rust, Material(Colour(0.45, 0.2, 0.08), texture: 0.3), classID: nil))
            scene.defects.append(DefectRegion(pixelValue: 6, shapes: [rust]))
        case 4:
            let washer = placed.first { $0.item == .washer }!
            let a = rng.uniform(0, 2 * Double.pi)
            let mid = washer.centre + Point(cos(a), sin(a)) * 10
            let d = Point(-sin(a), cos(a)) * rng.uniform(9, 12)
            let gouge = Shape.stroke([mid - d, mid + d], width: rng.uniform(3.5, 5))
            scene.layers.append(Layer(gouge, Material(Colour(0.3, 0.3, 0.32)), classID: nil))
            scene.defects.append(DefectRegion(pixelValue: 7, shapes: [gouge]))
        default:
            break
        }
        return scene
    }

    public func ruleViolations(_ mask: Image, zoom: Double) -> [String] {
        var violations: [String] = []
        let minArea = Int(200 * zoom * zoom)
        let bolts = mask.components(minArea: minArea) { $0 == 2 }
        let nuts = mask.components(minArea: minArea) { $0 == 3 }
        let washers = mask.components(minArea: minArea) { $0 == 4 }
        if nuts.count != 2 { violations.append("\(nuts.count) nuts, not 2") }
        if washers.count != 2 { violations.append("\(washers.count) washers, not 2") }
        // Areas (rotation-free): long bolt 95 x 12 + head 16 x 24 = 1524 px, short 60 x 12 + 384 = 1104.
        let areas = bolts.map { Double($0.area) / (zoom * zoom) }
        let long = areas.filter { $0 > 1314 }.count, short = areas.filter { $0 <= 1314 }.count
        if long != 1 || short != 1 { violations.append("bolt areas \(areas.map { Int($0) }): need one long and one short") }
        return violations
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
