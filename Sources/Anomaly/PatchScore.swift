#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// PatchCore's image score as the PSAD reference computes it (SPEC-PSAD,
/// stage 4), from each patch's distances to its nearest memory patches
/// (sorted, nearest first):
///
///     s = D / 10
///     i* = argmax_i s[i, 0]                       (the most anomalous patch)
///     w = 1 - exp(s[i*, last]) / sum_j exp(s[i*, j])
///     score = w * s[i*, 0]
public enum PatchScore {
    public static let distanceScale: Float = 10

    public static func imageScore(neighbourDistances d: [[Float]]) -> Float {
        precondition(!d.isEmpty && d.allSatisfy { !$0.isEmpty }, "no patch distances")
        var star = 0
        for i in 1..<d.count where d[i][0] > d[star][0] { star = i }
        let s = d[star].map { $0 / distanceScale }
        let top = s.max()!
        let total = s.reduce(0) { $0 + expf($1 - top) }
        let w = 1 - expf(s.last! - top) / total
        return w * s[0]
    }
}
