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
    /// Whether anything trainable lies upstream; constants' gradients are
    /// never computed.
    public let requiresGradient: Bool

    init(_ value: Tensor, pullback: ((Tensor) -> Void)?, requiresGradient: Bool) {
        self.value = value
        self.pullback = pullback
        self.requiresGradient = requiresGradient
    }

    public var shape: [Int] { value.shape }

    func accumulate(_ g: @autoclosure () -> Tensor) {
        guard requiresGradient else { return }
        if gradient == nil { gradient = g() } else { gradient!.add(g()) }
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

    /// Floats held by the recorded values (what a step's memory grows with;
    /// the pullbacks' own caches and the gradients of the backward pass come on top).
    public var recordedFloats: Int { nodes.reduce(0) { $0 + $1.value.count } }

    /// A constant input: no gradient flows into it.
    public func constant(_ value: Tensor) -> Variable {
        let v = Variable(value, pullback: nil, requiresGradient: false)
        nodes.append(v)
        return v
    }

    /// An input whose gradient is wanted (gradient checks, saliency).
    public func variable(_ value: Tensor) -> Variable {
        let v = Variable(value, pullback: nil, requiresGradient: true)
        nodes.append(v)
        return v
    }

    /// A parameter: its gradient is added to `parameter.gradient`.
    public func watch(_ parameter: Parameter) -> Variable {
        let v = Variable(parameter.value, pullback: { g in parameter.gradient.add(g) }, requiresGradient: true)
        nodes.append(v)
        return v
    }

    /// The result of an operation on `inputs`, with its pullback
    /// (`dL/d(value)` -> contributions to the inputs). It needs a gradient
    /// only when one of its inputs does.
    public func record(_ value: Tensor, inputs: [Variable], _ pullback: @escaping (Tensor) -> Void) -> Variable {
        let v = Variable(value, pullback: pullback, requiresGradient: inputs.contains { $0.requiresGradient })
        nodes.append(v)
        return v
    }

    /// Back-propagates from a scalar (or seeds `seed` as its gradient).
    public func backward(from output: Variable, seed: Tensor? = nil) {
        precondition(output.requiresGradient, "backward from a value that depends on no parameter")
        output.accumulate(seed ?? Tensor(zeros: output.shape, value: 1))
        for node in nodes.reversed() {
            guard let g = node.gradient, let pullback = node.pullback else { continue }
            pullback(g)
            node.gradient = nil   // passed on; only inputs without a pullback keep theirs
        }
    }
}
