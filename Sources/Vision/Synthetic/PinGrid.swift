import Tensor

/// Pushpins in the spirit of MVTec LOCO's `pushpins`: a tray of 3 x 5
/// compartments with exactly one pin in each.
///
/// Logical: a compartment without a pin, a compartment with two, a missing
/// separator. Structural: dirt in a compartment, a scratch on the tray, a
/// damaged pin head, a pin head of another colour.
///
/// With `perCompartment` (the benchmark's `loco` size) the parts are labelled
/// as finely as LOCO's pushpins annotations: each separator line, the
/// needles of each row and the pin head of each compartment are classes of
/// their own, 26 in all with the background.
public struct PinGrid: SyntheticCategory {
    public let perCompartment: Bool
    public init() { perCompartment = false }
    public init(perCompartment: Bool) { self.perCompartment = perCompartment }
    public let name = "pin_grid"
    public let size = (width: 400, height: 320)
    public var classes: [String] {
        guard perCompartment else { return ["background", "tray", "separator", "pin_head", "pin_needle"] }
        return ["background", "tray"] + (1..<Self.columns).map { "separator_column_\($0)" } + (1..<Self.rows).map { "separator_row_\($0)" }
            + (0..<Self.rows).map { "pin_needles_row_\($0)" }
            + (0..<(Self.rows * Self.columns)).map { "pin_head_\($0 / Self.columns)_\($0 % Self.columns)" }
    }
    /// Class ids: the separator line of a segment, the needles of row r, the head in compartment (r, c).
    func separatorClass(_ a: Point, _ b: Point) -> UInt8 {
        guard perCompartment else { return 2 }
        if abs(a.x - b.x) < 1e-9 { return UInt8(1 + Int(((a.x - Self.inner.x0) / Self.cellWidth).rounded())) }
        return UInt8(1 + (Self.columns - 1) + Int(((a.y - Self.inner.y0) / Self.cellHeight).rounded()))
    }
    func needleClass(row r: Int) -> UInt8 { perCompartment ? UInt8(2 + (Self.columns - 1) + (Self.rows - 1) + r) : 4 }
    func headClass(_ r: Int, _ c: Int) -> UInt8 {
        perCompartment ? UInt8(2 + (Self.columns - 1) + (Self.rows - 1) + Self.rows + r * Self.columns + c) : 3
    }
    var headClasses: ClosedRange<UInt8> { perCompartment ? headClass(0, 0)...headClass(Self.rows - 1, Self.columns - 1) : 3...3 }
    public let productTypes: [String] = []
    public let annotationFormat = CategoryManifest.AnnotationFormat.via
    public let defectTypes = [
        DefectConfig(defectName: "missing_pin", pixelValue: 1, saturationThreshold: 330, relativeSaturation: false),
        DefectConfig(defectName: "additional_pin", pixelValue: 2, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "missing_separator", pixelValue: 3, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "contamination", pixelValue: 4, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "scratch", pixelValue: 5, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "damaged_head", pixelValue: 6, saturationThreshold: 1, relativeSaturation: true),
        DefectConfig(defectName: "head_colour", pixelValue: 7, saturationThreshold: 1, relativeSaturation: true),
    ]

    static let rows = 3, columns = 5
    static let inner = (x0: 30.0, y0: 30.0, x1: 370.0, y1: 290.0)
    static var cellWidth: Double { (inner.x1 - inner.x0) / Double(columns) }
    static var cellHeight: Double { (inner.y1 - inner.y0) / Double(rows) }
    static let headRadius = 9.0, needleLength = 22.0
    static let centre = Point(200, 160)

    static func cellCentre(_ r: Int, _ c: Int) -> Point {
        Point(inner.x0 + (Double(c) + 0.5) * cellWidth, inner.y0 + (Double(r) + 0.5) * cellHeight)
    }

    /// Internal separator segments, one per compartment boundary.
    static var separators: [(Point, Point)] {
        var segments: [(Point, Point)] = []
        for c in 1..<columns {
            let x = inner.x0 + Double(c) * cellWidth
            for r in 0..<rows { segments.append((Point(x, inner.y0 + Double(r) * cellHeight - 3), Point(x, inner.y0 + Double(r + 1) * cellHeight + 3))) }
        }
        for r in 1..<rows {
            let y = inner.y0 + Double(r) * cellHeight
            for c in 0..<columns { segments.append((Point(inner.x0 + Double(c) * cellWidth - 3, y), Point(inner.x0 + Double(c + 1) * cellWidth + 3, y))) }
        }
        return segments
    }

    func pin(at head: Point, angle: Double, head material: Material, needle: Material, cell: (Int, Int)) -> [Layer] {
        let tip = head + Point(cos(angle), sin(angle)) * Self.needleLength
        return [Layer(.stroke([head, tip], width: 3.5), needle, classID: needleClass(row: cell.0)),
                Layer(.circle(head, Self.headRadius), material, classID: headClass(cell.0, cell.1))]
    }

