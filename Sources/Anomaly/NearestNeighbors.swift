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
                    let hp = SharedPointer(hs.baseAddress!)
                    Compute.parallelFor(qn, grain: 8) { rows in
                        for r in rows {
                            let qNorm = queryNorms[q0 + r]
                            let row = bp.p + r * mn
                            memoryNorms.withUnsafeBufferPointer { norms in
                                Self.scan(row: row, norms: norms.baseAddress! + m0, count: mn, queryNorm: qNorm, into: &hp.p[r]) { j in
                                    let index = m0 + j
                                    return excluded?.contains(index) == true ? nil : index
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

extension NearestNeighbors {
    /// Each memory row's `k` nearest other memory rows outside its own group
    /// (`groups`: consecutive ranges covering every row, e.g. each train
    /// image's patches): the leave-one-out search of every row as a query,
    /// with each pair's distance computed once. A block of rows [a, a + C)
    /// meets the rows from a on; each block product serves the block's rows
    /// (a row of it) and the later rows (a column of it), so the products
    /// cover half the pairs of searching row by row. Both sides use the same
    /// float expression (|x|^2 + |y|^2 - 2 x.y, the sum commutes) and the
    /// top-k keeps the smallest (distance, index) pairs whatever the order
    /// offered, so each row gets the neighbours ``search(_:k:excluding:)``
    /// gives it with its group excluded, up to the dot product's rounding in
    /// the GEMM. `k[g]` is group g's count; `done(end)` is told once every
    /// row below `end` has its neighbours.
    public func searchWithin(groups: [Range<Int>], k: [Int], done: (Int) throws -> Void = { _ in }) rethrows -> (distances: [[Float]], indices: [[Int]]) {
        precondition(groups.count == k.count && groups.first?.lowerBound == 0 && groups.last?.upperBound == count
                     && zip(groups, groups.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound },
                     "groups must cover the \(count) memory rows in order")
        precondition(zip(groups, k).allSatisfy { $1 >= 1 && $1 <= count - $0.count }, "each group's k must be 1 to the rows outside it")
        var group = [Int32](repeating: 0, count: count)
        for (g, range) in groups.enumerated() { for r in range { group[r] = Int32(g) } }
        var heaps = (0..<count).map { TopK(k: k[Int(group[$0])]) }
        let chunk = queryChunk
        let block = UnsafeMutablePointer<Float>.allocate(capacity: chunk * memoryChunk)
        defer { block.deallocate() }
        try memory.withUnsafeBufferPointer { mp in
            try memoryNorms.withUnsafeBufferPointer { norms in
                try group.withUnsafeBufferPointer { groupOf in
                    try heaps.withUnsafeMutableBufferPointer { hs in
                        let hp = SharedPointer(hs.baseAddress!), bp = SendableMutablePointer(block)
                        let np = SendablePointer(norms.baseAddress!), gp = SharedPointer(UnsafeMutablePointer(mutating: groupOf.baseAddress!))
                        for a0 in stride(from: 0, to: count, by: chunk) {
                            let an = min(chunk, count - a0)
                            for m0 in stride(from: a0, to: count, by: memoryChunk) {
                                let mn = min(memoryChunk, count - m0)
                                BLAS.sgemm(transB: true, m: an, n: mn, k: dimension, a: mp.baseAddress! + a0 * dimension, lda: dimension,
                                           b: mp.baseAddress! + m0 * dimension, ldb: dimension, c: block, ldc: mn)
                                // The block's rows: every column is a candidate (those of the row's own group skipped).
                                Compute.parallelFor(an, grain: 8) { rows in
                                    for r in rows {
                                        let row = a0 &+ r, mine = gp.p[row]
                                        Self.scan(row: bp.p + r * mn, norms: np.p + m0, count: mn, queryNorm: np.p[row], into: &hp.p[row]) { j in
                                            gp.p[m0 &+ j] == mine ? nil : m0 &+ j
                                        }
                                    }
                                }
                                // The later rows (columns past the block's own rows): each block row is their candidate.
                                let first = max(0, a0 &+ an &- m0)
                                guard first < mn else { continue }
                                Compute.parallelFor(mn - first, grain: 64) { columns in
                                    Self.scanColumns(block: bp.p, stride: mn, rows: an, rowStart: a0, columns: (first + columns.lowerBound)..<(first + columns.upperBound),
                                                     columnStart: m0, norms: np.p, group: UnsafePointer(gp.p), into: hp.p)
                                }
                            }
                            try done(a0 + an)
                        }
                    }
                }
            }
        }
        let sorted = heaps.map { $0.sorted() }
        return (sorted.map { $0.map { $0.0.squareRoot() } }, sorted.map { $0.map(\.1) })
    }

    /// Offers block row r (memory row `rowStart + r`) to the top-k of each
    /// of `columns` (memory rows `columnStart + j`), sixteen columns at a
    /// time compared with their own current k-th distances first.
    static func scanColumns(block: UnsafeMutablePointer<Float>, stride: Int, rows: Int, rowStart: Int, columns: Range<Int>, columnStart: Int,
                            norms: UnsafePointer<Float>, group: UnsafePointer<Int32>, into heaps: UnsafeMutablePointer<TopK>) {
        typealias Lanes = SIMD16<Float>
        let n = columns.count
        guard n > 0 else { return }
        let columnNorms = UnsafeMutablePointer<Float>.allocate(capacity: n), worst = UnsafeMutablePointer<Float>.allocate(capacity: n)
        defer { columnNorms.deallocate(); worst.deallocate() }
        for c in 0..<n {
            columnNorms[c] = norms[columnStart &+ columns.lowerBound &+ c]
            worst[c] = heaps[columnStart &+ columns.lowerBound &+ c].worst
        }
        for r in 0..<rows {
            let candidate = rowStart &+ r, rowNorm = norms[candidate], rowGroup = group[candidate]
            let dots = block + (r &* stride &+ columns.lowerBound)
            func offer(_ c: Int) {
                let d2 = max(columnNorms[c] + rowNorm - 2 * dots[c], 0)
                let column = columnStart &+ columns.lowerBound &+ c
                guard d2 < worst[c], group[column] != rowGroup else { return }
                heaps[column].offer(d2, candidate)
                worst[c] = heaps[column].worst
            }
            let q = Lanes(repeating: rowNorm)
            var c = 0
            while c + 16 <= n {
                let x = UnsafeRawPointer(dots + c).loadUnaligned(as: Lanes.self)
                let theirs = UnsafeRawPointer(columnNorms + c).loadUnaligned(as: Lanes.self)
                let below = (theirs + q) - 2 * x .< UnsafeRawPointer(worst + c).loadUnaligned(as: Lanes.self)
                if any(below) {
                    for lane in 0..<16 where below[lane] { offer(c + lane) }
                }
                c += 16
            }
            while c < n { offer(c); c += 1 }
        }
    }

    /// Offers each of `count` candidates to `top`: squared distance
    /// max(|q|^2 + |m_j|^2 - 2 q.m_j, 0) from `dots` (q.m_j) and `norms`
    /// (|m_j|^2). Sixteen candidates at a time are compared with the current
    /// k-th distance first (the same float expression as the exact test, so
    /// the result does not depend on it); most blocks hold none that can
    /// enter. `index` maps a candidate to its memory row, or nil to skip it.
    @inline(__always)
    static func scan(row dots: UnsafePointer<Float>, norms: UnsafePointer<Float>, count: Int, queryNorm: Float,
                     into top: inout TopK, index: (Int) -> Int?) {
        typealias Lanes = SIMD16<Float>
        let q = Lanes(repeating: queryNorm)
        var worst = top.worst
        func offer(_ j: Int) {
            let d2 = max(queryNorm + norms[j] - 2 * dots[j], 0)
            guard d2 < worst, let i = index(j) else { return }
            top.offer(d2, i)
            worst = top.worst
        }
        var j = 0
        while j + 16 <= count {
            let n = UnsafeRawPointer(norms + j).loadUnaligned(as: Lanes.self)
            let x = UnsafeRawPointer(dots + j).loadUnaligned(as: Lanes.self)
            let below = (q + n) - 2 * x .< Lanes(repeating: worst)
            if any(below) {
                for lane in 0..<16 where below[lane] { offer(j + lane) }
            }
            j += 16
        }
        while j < count { offer(j); j += 1 }
    }
}

/// The k smallest (distance, index) pairs seen so far, as a max-heap on
/// (distance, index): ties keep the lower index.
struct TopK {
    let k: Int
    /// Heap order: items[0] is the largest kept pair.
    private(set) var items: [(Float, Int)] = []

    init(k: Int) { self.k = k; items.reserveCapacity(k) }

    /// The largest kept distance (infinity until k are kept): a candidate
    /// above it cannot enter.
    var worst: Float { items.count < k ? .infinity : items[0].0 }

    mutating func offer(_ d: Float, _ i: Int) {
        if items.count < k {
            items.append((d, i))
            var child = items.count - 1
            while child > 0 {
                let parent = (child - 1) / 2
                guard items[parent] < items[child] else { break }
                items.swapAt(parent, child)
                child = parent
            }
            return
        }
        guard (d, i) < items[0] else { return }
        items[0] = (d, i)
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var largest = parent
            if left < k && items[largest] < items[left] { largest = left }
            if right < k && items[largest] < items[right] { largest = right }
            if largest == parent { break }
            items.swapAt(parent, largest)
            parent = largest
        }
    }

    func sorted() -> [(Float, Int)] { items.sorted { ($0.0, $0.1) < ($1.0, $1.1) } }
}

/// A buffer that parallel ranges write at disjoint places.
struct SharedPointer<T>: @unchecked Sendable {
    let p: UnsafeMutablePointer<T>
    init(_ p: UnsafeMutablePointer<T>) { self.p = p }
}
