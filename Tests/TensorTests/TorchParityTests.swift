import Foundation
import Testing
import TestSupport
@testable import Tensor

/// Forward ops, losses and AdamW against outputs PyTorch produced
/// (ops/fixtures/torch_ops.py wrote the fixture).
@Suite struct TorchParityTests {
    let torch: SafetensorsFile

    init() throws {
        let url = try #require(Bundle.module.url(forResource: "Fixtures/torch_ops", withExtension: "safetensors"))
        torch = try SafetensorsFile(contentsOf: url)
    }

    func t(_ name: String) throws -> Tensor { try torch.tensor(name) }

    static let convCases: [(String, Conv2dGeometry)] = [
        ("conv3x3", Conv2dGeometry(stride: 1, padding: 1)),
        ("conv_stride2", Conv2dGeometry(stride: 2, padding: 1)),
        ("conv_dilation2", Conv2dGeometry(stride: 1, padding: 2, dilation: 2)),
        ("conv_groups2", Conv2dGeometry(stride: 1, padding: 1, groups: 2)),
        ("conv_depthwise", Conv2dGeometry(stride: 2, padding: 1, groups: 4)),
        ("conv_depthwise5", Conv2dGeometry(stride: 1, padding: 2, groups: 3)),
        ("conv_depthwise3_s1", Conv2dGeometry(stride: 1, padding: 1, groups: 3)),
        ("conv1x1", Conv2dGeometry()),
        ("conv_stride2_1x1", Conv2dGeometry(stride: 2, padding: 0)),
    ]

    @Test(arguments: convCases.map(\.0))
    func conv2dForwardAndBackwardMatchTorch(name: String) throws {
        let geometry = Self.convCases.first { $0.0 == name }!.1
        let x = try t("\(name).x"), w = try t("\(name).w"), b = try t("\(name).b")
        let y = Tensor.conv2d(x, weight: w, bias: b, geometry: geometry)
        #expect(Check.close(y, try t("\(name).y")) == nil)
        let grads = Tensor.conv2dBackward(x, weight: w, outputGradient: try t("\(name).g"), geometry: geometry)
        #expect(Check.close(grads.input, try t("\(name).dx")) == nil)
        #expect(Check.close(grads.weight, try t("\(name).dw"), rtol: 1e-4, atol: 1e-4) == nil)
        #expect(Check.close(grads.bias, try t("\(name).db"), rtol: 1e-4, atol: 1e-4) == nil)
    }

    @Test(arguments: [("conv_even2", (0, 0, 1, 1)), ("conv_even4", (1, 1, 2, 2))])
    func evenKernelsWithAsymmetricPadding(name: String, padding: (Int, Int, Int, Int)) throws {
        let geometry = Conv2dGeometry(stride: (1, 1), padding: padding)
        let y = Tensor.conv2d(try t("\(name).x"), weight: try t("\(name).w"), geometry: geometry)
        #expect(Check.close(y, try t("\(name).y")) == nil)
    }

    @Test func pooling() throws {
        let x = try t("pool.x")
        let cases: [(String, Tensor)] = [
            ("avg3_s1_p1_incl", .avgPool2d(x, Pool2dGeometry(kernel: 3, stride: 1, padding: 1), countIncludePad: true)),
            ("avg3_s1_p1_excl", .avgPool2d(x, Pool2dGeometry(kernel: 3, stride: 1, padding: 1), countIncludePad: false)),
            ("avg5_s1_p2_incl", .avgPool2d(x, Pool2dGeometry(kernel: 5, stride: 1, padding: 2), countIncludePad: true)),
            ("avg3_s2_p1_incl", .avgPool2d(x, Pool2dGeometry(kernel: 3, stride: 2, padding: 1), countIncludePad: true)),
            ("avg3_s2_p1_excl", .avgPool2d(x, Pool2dGeometry(kernel: 3, stride: 2, padding: 1), countIncludePad: false)),
            ("max3_s2_p1", .maxPool2d(x, Pool2dGeometry(kernel: 3, stride: 2, padding: 1))),
            ("max2_s2_p0", .maxPool2d(x, Pool2dGeometry(kernel: 2))),
            ("adaptive_3x4", .adaptiveAvgPool2d(x, height: 3, width: 4)),
            ("adaptive_5x2", .adaptiveAvgPool2d(x, height: 5, width: 2)),
        ]
        for (name, mine) in cases {
            #expect(Check.close(mine, try t("pool.\(name)")) == nil, "\(name)")
        }
    }