    public func scene(_ kind: SampleKind, productType: Int?, rng: inout SeededGenerator) -> Scene {
        var scene = baseScene(Colour(0.78, 0.76, 0.72), &rng)
        let trayColour = rng.jitter(Colour(0.35, 0.45, 0.6), 0.05)
        scene.add(.roundedRect(centre: Self.centre, width: 364, height: 284, radius: 14, angle: 0),
                  Material(trayColour, texture: 0.03), 1)
        var separators = Self.separators
        var missingSeparator: (Point, Point)?
        if kind == .logical, rng.chance(1.0 / 3.0) {
            missingSeparator = separators.remove(at: rng.int(0...(separators.count - 1)))
        }
        let wall = Material(trayColour.scaled(0.72), texture: 0.02)
        for (a, b) in separators { scene.add(.stroke([a, b], width: 6), wall, separatorClass(a, b)) }
        if let (a, b) = missingSeparator {
            scene.defects.append(DefectRegion(pixelValue: 3, shapes: [.stroke([a, b], width: 8)]))
        }

        let headColour = rng.jitter(Colour(0.95, 0.78, 0.2), 0.05)
        let needle = Material(Colour(0.72, 0.72, 0.75), .glossy, texture: 0.02)
        let mx = Self.cellWidth / 2 - 26, my = Self.cellHeight / 2 - 26
        var cells = (0..<(Self.rows * Self.columns)).map { ($0 / Self.columns, $0 % Self.columns) }
        if kind == .logical && missingSeparator == nil {
            let (r, c) = cells[rng.int(0...(cells.count - 1))]
            let cell = Self.cellCentre(r, c)
            let box = Shape.roundedRect(centre: cell, width: Self.cellWidth - 10, height: Self.cellHeight - 10, radius: 2, angle: 0)
            if rng.chance(0.5) {
                cells.removeAll { $0 == (r, c) }
                scene.defects.append(DefectRegion(pixelValue: 1, shapes: [box]))
            } else {
                // A second pin on the other side of the same compartment.
                let head = cell + Point(rng.uniform(-mx, mx), my * 0.9)
                let angle = rng.uniform(-Double.pi, 0)
                let extra = pin(at: head, angle: angle, head: Material(headColour, .dome), needle: needle, cell: (r, c))
                scene.layers += extra
                cells.removeAll { $0 == (r, c) }
                scene.layers += pin(at: cell + Point(rng.uniform(-mx, mx), -my * 0.9), angle: rng.uniform(0, Double.pi),
                                    head: Material(headColour, .dome), needle: needle, cell: (r, c))
                scene.defects.append(DefectRegion(pixelValue: 2, shapes: extra.map(\.shape)))
            }
        }
        var heads: [Point] = [], headCells: [(Int, Int)] = []
        for (r, c) in cells {
            let head = Self.cellCentre(r, c) + Point(rng.uniform(-mx, mx), rng.uniform(-my, my))
            heads.append(head)
            headCells.append((r, c))
            scene.layers += pin(at: head, angle: rng.uniform(-Double.pi, Double.pi),
                                head: Material(rng.jitter(headColour, 0.03), .dome), needle: needle, cell: (r, c))
        }

        if kind == .structural {
            let (r, c) = cells[rng.int(0...(cells.count - 1))]
            switch rng.int(0...3) {
            case 0:
                let spot = Self.cellCentre(r, c) + Point(rng.uniform(-12, 12), rng.uniform(-20, 20))
                let blob = StructuralDefect.contamination(at: spot, radius: rng.uniform(8, 12), &rng)
                scene.layers.append(Layer(blob, StructuralDefect.dirt, classID: nil))
                scene.defects.append(DefectRegion(pixelValue: 4, shapes: [blob]))
            case 1:
                let scratch = StructuralDefect.scratch(at: Self.cellCentre(r, c), length: rng.uniform(25, 40), &rng)
                scene.layers.append(Layer(scratch, StructuralDefect.scratchMark, classID: nil))
                scene.defects.append(DefectRegion(pixelValue: 5, shapes: [scratch]))
            case 2:
                let head = heads[rng.int(0...(heads.count - 1))]
                let spot = Shape.circle(head + Point(rng.uniform(-3, 3), rng.uniform(-3, 3)), 5.5)
                scene.layers.append(Layer(spot, darken: 0.35))
                scene.defects.append(DefectRegion(pixelValue: 6, shapes: [spot]))
            default:
                let which = rng.int(0...(heads.count - 1))
                let head = Shape.circle(heads[which], Self.headRadius)
                let colour = rng.pick([Colour(0.85, 0.2, 0.15), Colour(0.2, 0.55, 0.3), Colour(0.92, 0.92, 0.9)])
                scene.add(head, Material(rng.jitter(colour, 0.03), .dome), headClass(headCells[which].0, headCells[which].1))
                scene.defects.append(DefectRegion(pixelValue: 7, shapes: [head]))
            }
        }
        return scene
    }

    public func ruleViolations(_ mask: Image, zoom: Double) -> [String] {
        let frame = MaskFrame(mask, zoom: zoom, designCentre: Self.centre) { $0 != 0 }
        var violations: [String] = []
        var counts = [Int](repeating: 0, count: Self.rows * Self.columns)
        let minArea = Int(0.4 * Double.pi * Self.headRadius * Self.headRadius * zoom * zoom)
        let heads = headClasses
        for head in mask.components(minArea: minArea, where: { heads.contains($0) }) {
            let p = frame.toDesign(head.centroid)
            let c = Int(((p.x - Self.inner.x0) / Self.cellWidth).rounded(.down))
            let r = Int(((p.y - Self.inner.y0) / Self.cellHeight).rounded(.down))
            guard (0..<Self.rows).contains(r), (0..<Self.columns).contains(c) else {
                violations.append("a pin outside every compartment")
                continue
            }
            counts[r * Self.columns + c] += 1
        }
        for (i, n) in counts.enumerated() where n != 1 {
            violations.append("compartment (\(i / Self.columns), \(i % Self.columns)) holds \(n) pins, not 1")
        }
        for (a, b) in Self.separators {
            let middle = (a + b) * 0.5
            let separator = separatorClass(a, b)
            if !frame.any(mask, near: middle, radius: 4, { $0 == separator }) {
                violations.append("separator at (\(Int(middle.x)), \(Int(middle.y))) is missing")
            }
        }
        return violations
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
