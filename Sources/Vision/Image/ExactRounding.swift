/// libm's `floor` and `round` (half away from zero) as integers, without a
/// call into libm and without a branch on the direction. Baseline x86-64
/// has no rounding instruction, so `x.rounded()` is a call per value, and
/// which way an interpolated value rounds is a coin toss, so a branch on it
/// mispredicts half the time: both cost more than the arithmetic around
/// them in the per-pixel loops (rotation, colour operations, resizing).
/// The results are libm's exactly: a value minus its truncation is exact
/// while the value's magnitude is below 2^52 (2^23 for `Float`), as every
/// pixel coordinate and level here is.
enum ExactRounding {
    @inline(__always)
    static func floor(_ x: Double) -> Int {
        let t = Int(x)
        return t &- bit(Double(t) > x)
    }

    @inline(__always)
    static func halfAway(_ x: Double) -> Int {
        let t = Int(x), d = x - Double(t)
        return t &+ bit(d >= 0.5) &- bit(d <= -0.5)
    }

    @inline(__always)
    static func halfAway(_ x: Float) -> Int {
        let t = Int(x), d = x - Float(t)
        return t &+ bit(d >= 0.5) &- bit(d <= -0.5)
    }

    /// `UInt8(min(max(x.rounded(), 0), 255))`.
    @inline(__always)
    static func byte(_ x: Double) -> UInt8 { UInt8(truncatingIfNeeded: min(max(halfAway(x), 0), 255)) }

    /// `UInt8(min(max(x.rounded(), 0), 255))` for a `Float`.
    @inline(__always)
    static func byte(_ x: Float) -> UInt8 { UInt8(truncatingIfNeeded: min(max(halfAway(x), 0), 255)) }

    /// 1 or 0 as the flag is set: the comparison's own result (setcc or a
    /// carry), which LLVM otherwise turns back into a branch.
    @inline(__always)
    static func bit(_ flag: Bool) -> Int { Int(unsafeBitCast(flag, to: UInt8.self)) }
}
