#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A point in a scene, in pixels of the native image (or in a part's local frame).
public struct Point: Equatable, Sendable {
    public var x: Double, y: Double
    public init(_ x: Double, _ y: Double) { self.x = x; self.y = y }

    static func + (a: Point, b: Point) -> Point { Point(a.x + b.x, a.y + b.y) }
    static func - (a: Point, b: Point) -> Point { Point(a.x - b.x, a.y - b.y) }
    static func * (a: Point, s: Double) -> Point { Point(a.x * s, a.y * s) }
    var length: Double { (x * x + y * y).squareRoot() }
}

/// A rotation by `angle` about `centre`, a translation, then a uniform
/// zoom: how a whole product is placed in the image (position and rotation
/// jitter), and how scenes designed at full size render at a smaller size.
public struct Placement: Equatable, Sendable {
    public var centre: Point
    public var angle: Double
    public var shift: Point
    public var zoom: Double

    public init(centre: Point, angle: Double, shift: Point, zoom: Double = 1) {
        self.centre = centre; self.angle = angle; self.shift = shift; self.zoom = zoom
    }

    public static let identity = Placement(centre: Point(0, 0), angle: 0, shift: Point(0, 0))

    public func apply(_ p: Point) -> Point {
        let d = p - centre, c = cos(angle), s = sin(angle)
        return Point(centre.x + c * d.x - s * d.y + shift.x, centre.y + s * d.x + c * d.y + shift.y) * zoom
    }

    public func invert(_ q: Point) -> Point { inverse(q) }

    /// ``invert(_:)`` with the rotation's cosine and sine taken once: a
    /// renderer inverts four points per pixel, and libm's `cos` and `sin`
    /// for each were most of a synthesis' time. The same values.
    public var inverse: Inverse { Inverse(self) }

    public struct Inverse: Sendable {
        let centre: Point, shift: Point, zoom: Double, c: Double, s: Double

        init(_ p: Placement) {
            centre = p.centre; shift = p.shift; zoom = p.zoom; c = cos(p.angle); s = sin(p.angle)
        }

        @inline(__always)
        public func callAsFunction(_ q: Point) -> Point {
            let d = q * (1 / zoom) - shift - centre
            return Point(centre.x + c * d.x + s * d.y, centre.y - s * d.x + c * d.y)
        }
    }
}

/// The shapes parts are drawn from, in scene coordinates before placement.
public enum Shape: Equatable, Sendable {
    case ellipse(centre: Point, rx: Double, ry: Double, angle: Double)
    /// A rectangle with rounded corners (radius r), rotated by `angle` about its centre.
    case roundedRect(centre: Point, width: Double, height: Double, radius: Double, angle: Double)
    /// A closed polygon (even-odd rule).
    case polygon([Point])
    /// A polyline thickened to `width`, with round caps.
    case stroke([Point], width: Double)
    /// An annulus.
    case ring(centre: Point, outer: Double, inner: Double)

    public static func circle(_ c: Point, _ r: Double) -> Shape { .ellipse(centre: c, rx: r, ry: r, angle: 0) }

    /// Whether `p` lies inside.
    public func contains(_ p: Point) -> Bool { containment(p) }

    /// ``contains(_:)`` with a rotated shape's cosine and sine taken once
    /// (a renderer tests four points per pixel; libm's `cos` and `sin` for
    /// each were a fifth of a synthesis' time). The same answers.
    public var containment: Containment { Containment(self) }

    public struct Containment: Sendable {
        let shape: Shape
        /// cos and sin of minus the shape's angle (0 for unrotated shapes).
        let c: Double, s: Double

        init(_ shape: Shape) {
            self.shape = shape
            switch shape {
            case let .ellipse(_, _, _, angle), let .roundedRect(_, _, _, _, angle): (c, s) = (cos(-angle), sin(-angle))
            case .polygon, .stroke, .ring: (c, s) = (1, 0)
            }
        }

        /// `rotate(d, -angle)`, with the cosine and sine taken.
        @inline(__always)
        func unrotated(_ d: Point) -> (Double, Double) { (c * d.x - s * d.y, s * d.x + c * d.y) }

        public func callAsFunction(_ p: Point) -> Bool {
            switch shape {
            case let .ellipse(centre, rx, ry, _):
                let (u, v) = unrotated(p - centre)
                return (u * u) / (rx * rx) + (v * v) / (ry * ry) <= 1
            case let .roundedRect(centre, w, h, r, _):
                let (u, v) = unrotated(p - centre)
                let qx = abs(u) - (w / 2 - r), qy = abs(v) - (h / 2 - r)
                if qx <= 0 || qy <= 0 { return abs(u) <= w / 2 && abs(v) <= h / 2 }
                return qx * qx + qy * qy <= r * r
            case let .polygon(points):
                var inside = false
                var j = points.count - 1
                for i in 0..<points.count {
                    let a = points[i], b = points[j]
                    if (a.y > p.y) != (b.y > p.y), p.x < (b.x - a.x) * (p.y - a.y) / (b.y - a.y) + a.x { inside.toggle() }
                    j = i
                }
                return inside
            case let .stroke(points, width):
                let limit = width * width / 4
                for i in 0..<max(points.count - 1, 1) {
                    let a = points[i], b = points[min(i + 1, points.count - 1)]
                    if segmentDistanceSquared(p, a, b) <= limit { return true }
                }
                return false
            case let .ring(centre, outer, inner):
                let d = (p - centre).length
                return d <= outer && d >= inner
            }
        }
    }

