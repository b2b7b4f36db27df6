import Tensor

/// Exact k-nearest-neighbour search in Euclidean distance, as chunked GEMM:
/// |a - b|^2 = |a|^2 + |b|^2 - 2 a.b, one block of queries against one block
/// of memory at a time, keeping a running top-k per query. No matrix larger
/// than `queryChunk x memoryChunk` is ever formed.
public struct NearestNeighbors: Sendable {
    /// Memory vectors, [M, D] row-major.
    public let memory: Tensor
    let memoryNorms: [Float]
    public let queryChunk: Int
    public let memoryChunk: Int

    public init(memory: Tensor, queryChunk: Int = 512, memoryChunk: Int = 4096) {
        precondition(memory.rank == 2, "memory must be [M, D], got \(memory.shape)")
        self.memory = memory
        self.queryChunk = queryChunk
        self.memoryChunk = memoryChunk
        memoryNorms = Self.squaredNorms(memory)
    }

    public var count: Int { memory.shape[0] }
    public var dimension: Int { memory.shape[1] }

    static func squaredNorms(_ t: Tensor) -> [Float] {
        let (n, d) = (t.shape[0], t.shape[1])
        return t.withUnsafeBufferPointer { p in
            Compute.parallelMap(n) { i in
                var s: Float = 0
                for j in 0..<d { s += p[i * d + j] * p[i * d + j] }
                return s
            }
        }
    }

    /// The `k` nearest memory rows of each query row ([Q, D]), nearest
    /// first: distances (not squared) and indices, each [Q][k]. Memory rows
    /// in `excluded` are skipped (leave-one-out scoring of train images).
    public func search(_ queries: Tensor, k: Int, excluding excluded: Range<Int>? = nil) -> (distances: [[Float]], indices: [[Int]]) {
        precondition(queries.rank == 2 && queries.shape[1] == dimension,
                     "queries \(queries.shape) do not match memory dimension \(dimension)")
        let q = queries.shape[0]
        let available = count - (excluded?.clamped(to: 0..<count).count ?? 0)
        precondition(k >= 1 && k <= available, "k = \(k) but only \(available) memory rows are searchable")
        let queryNorms = Self.squaredNorms(queries)
        var bestD = [[Float]](repeating: [], count: q), bestI = [[Int]](repeating: [], count: q)
        let block = UnsafeMutablePointer<Float>.allocate(capacity: queryChunk * memoryChunk)
        defer { block.deallocate() }
        for q0 in stride(from: 0, to: q, by: queryChunk) {
            let qn = min(queryChunk, q - q0)
            var heaps = (0..<qn).map { _ in TopK(k: k) }
            for m0 in stride(from: 0, to: count, by: memoryChunk) {
                let mn = min(memoryChunk, count - m0)
                if let excluded, excluded.lowerBound <= m0, m0 + mn <= excluded.upperBound { continue }
                // block = Q_chunk * M_chunk^T
                queries.withUnsafeBufferPointer { qp in
                    memory.withUnsafeBufferPointer { mp in
                        BLAS.sgemm(transB: true, m: qn, n: mn, k: dimension,
                                   a: qp.baseAddress! + q0 * dimension, lda: dimension,
                                   b: mp.baseAddress! + m0 * dimension, ldb: dimension,
                                   c: block, ldc: mn)
                    }
                }
                let bp = SendableMutablePointer(block)
                heaps.withUnsafeMutableBufferPointer { hs in
                    let hp = HeapBox(hs.baseAddress!)
                    Compute.parallelFor(qn, grain: 8) { rows in
                        for r in rows {
                            let qNorm = queryNorms[q0 + r]
                            let row = bp.p + r * mn
                            var worst = hp.p[r].worst
                            memoryNorms.withUnsafeBufferPointer { norms in
                                for j in 0..<mn {
                                    let index = m0 + j
                                    let d2 = max(qNorm + norms[index] - 2 * row[j], 0)
                                    // Cheap rejection first; the exclusion test only for candidates.
                                    guard d2 < worst else { continue }
                                    if let excluded, excluded.contains(index) { continue }
                                    hp.p[r].offer(d2, index)
                                    worst = hp.p[r].worst
                                }
                            }
                        }
                    }
                }
            }
            for r in 0..<qn {
                let sorted = heaps[r].sorted()
                bestD[q0 + r] = sorted.map { $0.0.squareRoot() }
                bestI[q0 + r] = sorted.map(\.1)
            }
        }
        return (bestD, bestI)
    }
}

/// The k smallest (distance, index) pairs seen so far; ties keep the lower index.
struct TopK {
    let k: Int
    private(set) var items: [(Float, Int)] = []
    /// The largest kept distance (infinity until k are kept).
    private(set) var worst = Float.infinity

    init(k: Int) { self.k = k; items.reserveCapacity(k) }

    mutating func offer(_ d: Float, _ i: Int) {
        if items.count < k {
            items.append((d, i))
            if items.count == k { worst = items.map(\.0).max()! }
            return
        }
        guard d < worst else { return }
        let at = items.firstIndex { $0.0 == worst }!
        items[at] = (d, i)
        worst = items.map(\.0).max()!
    }

    func sorted() -> [(Float, Int)] { items.sorted { ($0.0, $0.1) < ($1.0, $1.1) } }
}

struct HeapBox: @unchecked Sendable {
    let p: UnsafeMutablePointer<TopK>
    init(_ p: UnsafeMutablePointer<TopK>) { self.p = p }
}
