/// How many separate pieces of each part a mask holds: per foreground class,
/// the number of 8-connected components of its pixels.
///
/// The histogram bank (SPEC-PSAD, stage 5) measures a part by its pixel
/// count, so one pin more or less in a grid of pins moves it by a part's area
/// while the segmenter's boundary noise on every pin moves it too. A count
/// of pieces is in whole instances and does not move with the boundary: the
/// instance bank (memory type letter `n`, not in the paper) compares these
/// vectors as they are, with no standardisation.
public enum PartInstances {
    /// - Parameters:
    ///   - labels: class ids laid out [height, width].
    /// - Returns: `classes - 1` counts, for classes 1..<classes.
    public static func counts(labels: [Int32], height: Int, width: Int, classes: Int) -> [Double] {
        precondition(labels.count == height * width, "\(labels.count) labels for \(width)x\(height)")
        var counts = [Double](repeating: 0, count: max(classes - 1, 0))
        var seen = [Bool](repeating: false, count: labels.count)
        var stack: [Int] = []
        for start in labels.indices where !seen[start] {
            seen[start] = true
            let c = Int(labels[start])
            guard c > 0, c < classes else { continue }
            counts[c - 1] += 1
            // Flood the component: every pixel of class c reachable through the eight neighbours.
            stack.append(start)
            while let p = stack.popLast() {
                let y = p / width, x = p % width
                for ny in max(y - 1, 0)...min(y + 1, height - 1) {
                    for nx in max(x - 1, 0)...min(x + 1, width - 1) {
                        let q = ny * width + nx
                        if !seen[q] && Int(labels[q]) == c { seen[q] = true; stack.append(q) }
                    }
                }
            }
        }
        return counts
    }
}
