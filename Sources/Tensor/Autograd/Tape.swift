/// A trainable tensor with its accumulated gradient.
public final class Parameter {
    public var value: Tensor
    public var gradient: Tensor
    public let name: String

    public init(_ value: Tensor, name: String = "") {
        self.value = value
        self.gradient = Tensor(zeros: value.shape)
        self.name = name
    }

    public func zeroGradient() { gradient = Tensor(zeros: value.shape) }
}

/// A value recorded on a ``Tape``.
public final class Variable {
    public let value: Tensor
    /// dL/d(value), filled in by ``Tape/backward(from:)``.
    public internal(set) var gradient: Tensor?
    let pullback: ((Tensor) -> Void)?

    init(_ value: Tensor, pullback: ((Tensor) -> Void)?) {
        self.value = value
        self.pullback = pullback
    }

    public var shape: [Int] { value.shape }

    func accumulate(_ g: Tensor) {
        if gradient == nil { gradient = g } else { gradient!.add(g) }
    }
}

/// Reverse-mode automatic differentiation over the operations the
/// segmentation head and the UNet train through.
///
/// Operations are recorded in execution order; ``backward(from:)`` walks them
/// in reverse, each node pulling its gradient back to its inputs, and
/// parameters receive theirs in ``Parameter/gradient``. A tape is used for
/// one step and then dropped.
public final class Tape {
    private var nodes: [Variable] = []

    public init() {}

    /// A constant input: no gradient flows into it.
    public func constant(_ value: Tensor) -> Variable { record(value, nil) }

    /// A parameter: its gradient is added to `parameter.gradient`.
    public func watch(_ parameter: Parameter) -> Variable {
        record(parameter.value) { g in parameter.gradient.add(g) }
    }

    /// A value with a custom pullback (`dL/d(value)` -> contributions to inputs).
    public func record(_ value: Tensor, _ pullback: ((Tensor) -> Void)?) -> Variable {
        let v = Variable(value, pullback: pullback)
        nodes.append(v)
        return v
    }

    /// Back-propagates from a scalar (or seeds `seed` as its gradient).
    public func backward(from output: Variable, seed: Tensor? = nil) {
        output.accumulate(seed ?? Tensor(zeros: output.shape, value: 1))
        for node in nodes.reversed() {
            guard let g = node.gradient, let pullback = node.pullback else { continue }
            pullback(g)
        }
    }
}
