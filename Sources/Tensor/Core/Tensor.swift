/// A dense, contiguous, row-major `Float` tensor.
///
/// Images and feature maps are NCHW: `shape == [batch, channels, height, width]`.
/// Storage is a Swift array, so a tensor has value semantics (copy on write).
public struct Tensor: Equatable, Sendable {
    public private(set) var shape: [Int]
    public var storage: [Float]

    /// A tensor of the given shape filled with `value`.
    public init(zeros shape: [Int], value: Float = 0) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.storage = [Float](repeating: value, count: shape.reduce(1, *))
    }

    /// Wraps existing values; `storage.count` must equal the product of `shape`.
    public init(shape: [Int], storage: [Float]) {
        precondition(shape.reduce(1, *) == storage.count,
                     "shape \(shape) needs \(shape.reduce(1, *)) values, got \(storage.count)")
        self.shape = shape
        self.storage = storage
    }

    /// A tensor whose every element `initialize` writes (the storage is not
    /// zeroed first; kernels that overwrite their whole output use this).
    public init(shape: [Int], initializingWith initialize: (UnsafeMutableBufferPointer<Float>) -> Void) {
        let count = shape.reduce(1, *)
        self.shape = shape
        self.storage = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            initialize(buffer)
            initialized = count
        }
    }

    public var count: Int { storage.count }
    public var rank: Int { shape.count }

    /// The same values under another shape with the same element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, storage: storage)
    }

    /// NCHW dimensions; traps if the tensor is not rank 4.
    public var nchw: (n: Int, c: Int, h: Int, w: Int) {
        precondition(shape.count == 4, "expected an NCHW tensor, got shape \(shape)")
        return (shape[0], shape[1], shape[2], shape[3])
    }

    public subscript(flat index: Int) -> Float {
        get { storage[index] }
        set { storage[index] = newValue }
    }

    /// Element at NCHW coordinates.
    public subscript(n: Int, c: Int, y: Int, x: Int) -> Float {
        get { storage[((n * shape[1] + c) * shape[2] + y) * shape[3] + x] }
        set { storage[((n * shape[1] + c) * shape[2] + y) * shape[3] + x] = newValue }
    }

    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try storage.withUnsafeBufferPointer(body)
    }

    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (inout UnsafeMutableBufferPointer<Float>) throws -> R
    ) rethrows -> R {
        try storage.withUnsafeMutableBufferPointer(body)
    }

    /// Sum of all elements, accumulated in Double in index order (deterministic).
    public func sum() -> Float {
        var total = 0.0
        for v in storage { total += Double(v) }
        return Float(total)
    }

    /// Largest absolute elementwise difference; shapes must match.
    public func maxAbsDifference(_ other: Tensor) -> Float {
        precondition(shape == other.shape, "shape \(shape) vs \(other.shape)")
        var worst: Float = 0
        for i in 0..<storage.count { worst = max(worst, abs(storage[i] - other.storage[i])) }
        return worst
    }
}

extension Tensor {
    /// Elementwise `self + other`; shapes must match.
    public static func + (lhs: Tensor, rhs: Tensor) -> Tensor {
        precondition(lhs.shape == rhs.shape, "add: shape \(lhs.shape) vs \(rhs.shape)")
        var out = lhs
        out.add(rhs)
        return out
    }

    /// In-place `self += scale * other` (BLAS saxpy).
    public mutating func add(_ other: Tensor, scaledBy scale: Float = 1) {
        precondition(shape == other.shape, "add: shape \(shape) vs \(other.shape)")
        let n = Int32(count)
        other.withUnsafeBufferPointer { src in
            storage.withUnsafeMutableBufferPointer { dst in
                BLAS.axpy(n, scale, src.baseAddress!, dst.baseAddress!)
            }
        }
    }

    /// Elementwise product `self * scalar` (BLAS sscal on a copy).
    public static func * (lhs: Tensor, rhs: Float) -> Tensor {
        var out = lhs
        guard out.count > 0 else { return out }
        out.withUnsafeMutableBufferPointer { BLAS.scal(Int32($0.count), rhs, $0.baseAddress!) }
        return out
    }
}
