import Tensor

/// Approximate k-nearest-neighbour search by inverted lists (IVF, as faiss's
/// `IndexIVFFlat`): k-means on a sample of the memory gives `lists`
/// centroids; every memory row belongs to the list of its nearest centroid;
/// a query is compared with the rows of its `probes` nearest lists only,
/// exactly (the same |a|^2 + |b|^2 - 2 a.b as ``NearestNeighbors``). With
/// `probes == lists` the search is exact. The memory itself is not copied:
/// the lists hold row numbers, and each list's rows are gathered next to
/// each other when it is searched.
///
/// Cost per query: `lists` centroid distances plus about `probes / lists`
/// of the memory, against all of it for exact search. PatchCore's patch
/// memories (hundreds of thousands of rows of a few hundred dimensions)
/// are what it is for.
public struct InvertedLists: Sendable {
    public let memory: Tensor
    let memoryNorms: [Float]
    /// The centroids, searched exactly.
    let centroids: NearestNeighbors
    /// Memory rows grouped by list: list c's rows are members[offsets[c]..<offsets[c + 1]], ascending.
    let members: [Int]
    let offsets: [Int]

    public var lists: Int { centroids.count }
    public var count: Int { memory.shape[0] }
    public var dimension: Int { memory.shape[1] }
    /// Rows in the largest list.
    public var largestList: Int { zip(offsets.dropFirst(), offsets).map { $0 - $1 }.max() ?? 0 }

    /// The usual number of lists for `rows` memory rows, 4 sqrt(rows) (faiss's guideline is 4 to 16 sqrt(rows)).
    public static func defaultLists(rows: Int) -> Int { max(1, Int((4 * Double(rows).squareRoot()).rounded())) }

    /// Lloyd's k-means on `samplePerList x lists` rows drawn without
    /// replacement (seeded), started from `lists` of them; a list left empty
    /// takes the sample row farthest from its centroid. Then every memory row
    /// is assigned to its nearest centroid.
    public init(memory: Tensor, lists requested: Int, iterations: Int = 10, samplePerList: Int = 64, seed: UInt64 = 0) {
        precondition(memory.rank == 2 && memory.shape[0] > 0, "memory must be a non-empty [M, D], got \(memory.shape)")
        let (n, d) = (memory.shape[0], memory.shape[1])
        let lists = max(1, min(requested, n))
        var rng = SeededGenerator(seed: seed)
        let sampleCount = min(n, lists * samplePerList)
        var order = Array(0..<n)
        for i in 0..<sampleCount { order.swapAt(i, rng.int(i...(n - 1))) }
        let sample = Self.rows(memory, order[0..<sampleCount])
        var centres = Self.rows(memory, order[0..<lists])
        for _ in 0..<iterations {
            let (distance, nearest) = NearestNeighbors(memory: centres).search(sample, k: 1)
            var sums = [Double](repeating: 0, count: lists * d), counts = [Int](repeating: 0, count: lists)
            for (r, c) in nearest.enumerated() {
                counts[c[0]] += 1
                for t in 0..<d { sums[c[0] * d + t] += Double(sample.storage[r * d + t]) }
            }
            // Empty lists take the sample rows worst served, farthest first.
            var farthest = (counts.contains(0) ? (0..<sampleCount).sorted { (distance[$0][0], $1) > (distance[$1][0], $0) } : []).makeIterator()
            for c in 0..<lists {
                if counts[c] > 0 {
                    for t in 0..<d { centres.storage[c * d + t] = Float(sums[c * d + t] / Double(counts[c])) }
                } else if let r = farthest.next() {
                    for t in 0..<d { centres.storage[c * d + t] = sample.storage[r * d + t] }
                }
            }
        }
        centroids = NearestNeighbors(memory: centres)
        let assigned = centroids.search(memory, k: 1).indices
        var offsets = [Int](repeating: 0, count: lists + 1)
        for a in assigned { offsets[a[0] + 1] += 1 }
        for c in 0..<lists { offsets[c + 1] += offsets[c] }
        var next = offsets, members = [Int](repeating: 0, count: n)
        for (row, a) in assigned.enumerated() {
            members[next[a[0]]] = row
            next[a[0]] += 1
        }
        self.memory = memory
        self.members = members
        self.offsets = offsets
        memoryNorms = NearestNeighbors.squaredNorms(memory)
    }

    static func rows(_ t: Tensor, _ picked: ArraySlice<Int>) -> Tensor {
        let d = t.shape[1]
        var out = [Float]()
        out.reserveCapacity(picked.count * d)
        for r in picked { out += t.storage[(r * d)..<((r + 1) * d)] }
        return Tensor(shape: [picked.count, d], storage: out)
    }

