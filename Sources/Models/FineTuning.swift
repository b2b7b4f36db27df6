import Tensor

/// A convolution and its batch norm, unfolded and trainable as PyTorch
/// trains them (`model.train()`): the batch norm normalises with each
/// batch's statistics and moves its running ones (with the network's own
/// momentum). The frozen ``ConvBN`` it is read for gives the geometry and
/// the parameter names.
public final class TrainableConvBN {
    let frozen: ConvBN
    let weight: Parameter, gamma: Parameter, beta: Parameter
    var norm: BatchNormParameters

    init(_ frozen: ConvBN, weights: WeightSet) throws {
        self.frozen = frozen
        weight = Parameter(try weights.take("\(frozen.convName).weight", shape: frozen.weight.shape), name: "\(frozen.convName).weight")
        norm = try ConvBN.norm(weights, bn: frozen.bnName, channels: frozen.weight.shape[0], eps: frozen.eps, momentum: frozen.momentum)
        gamma = Parameter(norm.gamma, name: "\(frozen.bnName).weight")
        beta = Parameter(norm.beta, name: "\(frozen.bnName).bias")
    }

    func callAsFunction(_ x: Variable, on tape: Tape, activation: ConvActivation = .identity) -> Variable {
        let y = tape.conv2d(x, weight: tape.watch(weight), geometry: frozen.geometry(for: x.value))
        return tape.activation(tape.batchNorm(y, gamma: tape.watch(gamma), beta: tape.watch(beta), parameters: &norm), activation)
    }

    var parameters: [Parameter] { [weight, gamma, beta] }

    /// The weights and running statistics by their PyTorch names.
    var tensors: [String: Tensor] {
        [weight.name: weight.value, gamma.name: gamma.value, beta.name: beta.value,
         "\(frozen.bnName).running_mean": norm.runningMean, "\(frozen.bnName).running_var": norm.runningVar]
    }
}

/// One unit of an encoder (its stem, a residual or MBConv block) with
/// trainable weights, run on a ``Tape``.
public protocol TrainableUnit: AnyObject {
    /// Every convolution of the unit, whose weights train.
    var convs: [TrainableConvBN] { get }
    func callAsFunction(_ x: Variable, on tape: Tape) -> Variable
}

/// A stem: one convolution, its activation, and ResNet's max pool.
final class TrainableStem: TrainableUnit {
    let convs: [TrainableConvBN]
    let activation: ConvActivation, pool: Pool2dGeometry?
    init(_ conv: TrainableConvBN, activation: ConvActivation, pool: Pool2dGeometry?) {
        convs = [conv]; self.activation = activation; self.pool = pool
    }
    func callAsFunction(_ x: Variable, on tape: Tape) -> Variable {
        let y = convs[0](x, on: tape, activation: activation)
        return pool.map { tape.maxPool2d(y, $0) } ?? y
    }
}

/// A block whose convolutions run in a chain, each with its activation,
/// and whose input (or its downsampled copy) is added to the result; ResNet
/// applies a ReLU after the sum.
final class TrainableBlock: TrainableUnit {
    let chain: [TrainableConvBN], activations: [ConvActivation]
    let skip: Bool, shortcut: TrainableConvBN?, after: ConvActivation
    init(_ chain: [TrainableConvBN], activations: [ConvActivation], skip: Bool, shortcut: TrainableConvBN? = nil, after: ConvActivation = .identity) {
        self.chain = chain; self.activations = activations; self.skip = skip; self.shortcut = shortcut; self.after = after
    }
    var convs: [TrainableConvBN] { chain + (shortcut.map { [$0] } ?? []) }
    func callAsFunction(_ x: Variable, on tape: Tape) -> Variable {
        var y = x
        for (conv, activation) in zip(chain, activations) { y = conv(y, on: tape, activation: activation) }
        guard skip else { return y }
        return tape.activation(tape.add(y, shortcut.map { $0(x, on: tape) } ?? x), after)
    }
}

/// A backbone whose weights can train: its units in order, each with the
/// stride of its output (a tap at stride s is the last unit at s, as in
/// ``Backbone/features(_:strides:)``).
public protocol FineTunable: Backbone {
    /// The units with trainable copies of their weights, read from
    /// `weights` (the set this network was loaded from).
    func trainableUnits(_ weights: WeightSet) throws -> [(unit: TrainableUnit, stride: Int)]
}

extension EfficientNetLite: FineTunable {
    public func trainableUnits(_ weights: WeightSet) throws -> [(unit: TrainableUnit, stride: Int)] {
        var units: [(unit: TrainableUnit, stride: Int)] = [(TrainableStem(try TrainableConvBN(stem, weights: weights), activation: .relu6, pool: nil), 2)]
        var stride = 2
        for block in blocks {
            stride *= block.depthwise.geometry.strideY
            let convs = try ([block.expand].compactMap { $0 } + [block.depthwise, block.project]).map { try TrainableConvBN($0, weights: weights) }
            let activations: [ConvActivation] = (block.expand == nil ? [] : [.relu6]) + [.relu6, .identity]
            units.append((TrainableBlock(convs, activations: activations, skip: block.skip), stride))
        }
        return units
    }
}

