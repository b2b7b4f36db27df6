/// Elementwise transcendental functions on 16 lanes, in plain SIMD
/// arithmetic (no per-lane libm calls), for the kernels that apply them to
/// every pixel of every class: softmax, log-softmax and their losses.
///
/// `exp` is Cephes' `expf` (range reduction by ln 2 in two parts, a
/// degree-5 polynomial, the exponent built in the bits); within 2 ulp of
/// libm on [-87, 88]. Below -87.3 it returns 2^-126 times the polynomial
/// instead of a subnormal; the callers only add such values to 1 or more.
public enum VectorMath {
    public typealias Lanes = SIMD16<Float>

    @inlinable @inline(__always)
    public static func exp(_ value: Lanes) -> Lanes {
        var x = max(value, Lanes(repeating: -87.3))
        x = x.replacing(with: Lanes(repeating: 88.7), where: x .> Lanes(repeating: 88.7))
        // n = round(x / ln 2) by the 1.5 * 2^23 trick: the sum's low bits are n.
        let magic = Lanes(repeating: 12_582_912)
        let shifted = x * 1.442_695_04 + magic
        let n = shifted - magic
        x = x - n * 0.693_359_375
        x = x + n * 2.121_944_40e-4
        let z = x * x
        var y = Lanes(repeating: 1.987_569_15e-4)
        y = y * x + 1.398_199_95e-3
        y = y * x + 8.333_451_91e-3
        y = y * x + 4.166_579_59e-2
        y = y * x + 1.666_666_55e-1
        y = y * x + 5.000_000_12e-1
        y = y * z + x + 1
        let exponent = (unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
        return y * unsafeBitCast(exponent, to: Lanes.self)
    }

    /// Lane-wise maximum (NaN handling aside, as `Swift.max`). The standard
    /// library's `pointwiseMax` goes lane by lane through memory; a compare
    /// and select stays in registers.
    @inlinable @inline(__always)
    public static func max(_ a: Lanes, _ b: Lanes) -> Lanes {
        a.replacing(with: b, where: a .< b)
    }

    @inlinable @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> Lanes {
        UnsafeRawPointer(p).loadUnaligned(as: Lanes.self)
    }

    @inlinable @inline(__always)
    static func store(_ v: Lanes, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: Lanes.self)
    }
}
