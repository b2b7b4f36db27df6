import Tensor

/// PatchCore's memory subsampling: the greedy k-center coreset. Rows are
/// first projected to `projection` dimensions with a seeded Gaussian matrix
/// (Johnson-Lindenstrauss; skipped when the rows have no more dimensions
/// than that); starting from a seeded random row, the row farthest from
/// every row chosen so far is added until `count` are chosen:
///
///     c_{k+1} = argmax_i  min_{j <= k} ||P x_i - P x_{c_j}||
///
/// Cost: count x N x projection multiply-adds. The reference PSAD keeps
/// every patch (no coreset); this is an option for large memories.
public enum Coreset {
    /// Indices of the chosen rows of `rows` ([N, d]), sorted.
    /// `start` fixes the first row (a seeded random one by default).
    public static func greedyKCenter(_ rows: Tensor, count: Int, projection: Int = 128, seed: UInt64, start: Int? = nil) -> [Int] {
        precondition(rows.rank == 2, "coreset of a [N, d] matrix, not \(rows.shape)")
        let (n, d) = (rows.shape[0], rows.shape[1])
        guard count < n else { return Array(0..<n) }
        guard count > 0 else { return [] }
        var rng = SeededGenerator(seed: seed)
        let x: Tensor
        if projection < d {
            let r = Tensor.randomNormal([d, projection], std: 1 / Float(projection).squareRoot(), generator: &rng)
            x = Tensor.matmul(rows, r)
        } else {
            x = rows
        }
        let dims = x.shape[1]
        var nearest = [Float](repeating: .infinity, count: n)
        var chosen: [Int] = []
        chosen.reserveCapacity(count)
        var current = start ?? rng.int(0...(n - 1))
        let chunks = max(1, Compute.threads)
        x.withUnsafeBufferPointer { xs in
            let base = SendablePointer(xs.baseAddress!)
            for _ in 0..<count {
                chosen.append(current)
                let centre = current
                let best = nearest.withUnsafeMutableBufferPointer { buffer -> (Float, Int) in
                    let out = SendableMutablePointer(buffer.baseAddress!)
                    // Each chunk updates its rows and returns its farthest row.
                    let partial = Compute.parallelMap(chunks) { c -> (Float, Int) in
                        var top: (Float, Int) = (-1, -1)
                        let c0 = base.p + centre * dims
                        for i in (n * c / chunks)..<(n * (c + 1) / chunks) {
                            let s = VectorMath.squaredDistance(base.p + i * dims, c0, count: dims)
                            let m = min(out.p[i], s)
                            out.p[i] = m
                            if m > top.0 { top = (m, i) }
                        }
                        return top
                    }
                    // Largest distance; on ties the lowest row (chunks are in row order).
                    return partial.reduce((-1, -1)) { $1.0 > $0.0 ? $1 : $0 }
                }
                current = best.1
                if best.0 <= 0 { break }   // every remaining row coincides with a chosen one
            }
        }
        return chosen.sorted()
    }
}
