/// A connected region of a mask (8-connectivity).
public struct Component: Equatable, Sendable {
    public var area: Int
    public var centroidX: Double, centroidY: Double
    public var minX: Int, minY: Int, maxX: Int, maxY: Int

    /// The larger side of the bounding box.
    public var extent: Int { max(maxX - minX, maxY - minY) + 1 }
}

extension Image {
    /// The 8-connected components of pixels whose value satisfies `predicate`
    /// (1-channel images), in scan order of their first pixel; components
    /// smaller than `minArea` are dropped.
    public func components(minArea: Int = 1, where predicate: (UInt8) -> Bool) -> [Component] {
        precondition(channels == 1, "components need a 1-channel mask")
        var seen = [Bool](repeating: false, count: width * height)
        var result: [Component] = []
        var stack: [Int] = []
        for start in 0..<(width * height) where !seen[start] && predicate(pixels[start]) {
            var c = Component(area: 0, centroidX: 0, centroidY: 0, minX: width, minY: height, maxX: 0, maxY: 0)
            var sx = 0.0, sy = 0.0
            seen[start] = true
            stack.append(start)
            while let i = stack.popLast() {
                let x = i % width, y = i / width
                c.area += 1; sx += Double(x); sy += Double(y)
                c.minX = min(c.minX, x); c.maxX = max(c.maxX, x); c.minY = min(c.minY, y); c.maxY = max(c.maxY, y)
                for dy in -1...1 {
                    for dx in -1...1 {
                        let nx = x + dx, ny = y + dy
                        guard nx >= 0, ny >= 0, nx < width, ny < height else { continue }
                        let j = ny * width + nx
                        if !seen[j] && predicate(pixels[j]) { seen[j] = true; stack.append(j) }
                    }
                }
            }
            c.centroidX = sx / Double(c.area); c.centroidY = sy / Double(c.area)
            if c.area >= minArea { result.append(c) }
        }
        return result
    }
}