extension ResNet: FineTunable {
    public func trainableUnits(_ weights: WeightSet) throws -> [(unit: TrainableUnit, stride: Int)] {
        var units: [(unit: TrainableUnit, stride: Int)] = [(TrainableStem(try TrainableConvBN(stem, weights: weights), activation: .relu,
                                                                          pool: Pool2dGeometry(kernel: 3, stride: 2, padding: 1)), 4)]
        for (s, stage) in stages.enumerated() {
            for unit in stage {
                let convs = try unit.convs.map { try TrainableConvBN($0, weights: weights) }
                let activations = convs.indices.map { $0 < convs.count - 1 ? ConvActivation.relu : .identity }
                units.append((TrainableBlock(convs, activations: activations, skip: true,
                                             shortcut: try unit.downsample.map { try TrainableConvBN($0, weights: weights) }, after: .relu),
                              4 << s))
            }
        }
        return units
    }
}

/// An encoder whose deeper units train with the segmentation head
/// (SPEC-PSAD stage 2: the reference fine-tunes all of it). The units up to
/// the tap at stride `trainedAfter` stay frozen (inference batch norm) and
/// their output can be computed once per image (``prefix(_:)``); the units
/// after it train in PyTorch's train mode. Nothing is cached of the trained
/// part: every step runs it anew.
public final class FineTunedEncoder {
    let frozen: any Backbone
    let units: [(unit: TrainableUnit, stride: Int)]
    /// The taps the encoder gives (strides).
    public let taps: Set<Int>
    /// The stride of the trained part's input: the frozen tap it starts
    /// from, or 1 (the normalised image) when every unit trains.
    public let inputStride: Int

    /// - Parameter trainedAfter: the stride of the last frozen tap; nil trains every unit.
    public init(_ backbone: any FineTunable, weights: WeightSet, trainedAfter: Int?, taps: Set<Int>) throws {
        let all = try backbone.trainableUnits(weights)
        guard let deepest = taps.max(), let end = all.lastIndex(where: { $0.stride == deepest }) else {
            throw WeightError.unreadable("\(backbone.name) has no tap at stride \(taps.max() ?? 0) to fine-tune")
        }
        var start = 0
        if let trainedAfter {
            guard let last = all.lastIndex(where: { $0.stride == trainedAfter }), trainedAfter < deepest else {
                throw WeightError.unreadable("\(backbone.name): cannot train the units after stride \(trainedAfter) for taps \(taps.sorted())")
            }
            start = last + 1
        }
        frozen = backbone
        units = Array(all[start...end])
        self.taps = taps
        inputStride = trainedAfter ?? 1
    }

    public var parameters: [Parameter] { units.flatMap { $0.unit.convs.flatMap(\.parameters) } }

    /// What the trained part starts from, for a batch of normalised images:
    /// the frozen taps, and the trained part's input (stride 1: the images).
    public func prefix(_ images: Tensor) -> [Int: Tensor] {
        guard inputStride > 1 else { return [1: images] }
        return frozen.features(images, strides: Set(taps.filter { $0 <= inputStride }).union([inputStride]))
    }

    /// The taps of a batch from its ``prefix(_:)``, the trained ones recorded on `tape`.
    public func callAsFunction(_ prefix: [Int: Tensor], on tape: Tape) -> [Int: Variable] {
        var out: [Int: Variable] = [:]
        for s in taps where s <= inputStride { out[s] = tape.constant(prefix[s]!) }
        var x = tape.constant(prefix[inputStride]!)
        for (i, (unit, stride)) in units.enumerated() {
            x = unit(x, on: tape)
            if taps.contains(stride) && (i == units.count - 1 || units[i + 1].stride != stride) { out[stride] = x }
        }
        return out
    }

    /// Sets every trained batch norm's running statistics to the mean of its
    /// batch statistics over `batches` (prefixes of batches of images, in
    /// train mode, nothing trained): PyTorch's cumulative average
    /// (`momentum=None`), as "precise batch norm" recomputes them once
    /// training is done. Inference then normalises as training did with the
    /// final weights; a running average from training lags the weights (by
    /// about 1/momentum steps: 100 at EfficientNet's 0.01).
    public func recalibrate(_ batches: [[Int: Tensor]]) {
        let convs = units.flatMap { $0.unit.convs }
        let saved = convs.map(\.norm.momentum)
        for (k, batch) in batches.enumerated() {
            for conv in convs { conv.norm.momentum = 1 / Float(k + 1) }
            _ = self(batch, on: Tape())
        }
        for (conv, momentum) in zip(convs, saved) { conv.norm.momentum = momentum }
    }

    /// The trained units' weights and running statistics by their PyTorch
    /// names: laid over the original weights (``WeightSet/init(overlay:over:)``)
    /// they make the fine-tuned network for inference.
    public var tensors: [String: Tensor] {
        units.reduce(into: [:]) { all, entry in for conv in entry.unit.convs { all.merge(conv.tensors) { $1 } } }
    }
}
