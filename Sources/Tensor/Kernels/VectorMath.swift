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

    /// Squared Euclidean distance of two `count`-float rows, 16 lanes of
    /// partial sums at a time (a scalar loop cannot vectorise the sum: float
    /// addition does not reassociate), then the remainder.
    @inlinable @inline(__always)
    public static func squaredDistance(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var acc = Lanes(repeating: 0)
        var k = 0
        while k + 16 <= count {
            let t = UnsafeRawPointer(a + k).loadUnaligned(as: Lanes.self) - UnsafeRawPointer(b + k).loadUnaligned(as: Lanes.self)
            acc += t * t   // not addProduct: without -mfma that is a libm fmaf call per lane
            k += 16
        }
        var s = acc.sum()
        while k < count {
            let t = a[k] - b[k]
            s += t * t
            k += 1
        }
        return s
    }

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

    /// Natural logarithm (Cephes' `logf`: the exponent from the bits, the
    /// mantissa folded into [sqrt(1/2), sqrt(2)), a degree-8 polynomial);
    /// within 2 ulp of libm for positive normal inputs. Inputs at or below
    /// the smallest normal float are treated as that value.
    @inlinable @inline(__always)
    public static func log(_ value: Lanes) -> Lanes {
        let x0 = max(value, Lanes(repeating: .leastNormalMagnitude))
        let bits = unsafeBitCast(x0, to: SIMD16<Int32>.self)
        var e = Lanes(((bits &>> 23) & 0xff) &- 126)
        var m = unsafeBitCast((bits & Int32(bitPattern: 0x807f_ffff)) | 0x3f00_0000, to: Lanes.self)   // [0.5, 1)
        let small = m .< Lanes(repeating: 0.707_106_781_186_547_524)
        e = e.replacing(with: e - 1, where: small)
        m = m.replacing(with: m + m - 1, where: small).replacing(with: m - 1, where: .!small)
        let z = m * m
        var y = Lanes(repeating: 7.037_683_629_2e-2)
        y = y * m - 1.151_461_031_0e-1
        y = y * m + 1.167_699_874_0e-1
        y = y * m - 1.242_014_084_6e-1
        y = y * m + 1.424_932_278_7e-1
        y = y * m - 1.666_805_766_5e-1
        y = y * m + 2.000_071_476_5e-1
        y = y * m - 2.499_999_399_3e-1
        y = y * m + 3.333_333_117_4e-1
        y = y * m * z
        y = y - 2.121_944_40e-4 * e
        y = y - 0.5 * z
        return m + y + 0.693_359_375 * e
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
