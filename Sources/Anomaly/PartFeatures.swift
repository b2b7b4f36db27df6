import Tensor

/// The histogram and composition vectors of one image (SPEC-PSAD, stage 5).
///
/// With F the frozen features — each tapped stage 5x5 average pooled
/// (stride 1, zero padding counted), upsampled bilinearly to the image size
/// and concatenated — and M_c the mask of class c:
///
///     h_c = sum_p M_c(p)                                  (all classes)
///     f_c = sum_p F(p) M_c(p) / (sum_p M_c(p) + 1)        (foreground classes)
///
/// Pooling and upsampling are linear, so sum_p Up(Pool(F))(p) M_c(p) =
/// sum_q F(q) Pool^T(Up^T(M_c))(q): the mask is carried down to each
/// stage's native resolution by the adjoint of the upsampling, pooled (the
/// 5x5 box with a constant divisor is its own adjoint), and multiplied with
/// the native features. No full-resolution feature map is formed.
public enum PartFeatures {
    static let pool = Pool2dGeometry(kernel: 5, stride: 1, padding: 2)

    /// - Parameters:
    ///   - features: one native-resolution map [1, C_s, h_s, w_s] per stage.
    ///   - labels: class ids laid out [H, W] (the image size).
    public static func vectors(features: [Tensor], labels: [Int32], height: Int, width: Int, classes: Int)
        -> (histogram: [Double], composition: [Double])
    {
        precondition(labels.count == height * width, "\(labels.count) labels for \(width)x\(height)")
        var histogram = [Double](repeating: 0, count: classes)
        for l in labels { histogram[Int(l)] += 1 }
        // One-hot masks of the foreground classes, [1, classes - 1, H, W].
        var masks = Tensor(zeros: [1, classes - 1, height, width])
        for (p, l) in labels.enumerated() where l > 0 { masks.storage[(Int(l) - 1) * height * width + p] = 1 }
        var composition: [Double] = []
        var perStage: [[[Double]]] = []  // [stage][class][channel]
        for f in features {
            let (_, channels, h, w) = f.nchw
            // Pool^T(Up^T(M)) at the stage's resolution.
            let down = Tensor.avgPool2d(Tensor.resizeBilinearBackward(masks, inputHeight: h, inputWidth: w, alignCorners: false),
                                        pool, countIncludePad: true)
            // sums[c][k] = sum_q down_c(q) F_k(q): a GEMM [C-1, hw] x [hw, K].
            let sums = Tensor.matmul(down.reshaped([classes - 1, h * w]), f.reshaped([channels, h * w]), transposeB: true)
            perStage.append((0..<(classes - 1)).map { c in (0..<channels).map { Double(sums.storage[c * channels + $0]) } })
        }
        for c in 0..<(classes - 1) {
            let denominator = histogram[c + 1] + 1
            for stage in perStage { composition += stage[c].map { $0 / denominator } }
        }
        return (histogram, composition)
    }
}
