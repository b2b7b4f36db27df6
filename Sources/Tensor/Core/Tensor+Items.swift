extension Tensor {
    /// Items `range` of the first dimension (a sub-batch), copied.
    public func items(_ range: Range<Int>) -> Tensor {
        precondition(rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0],
                     "items \(range) of a tensor of shape \(shape)")
        let per = shape.dropFirst().reduce(1, *)
        return Tensor(shape: [range.count] + shape.dropFirst(), storage: Array(storage[(range.lowerBound * per)..<(range.upperBound * per)]))
    }

    /// Tensors of equal trailing shape joined along the first dimension.
    public static func concatItems(_ parts: [Tensor]) -> Tensor {
        precondition(!parts.isEmpty, "concatItems of no tensors")
        let tail = Array(parts[0].shape.dropFirst())
        precondition(parts.allSatisfy { Array($0.shape.dropFirst()) == tail },
                     "concatItems of shapes \(parts.map(\.shape)): trailing dimensions differ")
        if parts.count == 1 { return parts[0] }
        var storage = [Float]()
        storage.reserveCapacity(parts.reduce(0) { $0 + $1.count })
        for part in parts { storage += part.storage }
        return Tensor(shape: [parts.reduce(0) { $0 + $1.shape[0] }] + tail, storage: storage)
    }
}
