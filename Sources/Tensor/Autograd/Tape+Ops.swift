extension Tape {
    public func conv2d(_ x: Variable, weight: Variable, bias: Variable? = nil,
                       geometry: Conv2dGeometry = Conv2dGeometry()) -> Variable {
        let y = Tensor.conv2d(x.value, weight: weight.value, bias: bias?.value, geometry: geometry)
        return record(y, inputs: [x, weight] + (bias.map { [$0] } ?? [])) { g in
            let (dx, dw, db) = Tensor.conv2dBackward(x.value, weight: weight.value, outputGradient: g,
                                                     geometry: geometry, inputGradient: x.requiresGradient,
                                                     biasGradient: bias != nil)
            x.accumulate(dx)
            weight.accumulate(dw)
            bias?.accumulate(db)
        }
    }

    /// Training-mode batch norm: batch statistics, running statistics updated in `parameters`.
    public func batchNorm(_ x: Variable, gamma: Variable, beta: Variable,
                          parameters: inout BatchNormParameters) -> Variable {
        parameters.gamma = gamma.value
        parameters.beta = beta.value
        let (y, cache) = Tensor.batchNormTraining(x.value, &parameters)
        return record(y, inputs: [x, gamma, beta]) { g in
            let (dx, dgamma, dbeta) = Tensor.batchNormTrainingBackward(g, gamma: gamma.value, cache: cache)
            x.accumulate(dx)
            gamma.accumulate(dgamma)
            beta.accumulate(dbeta)
        }
    }

    public func relu(_ x: Variable) -> Variable { activation(x, .relu) }

    /// A convolution's activation as an op of its own (after a batch norm).
    public func activation(_ x: Variable, _ activation: ConvActivation) -> Variable {
        if activation == .identity { return x }
        let (low, high) = activation.bounds
        return record(x.value.clamped(low: low, high: high), inputs: [x]) { g in
            x.accumulate(Tensor.clampBackward(g, input: x.value, low: low, high: high))
        }
    }

    public func maxPool2d(_ x: Variable, _ geometry: Pool2dGeometry) -> Variable {
        record(Tensor.maxPool2d(x.value, geometry), inputs: [x]) { g in
            x.accumulate(Tensor.maxPool2dBackward(g, input: x.value, geometry))
        }
    }

    public func resizeBilinear(_ x: Variable, height: Int, width: Int, alignCorners: Bool) -> Variable {
        let (_, _, h, w) = x.value.nchw
        return record(Tensor.resizeBilinear(x.value, height: height, width: width, alignCorners: alignCorners), inputs: [x]) { g in
            x.accumulate(Tensor.resizeBilinearBackward(g, inputHeight: h, inputWidth: w, alignCorners: alignCorners))
        }
    }

    /// a + resizeBilinear(x) for each x, to a's size (the resized tensors never formed).
    public func addResized(_ a: Variable, _ xs: [Variable], alignCorners: Bool) -> Variable {
        var y = a.value
        for x in xs { Tensor.resizeBilinear(x.value, addingInto: &y, alignCorners: alignCorners) }
        return record(y, inputs: [a] + xs) { g in
            a.accumulate(g)
            for x in xs {
                let (_, _, h, w) = x.value.nchw
                x.accumulate(Tensor.resizeBilinearBackward(g, inputHeight: h, inputWidth: w, alignCorners: alignCorners))
            }
        }
    }

    public func concatChannels(_ parts: [Variable]) -> Variable {
        let sizes = parts.map { $0.value.shape[1] }
        return record(Tensor.concatChannels(parts.map(\.value)), inputs: parts) { g in
            var offset = 0
            for (p, c) in zip(parts, sizes) {
                p.accumulate(g.channels(offset..<(offset + c)))
                offset += c
            }
        }
    }

    /// The channels `range` of an NCHW variable (a weight's input-channel
    /// slice); the gradient goes back into those channels.
    public func channels(_ x: Variable, _ range: Range<Int>) -> Variable {
        let (n, c, h, w) = x.value.nchw
        return record(x.value.channels(range), inputs: [x]) { g in
            x.accumulate(Tensor.concatChannels([Tensor(zeros: [n, range.lowerBound, h, w]), g,
                                                Tensor(zeros: [n, c - range.upperBound, h, w])]))
        }
    }

    public func add(_ a: Variable, _ b: Variable) -> Variable {
        record(a.value + b.value, inputs: [a, b]) { g in
            a.accumulate(g)
            b.accumulate(g)
        }
    }

    /// Multiplies by a constant.
    public func scale(_ x: Variable, by factor: Float) -> Variable {
        record(x.value * factor, inputs: [x]) { g in x.accumulate(g * factor) }
    }

    public func softmaxChannels(_ z: Variable) -> Variable {
        let p = z.value.softmaxChannels()
        return record(p, inputs: [z]) { g in z.accumulate(Tensor.softmaxChannelsBackward(g, output: p)) }
    }

    /// Sum of scalar terms, each with a weight: sum_i w_i * L_i.
    public func weightedSum(_ terms: [(Variable, Float)]) -> Variable {
        let total = terms.reduce(Float(0)) { $0 + $1.0.value.storage[0] * $1.1 }
        return record(Tensor(shape: [1], storage: [total]), inputs: terms.map(\.0)) { g in
            for (v, w) in terms { v.accumulate(Tensor(shape: v.shape, storage: [g.storage[0] * w])) }
        }
    }

    // MARK: Losses (scalars of shape [1])

    public func crossEntropy(logits: Variable, labels: [Int32]) -> Variable {
        lossNode(SegmentationLoss.crossEntropy(logits: logits.value, labels: labels), input: logits)
    }

    public func dice(probabilities: Variable, target: Tensor, eps: Float = 1e-4) -> Variable {
        lossNode(SegmentationLoss.dice(probabilities: probabilities.value, target: target, eps: eps), input: probabilities)
    }

    public func entropy(probabilities: Variable, eps: Float = 1e-5) -> Variable {
        lossNode(SegmentationLoss.entropy(probabilities: probabilities.value, eps: eps), input: probabilities)
    }

    public func histogramMatching(probabilities: Variable, targetFractions: Tensor, classes: [Int]) -> Variable {
        lossNode(SegmentationLoss.histogramMatching(probabilities: probabilities.value,
                                                    targetFractions: targetFractions, classes: classes),
                 input: probabilities)
    }

    /// ceWeight L_ce + diceWeight L_dice of coarse logits upsampled to
    /// `height x width` (fused; see ``SegmentationLoss/supervisedUpsampled``).
    public func supervisedUpsampledLoss(logits: Variable, labels: [Int32], height: Int, width: Int,
                                        ceWeight: Float, diceWeight: Float) -> Variable {
        lossNode(SegmentationLoss.supervisedUpsampled(logits: logits.value, labels: labels, height: height, width: width,
                                                      ceWeight: ceWeight, diceWeight: diceWeight), input: logits)
    }

    /// entropyWeight L_H (+ histogramWeight L_hist when `fractions` is given)
    /// of coarse logits upsampled to `height x width` (fused).
    public func unsupervisedUpsampledLoss(logits: Variable, height: Int, width: Int, entropyWeight: Float,
                                          fractions: Tensor?, histogramClasses: [Int], histogramWeight: Float) -> Variable {
        lossNode(SegmentationLoss.unsupervisedUpsampled(logits: logits.value, height: height, width: width, entropyWeight: entropyWeight,
                                                        fractions: fractions, histogramClasses: histogramClasses,
                                                        histogramWeight: histogramWeight), input: logits)
    }

    private func lossNode(_ result: (value: Float, gradient: Tensor), input: Variable) -> Variable {
        record(Tensor(shape: [1], storage: [result.value]), inputs: [input]) { g in
            input.accumulate(result.gradient * g.storage[0])
        }
    }
}
