import Testing
import TestSupport
@testable import Models
@testable import Shared
import Stages
import Tensor

/// segment-train's memory estimate with an encoder that trains, against
/// what a train-mode forward pass records on the tape.
@Suite struct FineTuningMemoryTests {
    @Test(arguments: [BackboneName.efficientNetLite0, .efficientNetLite1, .efficientNetLite2, .resnet18])
    func theTableHoldsWhatTheTapeRecords(backbone: BackboneName) throws {
        let net = try backbone.load(weights: WeightSet(randomSeed: 1))
        for finetune in [Finetune.last, .all] {
            let encoder = try FineTunedEncoder(net, weights: WeightSet(randomSeed: 1), trainedAfter: finetune == .last ? 8 : nil, taps: [4, 8, 16])
            let tape = Tape()
            _ = encoder(encoder.prefix(Check.random([1, 3, 64, 64], seed: 1)), on: tape)
            let weights = encoder.parameters.reduce(0) { $0 + $1.value.count }
            let measured = Double(tape.recordedFloats - weights) / Double(64 * 64)
            let table = Double(StageMemory.trainedFloatsPerPixel(backbone, finetune))
            #expect(table >= measured && table <= 1.1 * measured, "\(backbone) \(finetune): table \(table), measured \(measured)")
        }
    }

    @Test func trainingMoreOfTheEncoderNeedsMoreMemory() {
        func estimate(_ finetune: String?) -> Int {
            var p: [String: ParameterValue] = ["image_size": .int(256), "backbone": .string("efficientnet-lite0"), "n_shot": .int(5)]
            if let finetune { p["finetune"] = .string(finetune) }
            return StageMemory.estimateMiB(kind: .segmentTrain, parameters: p, size: .syntheticDefault)
        }
        #expect(estimate(nil) == estimate("head"))
        #expect(estimate("head") < estimate("last") && estimate("last") < estimate("all"))
        // all: 10 images x 360 floats a pixel x 256^2 x 4 bytes x 2 = 1.8 GiB more than the head alone, and less than 3.
        #expect(estimate("all") - estimate("head") > 1_800 && estimate("all") - estimate("head") < 3_000)
    }
}