    /// The `k` nearest memory rows of each query row ([Q, D]) among the rows
    /// of its `probes` nearest lists, nearest first: distances (not squared)
    /// and indices, each [Q][k]. `excluded(q)` is a range of memory rows
    /// query q must not find (leave-one-out). A query whose probed lists hold
    /// fewer than `k` rows it may find is searched again over every list.
    public func search(_ queries: Tensor, k: Int, probes: Int, excluding excluded: (Int) -> Range<Int>? = { _ in nil })
        -> (distances: [[Float]], indices: [[Int]]) {
        precondition(queries.rank == 2 && queries.shape[1] == dimension,
                     "queries \(queries.shape) do not match memory dimension \(dimension)")
        precondition(k >= 1, "k = \(k)")
        let q = queries.shape[0]
        var found = searchLists(queries, queryRows: Array(0..<q), k: k, probes: min(max(1, probes), lists), excluded: excluded)
        let short = (0..<q).filter { found[$0].count < k }
        if !short.isEmpty && probes < lists {
            let again = searchLists(queries, queryRows: short, k: k, probes: lists, excluded: excluded)
            for (i, r) in short.enumerated() { found[r] = again[i] }
        }
        precondition(found.allSatisfy { $0.count == k }, "k = \(k) but a query has fewer memory rows it may find")
        return (found.map { $0.map { $0.0.squareRoot() } }, found.map { $0.map(\.1) })
    }

    /// Each of `queryRows`' k nearest (squared distance, row) among its probed lists, sorted.
    private func searchLists(_ queries: Tensor, queryRows: [Int], k: Int, probes: Int,
                             excluded: (Int) -> Range<Int>?) -> [[(Float, Int)]] {
        let d = dimension, nq = queryRows.count
        let picked = Self.rows(queries, queryRows[...])
        let queryNorms = NearestNeighbors.squaredNorms(picked)
        let probed = probes == lists ? (0..<nq).map { _ in Array(0..<lists) } : centroids.search(picked, k: probes).indices
        // Invert: for each list, the (query, probe slot) pairs that search it.
        var starts = [Int](repeating: 0, count: lists + 1)
        for p in probed { for c in p { starts[c + 1] += 1 } }
        for c in 0..<lists { starts[c + 1] += starts[c] }
        var next = starts, visits = [(query: Int, slot: Int)](repeating: (0, 0), count: nq * probes)
        for (r, p) in probed.enumerated() {
            for (slot, c) in p.enumerated() { visits[next[c]] = (r, slot); next[c] += 1 }
        }
        // Each (query, slot) keeps its list's k best; merged per query after.
        var partial = [[(Float, Int)]](repeating: [], count: nq * probes)
        let queryChunk = 512
        partial.withUnsafeMutableBufferPointer { out in
            let results = SharedPointer(out.baseAddress!)
            _ = Compute.splitAcrossThreads(lists) { listRange in
                var rowsBlock = [Float](), queryBlock = [Float](), dots = [Float](), norms = [Float]()
                picked.withUnsafeBufferPointer { qp in
                    memory.withUnsafeBufferPointer { mp in
                        for c in listRange {
                            let listRows = members[offsets[c]..<offsets[c + 1]]
                            let mine = visits[starts[c]..<starts[c + 1]]
                            guard !listRows.isEmpty, !mine.isEmpty else { continue }
                            let nl = listRows.count
                            rowsBlock.removeAll(keepingCapacity: true)
                            norms.removeAll(keepingCapacity: true)
                            for row in listRows {
                                rowsBlock.append(contentsOf: UnsafeBufferPointer(start: mp.baseAddress! + row * d, count: d))
                                norms.append(memoryNorms[row])
                            }
                            for v0 in stride(from: mine.startIndex, to: mine.endIndex, by: queryChunk) {
                                let chunk = mine[v0..<min(v0 + queryChunk, mine.endIndex)]
                                queryBlock.removeAll(keepingCapacity: true)
                                for v in chunk {
                                    queryBlock.append(contentsOf: UnsafeBufferPointer(start: qp.baseAddress! + v.query * d, count: d))
                                }
                                if dots.count < chunk.count * nl { dots = [Float](repeating: 0, count: chunk.count * nl) }
                                rowsBlock.withUnsafeBufferPointer { lb in
                                    queryBlock.withUnsafeBufferPointer { qb in
                                        dots.withUnsafeMutableBufferPointer { db in
                                            BLAS.sgemm(transB: true, m: chunk.count, n: nl, k: d, a: qb.baseAddress!, lda: d,
                                                       b: lb.baseAddress!, ldb: d, c: db.baseAddress!, ldc: nl)
                                            norms.withUnsafeBufferPointer { nb in
                                                for (i, v) in chunk.enumerated() {
                                                    var top = TopK(k: k)
                                                    let skip = excluded(queryRows[v.query])
                                                    NearestNeighbors.scan(row: db.baseAddress! + i * nl, norms: nb.baseAddress!, count: nl,
                                                                          queryNorm: queryNorms[v.query], into: &top) { j in
                                                        let row = listRows[listRows.startIndex + j]
                                                        return skip?.contains(row) == true ? nil : row
                                                    }
                                                    results.p[v.query * probes + v.slot] = top.items
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return Compute.parallelMap(nq) { r in
            var top = TopK(k: k)
            for slot in 0..<probes { for (d2, row) in partial[r * probes + slot] { top.offer(d2, row) } }
            return top.sorted()
        }
    }
}
