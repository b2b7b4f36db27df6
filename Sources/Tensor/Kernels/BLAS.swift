import COpenBLAS

/// Thin typed wrappers over the CBLAS calls the kernels use. Row-major only.
public enum BLAS {
    /// C = alpha * op(A) * op(B) + beta * C, with op(A) M x K and op(B) K x N.
    @inline(__always)
    public static func sgemm(
        transA: Bool = false, transB: Bool = false,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        FlopCounter.add(2 * m * n * k)
        BLASThreads.call {
            cblas_sgemm(
                CblasRowMajor,
                transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha,
                a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        }
    }

    @inline(__always)
    static func scal(_ n: Int32, _ alpha: Float, _ x: UnsafeMutablePointer<Float>) {
        cblas_sscal(n, alpha, x, 1)
    }

    @inline(__always)
    static func axpy(_ n: Int32, _ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
        cblas_saxpy(n, alpha, x, 1, y, 1)
    }
}

extension Tensor {
    /// Matrix product of rank-2 tensors: [m, k] x [k, n] -> [m, n]
    /// (either side optionally transposed).
    public static func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool = false,
                              transposeB: Bool = false) -> Tensor {
        precondition(a.rank == 2 && b.rank == 2, "matmul needs rank-2 tensors, got \(a.shape), \(b.shape)")
        let m = transposeA ? a.shape[1] : a.shape[0]
        let k = transposeA ? a.shape[0] : a.shape[1]
        let kb = transposeB ? b.shape[1] : b.shape[0]
        let n = transposeB ? b.shape[0] : b.shape[1]
        precondition(k == kb, "matmul inner dimensions differ: \(a.shape) x \(b.shape)")
        var out = Tensor(zeros: [m, n])
        guard m > 0, n > 0 else { return out }
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                out.withUnsafeMutableBufferPointer { pc in
                    BLAS.sgemm(transA: transposeA, transB: transposeB, m: m, n: n, k: k,
                               a: pa.baseAddress!, lda: a.shape[1],
                               b: pb.baseAddress!, ldb: b.shape[1],
                               c: pc.baseAddress!, ldc: n)
                }
            }
        }
        return out
    }
}
