import Foundation
import Tensor

/// Shared fixtures and numeric assertions for the test targets.
public enum Check {
    /// True when every |a - b| <= atol + rtol * |b|; otherwise the message says where.
    public static func close(_ a: Tensor, _ b: Tensor, rtol: Float = 1e-4, atol: Float = 1e-5) -> String? {
        guard a.shape == b.shape else { return "shape \(a.shape) vs \(b.shape)" }
        for i in 0..<a.count {
            let x = a.storage[i], y = b.storage[i]
            if !(abs(x - y) <= atol + rtol * abs(y)) {
                return "element \(i): \(x) vs expected \(y) (shape \(a.shape))"
            }
        }
        return nil
    }

    /// Central finite differences of a scalar function, evaluated in Float:
    /// df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / 2h.
    public static func numericalGradient(of f: (Tensor) -> Float, at x: Tensor, step h: Float = 1e-2) -> Tensor {
        var grad = Tensor(zeros: x.shape)
        var probe = x
        for i in 0..<x.count {
            let saved = probe.storage[i]
            probe.storage[i] = saved + h
            let up = Double(f(probe))
            probe.storage[i] = saved - h
            let down = Double(f(probe))
            probe.storage[i] = saved
            grad.storage[i] = Float((up - down) / Double(2 * h))
        }
        return grad
    }

    /// A deterministic random tensor.
    public static func random(_ shape: [Int], seed: UInt64, std: Float = 1) -> Tensor {
        var g = SeededGenerator(seed: seed)
        return Tensor.randomNormal(shape, std: std, generator: &g)
    }

    /// sum(t * weights) accumulated in Double: turns a tensor into a scalar
    /// whose gradient with respect to t is `weights`.
    public static func weightedSum(_ t: Tensor, _ weights: Tensor) -> Float {
        var total = 0.0
        for i in 0..<t.count { total += Double(t.storage[i]) * Double(weights.storage[i]) }
        return Float(total)
    }
}

/// A temporary directory removed when the value is released.
public final class TemporaryDirectory {
    public let url: URL

    public init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("psad-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }
}
