#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The placement of a product recovered from its class mask: the centroid
/// and principal axis of every non-background pixel. Maps design
/// coordinates (full size, product centred at `designCentre`) to mask pixels
/// and back, so that rule checks can ask "which compartment is this pin in".
struct MaskFrame {
    let centroid: Point
    let angle: Double
    let zoom: Double
    let designCentre: Point

    /// `region` selects the pixels whose shape fixes the frame (e.g. the tray
    /// and everything on it); its principal axis must be the design's x axis.
    init(_ mask: Image, zoom: Double, designCentre: Point, region: (UInt8) -> Bool) {
        var n = 0.0, sx = 0.0, sy = 0.0
        for y in 0..<mask.height { for x in 0..<mask.width where region(mask.pixels[y * mask.width + x]) {
            n += 1; sx += Double(x) + 0.5; sy += Double(y) + 0.5
        } }
        let cx = sx / max(n, 1), cy = sy / max(n, 1)
        var mxx = 0.0, myy = 0.0, mxy = 0.0
        for y in 0..<mask.height { for x in 0..<mask.width where region(mask.pixels[y * mask.width + x]) {
            let dx = Double(x) + 0.5 - cx, dy = Double(y) + 0.5 - cy
            mxx += dx * dx; myy += dy * dy; mxy += dx * dy
        } }
        centroid = Point(cx, cy)
        angle = 0.5 * atan2(2 * mxy, mxx - myy)
        self.zoom = zoom
        self.designCentre = designCentre
    }

    /// Design coordinates -> mask pixels.
    func toMask(_ p: Point) -> Point {
        let d = p - designCentre
        let (u, v) = rotate(d, angle)
        return Point(centroid.x + u * zoom, centroid.y + v * zoom)
    }

    /// Mask pixels -> design coordinates.
    func toDesign(_ q: Point) -> Point {
        let d = (q - centroid) * (1 / zoom)
        let (u, v) = rotate(d, -angle)
        return designCentre + Point(u, v)
    }

    /// Whether any pixel within `radius` design units of design point `p` satisfies `predicate`.
    func any(_ mask: Image, near p: Point, radius: Double, _ predicate: (UInt8) -> Bool) -> Bool {
        let q = toMask(p), r = Int((radius * zoom).rounded(.up))
        for y in max(0, Int(q.y) - r)...min(mask.height - 1, Int(q.y) + r) {
            for x in max(0, Int(q.x) - r)...min(mask.width - 1, Int(q.x) + r) where predicate(mask.pixels[y * mask.width + x]) {
                return true
            }
        }
        return false
    }
}

extension Component {
    var centroid: Point { Point(centroidX + 0.5, centroidY + 0.5) }
}