    /// Axis-aligned bounds (minX, minY, maxX, maxY).
    public var bounds: (Double, Double, Double, Double) {
        switch self {
        case let .ellipse(c, rx, ry, _):
            let r = max(rx, ry)
            return (c.x - r, c.y - r, c.x + r, c.y + r)
        case let .roundedRect(c, w, h, _, _):
            let r = (w * w + h * h).squareRoot() / 2
            return (c.x - r, c.y - r, c.x + r, c.y + r)
        case let .polygon(points):
            return (points.map(\.x).min()!, points.map(\.y).min()!, points.map(\.x).max()!, points.map(\.y).max()!)
        case let .stroke(points, width):
            return (points.map(\.x).min()! - width, points.map(\.y).min()! - width,
                    points.map(\.x).max()! + width, points.map(\.y).max()! + width)
        case let .ring(c, outer, _):
            return (c.x - outer, c.y - outer, c.x + outer, c.y + outer)
        }
    }

    /// A polygon tracing the outline (strokes and rings excepted: their
    /// outlines are not simple polygons), for VIA annotations.
    public func outline(samples: Int = 40) -> [Point]? {
        switch self {
        case let .ellipse(c, rx, ry, angle):
            return (0..<samples).map { i in
                let t = 2 * Double.pi * Double(i) / Double(samples)
                let (u, v) = rotate(Point(rx * cos(t), ry * sin(t)), angle)
                return Point(c.x + u, c.y + v)
            }
        case let .roundedRect(c, w, h, r, angle):
            var pts: [Point] = []
            let corners = [(w / 2 - r, h / 2 - r, 0.0), (-(w / 2 - r), h / 2 - r, 0.5), (-(w / 2 - r), -(h / 2 - r), 1.0), (w / 2 - r, -(h / 2 - r), 1.5)]
            for (cx, cy, start) in corners {
                for k in 0...4 {
                    let t = Double.pi * (start + 0.5 * Double(k) / 4)
                    let (u, v) = rotate(Point(cx + r * cos(t), cy + r * sin(t)), angle)
                    pts.append(Point(c.x + u, c.y + v))
                }
            }
            return pts
        case let .polygon(points):
            return points
        case let .stroke(points, width) where points.count == 2:
            // A straight stroke as its rectangle (round caps left out).
            let d = points[1] - points[0], n = Point(-d.y, d.x) * (width / 2 / max(d.length, 1e-9))
            return [points[0] + n, points[1] + n, points[1] - n, points[0] - n]
        case .stroke, .ring:
            return nil
        }
    }

    /// The shape moved by `d`.
    public func moved(by d: Point) -> Shape {
        switch self {
        case let .ellipse(c, rx, ry, a): return .ellipse(centre: c + d, rx: rx, ry: ry, angle: a)
        case let .roundedRect(c, w, h, r, a): return .roundedRect(centre: c + d, width: w, height: h, radius: r, angle: a)
        case let .polygon(p): return .polygon(p.map { $0 + d })
        case let .stroke(p, w): return .stroke(p.map { $0 + d }, width: w)
        case let .ring(c, o, i): return .ring(centre: c + d, outer: o, inner: i)
        }
    }
}

func rotate(_ p: Point, _ angle: Double) -> (Double, Double) {
    let c = cos(angle), s = sin(angle)
    return (c * p.x - s * p.y, s * p.x + c * p.y)
}

func segmentDistanceSquared(_ p: Point, _ a: Point, _ b: Point) -> Double {
    let ab = b - a, ap = p - a
    let len = ab.x * ab.x + ab.y * ab.y
    let t = len > 0 ? min(1, max(0, (ap.x * ab.x + ap.y * ab.y) / len)) : 0
    let q = a + ab * t - p
    return q.x * q.x + q.y * q.y
}

/// Points along a quadratic Bezier curve from `a` to `b` bent towards `control`.
func bezier(_ a: Point, _ control: Point, _ b: Point, segments: Int = 24) -> [Point] {
    (0...segments).map { i in
        let t = Double(i) / Double(segments)
        return a * ((1 - t) * (1 - t)) + control * (2 * (1 - t) * t) + b * (t * t)
    }
}