    @Test func resizing() throws {
        let x = try t("resize.x")
        for (ac, tag) in [(true, "ac"), (false, "noac")] {
            #expect(Check.close(.resizeBilinear(x, height: 12, width: 9, alignCorners: ac),
                                try t("resize.bilinear_up_\(tag)")) == nil, "up \(tag)")
            #expect(Check.close(.resizeBilinear(x, height: 3, width: 4, alignCorners: ac),
                                try t("resize.bilinear_down_\(tag)")) == nil, "down \(tag)")
        }
        #expect(Tensor.resizeNearest(x, height: 12, width: 9) == (try t("resize.nearest_up")))
        #expect(Tensor.resizeNearest(x, height: 3, width: 4) == (try t("resize.nearest_down")))
        #expect(Tensor.resizeNearest(x, height: 10, width: 14) == (try t("resize.nearest_x2")))
    }

    @Test func batchNormTrainingAndInference() throws {
        var p = BatchNormParameters(channels: 3)
        p.gamma = try t("bn.gamma")
        p.beta = try t("bn.beta")
        let (y, _) = Tensor.batchNormTraining(try t("bn.x"), &p)
        #expect(Check.close(y, try t("bn.train_y")) == nil)
        #expect(Check.close(p.runningMean, try t("bn.running_mean")) == nil)
        #expect(Check.close(p.runningVar, try t("bn.running_var")) == nil)
        #expect(Check.close(.batchNormInference(try t("bn.x"), p), try t("bn.eval_y")) == nil)
    }

    @Test func softmaxAndLogSoftmax() throws {
        let z = try t("softmax.z")
        #expect(Check.close(z.softmaxChannels(), try t("softmax.p")) == nil)
        #expect(Check.close(z.logSoftmaxChannels(), try t("softmax.logp"), rtol: 1e-5, atol: 1e-5) == nil)
    }

    /// Each loss through the tape: value, and gradient with respect to the logits.
    @Test func psadLossesMatchTorch() throws {
        let z = try t("loss.z")
        let (n, c, h, w) = z.nchw
        let labels = try t("loss.labels").storage.map { Int32($0) }
        let target = Tensor.oneHot(labels, batch: n, height: h, width: w, classes: c)
        let fractions = try t("loss.fractions")
        let losses: [(String, (Tape, Variable) -> Variable)] = [
            ("ce", { tape, logits in tape.crossEntropy(logits: logits, labels: labels) }),
            ("dice", { tape, logits in tape.dice(probabilities: tape.softmaxChannels(logits), target: target) }),
            ("entropy", { tape, logits in tape.entropy(probabilities: tape.softmaxChannels(logits)) }),
            ("hist", { tape, logits in
                tape.histogramMatching(probabilities: tape.softmaxChannels(logits), targetFractions: fractions,
                                       classes: [1, 3]) }),
        ]
        for (name, loss) in losses {
            let tape = Tape()
            let logits = tape.variable(z)
            let value = loss(tape, logits)
            tape.backward(from: value)
            #expect(Check.close(value.value, try t("loss.\(name)"), rtol: 1e-5) == nil, "\(name) value")
            #expect(Check.close(try #require(logits.gradient), try t("loss.\(name)_grad"), rtol: 1e-3, atol: 1e-7) == nil,
                    "\(name) gradient")
        }
    }

    @Test func adamWMatchesTorch() throws {
        let p = Parameter(try t("adamw.w0"))
        let opt = AdamW(parameters: [p], learningRate: 1e-2, weightDecay: 0.01)
        for step in 0..<3 {
            p.gradient = try t("adamw.g\(step)")
            opt.update()
        }
        #expect(Check.close(p.value, try t("adamw.w3"), rtol: 1e-5, atol: 1e-6) == nil)
    }

    @Test func fixtureWasWrittenByThePythonSafetensorsPackage() {
        #expect(torch.metadata["generator"] == "ops/fixtures/torch_ops.py")
        #expect(torch.entries.count > 100)
    }
}
