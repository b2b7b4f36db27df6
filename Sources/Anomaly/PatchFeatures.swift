import Tensor

/// PatchCore's patch embedding (SPEC-PSAD, stage 4): the stride-8 and
/// stride-16 feature maps, each 3x3 average pooled (stride 1, padding 1,
/// zero padding counted), the stride-16 map upsampled to the stride-8 grid
/// (nearest), concatenated: one vector per stride-8 patch.
public enum PatchFeatures {
    /// Patch vectors of each image in the batch: [images][patches * D] as a
    /// [patches, D] tensor per image, patches in row-major order.
    public static func embed(stride8 a: Tensor, stride16 b: Tensor) -> [Tensor] {
        let (n, ca, h, w) = a.nchw
        precondition(b.shape[0] == n, "batch sizes differ: \(a.shape) vs \(b.shape)")
        let pool = Pool2dGeometry(kernel: 3, stride: 1, padding: 1)
        let pa = Tensor.avgPool2d(a, pool, countIncludePad: true)
        let pb = Tensor.resizeNearest(Tensor.avgPool2d(b, pool, countIncludePad: true), height: h, width: w)
        let joined = Tensor.concatChannels([pa, pb])
        let d = ca + b.shape[1], patches = h * w
        return (0..<n).map { image in
            // [D, patches] -> [patches, D]
            var out = Tensor(zeros: [patches, d])
            for k in 0..<d {
                let base = (image * d + k) * patches
                for p in 0..<patches { out.storage[p * d + k] = joined.storage[base + p] }
            }
            return out
        }
    }
}

/// Every patch of every train image, with the rows of each image known so
/// that a train image can be scored against the others (leave-one-out).
public struct PatchMemory: Sendable {
    public let index: NearestNeighbors
    /// The approximate search (inverted lists) and how many lists a query searches; nil: exact search.
    public let lists: InvertedLists?
    public let probes: Int
    /// Memory rows of each train image.
    public let imageRows: [Range<Int>]
    /// Every train patch is in memory (no coreset), in image order.
    public let keepsEveryPatch: Bool
    public static let neighbours = 9

    /// - Parameter coreset: keep only this many patches, chosen by the greedy
    ///   k-center coreset (``Coreset``); nil keeps every patch (the reference).
    /// - Parameter probes: search approximately, each query among the rows of
    ///   its `probes` nearest of `lists` inverted lists (``InvertedLists``;
    ///   default 4 sqrt(rows) lists); nil searches exactly (the reference).
    public init(trainPatches: [Tensor], coreset: Int? = nil, probes: Int? = nil, lists: Int? = nil, seed: UInt64 = 0,
                queryChunk: Int = 512, memoryChunk: Int = 4096) {
        precondition(!trainPatches.isEmpty)
        let d = trainPatches[0].shape[1]
        var rows: [Range<Int>] = [], storage: [Float] = [], start = 0
        for t in trainPatches {
            precondition(t.shape[1] == d)
            rows.append(start..<(start + t.shape[0]))
            start += t.shape[0]
            storage += t.storage
        }
        var memory = Tensor(shape: [start, d], storage: storage)
        if let coreset, coreset < start {
            let kept = Coreset.greedyKCenter(memory, count: coreset, seed: seed)
            // Kept rows stay in order, so each image's rows stay contiguous.
            var subset = [Float](), ranges: [Range<Int>] = [], position = 0
            subset.reserveCapacity(kept.count * d)
            for range in rows {
                let first = position
                while position < kept.count && kept[position] < range.upperBound {
                    subset += storage[(kept[position] * d)..<((kept[position] + 1) * d)]
                    position += 1
                }
                ranges.append(first..<position)
            }
            memory = Tensor(shape: [kept.count, d], storage: subset)
            rows = ranges
        }
        imageRows = rows
        keepsEveryPatch = rows.last?.upperBound == start
        index = NearestNeighbors(memory: memory, queryChunk: queryChunk, memoryChunk: memoryChunk)
        self.lists = probes.map { _ in
            InvertedLists(memory: memory, lists: lists ?? InvertedLists.defaultLists(rows: memory.shape[0]), seed: seed)
        }
        self.probes = probes ?? 0
    }

    /// The image score and each patch's nearest distance (for the anomaly
    /// map). `trainImage` scores a train image without its own patches.
    public func score(_ patches: Tensor, trainImage: Int? = nil) -> (score: Float, nearest: [Float]) {
        let k = min(Self.neighbours, index.count - (trainImage.map { imageRows[$0].count } ?? 0))
        let (distances, _) = index.search(patches, k: k, excluding: trainImage.map { imageRows[$0] })
        return (PatchScore.imageScore(neighbourDistances: distances), distances.map { $0[0] })
    }

    /// Every train image scored leave-one-out, as ``score(_:trainImage:)``
    /// of each, with each pair of patches' distance computed once
    /// (``NearestNeighbors/searchWithin(groups:k:done:)``: half the
    /// arithmetic). Exact search of a memory of every patch only; nil
    /// otherwise. `scored(n)` is told when the first n images are scored.
    public func scoreTrainImages(scored: (Int) throws -> Void = { _ in }) rethrows -> [(score: Float, nearest: [Float])]? {
        guard lists == nil, keepsEveryPatch, imageRows.count >= 2 else { return nil }
        let k = imageRows.map { min(Self.neighbours, index.count - $0.count) }
        var reported = 0
        let (distances, _) = try index.searchWithin(groups: imageRows, k: k) { end in
            while reported < imageRows.count, imageRows[reported].upperBound <= end { reported += 1 }
            try scored(reported)
        }
        return imageRows.map { rows in
            let mine = Array(distances[rows])
            return (PatchScore.imageScore(neighbourDistances: mine), mine.map { $0[0] })
        }
    }

    /// ``score(_:trainImage:)`` of several images. With inverted lists they
    /// are searched together (each list then meets many queries at once);
    /// `trainImages` are the train images they are, scored leave-one-out.
    public func score(_ images: [Tensor], trainImages: Range<Int>? = nil) -> [(score: Float, nearest: [Float])] {
        precondition(trainImages.map { $0.count == images.count } ?? true, "\(images.count) images but train images \(trainImages!)")
        guard let lists, !images.isEmpty else {
            return images.indices.map { i in score(images[i], trainImage: trainImages.map { $0.lowerBound + i }) }
        }
        var starts = [0]
        for image in images { starts.append(starts.last! + image.shape[0]) }
        let joined = Tensor(shape: [starts.last!, images[0].shape[1]], storage: images.flatMap(\.storage))
        let k = trainImages.map { train in
            train.map { index.count - imageRows[$0].count }.min()!
        }.map { min(Self.neighbours, $0) } ?? min(Self.neighbours, index.count)
        // Query row -> its image, for the leave-one-out exclusion.
        let (distances, _) = lists.search(joined, k: k, probes: probes) { row in
            guard let trainImages else { return nil }
            var image = 0
            while starts[image + 1] <= row { image += 1 }
            return imageRows[trainImages.lowerBound + image]
        }
        return images.indices.map { i in
            let mine = Array(distances[starts[i]..<starts[i + 1]])
            return (PatchScore.imageScore(neighbourDistances: mine), mine.map { $0[0] })
        }
    }
}
