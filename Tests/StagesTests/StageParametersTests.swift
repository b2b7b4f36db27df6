import Anomaly
import Foundation
import Models
import Shared
import Stages
import Testing

/// The job model's names for the method's choices map onto the algorithms'
/// types, and a stage's parameters decode from the job as the expander made them.
@Suite struct StageParametersTests {
    @Test func everyJobModelNameHasItsAlgorithm() throws {
        #expect(Set(ScaleName.allCases.map { ScaleType($0) }) == Set(ScaleType.allCases))
        for letters in ["h", "c", "p", "hc", "hp", "cp", "hcp"] {
            let combination = try #require(MemoryCombination(letters))
            #expect(MemoryType(combination).description == letters)
        }
        #expect(MemoryCombination("pch")?.letters == "hcp" && MemoryCombination("hh") == nil && MemoryCombination("x") == nil)
        for name in BackboneName.allCases where !name.rawValue.hasPrefix("efficientnet-lite") {
            #expect(ResNet.Config.all.contains { $0.name == name.rawValue }, "\(name.rawValue) has no ResNet configuration")
        }
    }

    /// The key's map and the wire's JSON hold the same values under the same
    /// names; the stage decodes exactly what the expander built.
    @Test func parametersRoundTripFromKeyMapToStageType() throws {
        let value = OnData(DataFields(dataset: "/data", category: "bottle_label", imageSize: 256, dataDigest: "ab12"),
                           StageSettings.BankFit(backbone: .wideResnet50, epsilon: 1e-6, trainStatistic: .reference, lessNormalFraction: 1))
        let map = ParameterEncoder.parameters(value)
        #expect(map == ["dataset": .string("/data"), "category": .string("bottle_label"), "image_size": .int(256), "data_digest": .string("ab12"),
                        "backbone": .string("wide_resnet50_2"), "epsilon": .double(1e-6), "train_statistic": .string("reference"),
                        "less_normal_fraction": .double(1)])
        let json = try JSONEncoder().encode(map)
        #expect(try JobParameters.decode(BankFitStage.Parameters.self, from: json, stage: "bank-fit") == value)
    }

    /// The banks' scaled distances summed or their maximum, worked by hand:
    /// max scaling divides h by 2, c by 4 and p by 1.
    @Test func banksCombineBySumOrMaximum() {
        let test = Evaluate.BankDistances(histogram: [1, 6], composition: [2, 2], patch: [0.9, 0.3])
        let train = Evaluate.BankDistances(histogram: [1, 2], composition: [4, 3], patch: [0.5, 1])
        let sum = Evaluate.scores(test, train: train, memory: .init("hcp")!, scale: .max)
        let max = Evaluate.scores(test, train: train, memory: .init("hcp")!, scale: .max, combine: .max)
        #expect(sum == [0.5 + 0.5 + 0.9, 3 + 0.5 + 0.3])
        #expect(max == [0.9, 3])
        // One bank: both are that bank's scaled distance.
        #expect(Evaluate.scores(test, train: train, memory: .init("c")!, scale: .max, combine: .max) == [0.5, 0.5])
        // The job model: the sum is the parameter's absence (the keys of summed evaluations stay as they were).
        #expect(StageSettings.Evaluate(memoryType: .hcp, scaleType: .max, combine: .sum).combine == nil)
        #expect(ParameterEncoder.parameters(StageSettings.Evaluate(memoryType: .hcp, scaleType: .max, combine: .max))["combine"] == .string("max"))
        #expect(ParameterEncoder.parameters(StageSettings.Evaluate(memoryType: .hcp, scaleType: .max))["combine"] == nil)
    }

    /// The part-instance bank adds its distance divided by the max of its
    /// statistics, but never by less than one piece.
    @Test func theInstanceBankIsScaledInWholePieces() {
        let test = Evaluate.BankDistances(histogram: [1, 6], composition: [2, 2], patch: [0.9, 0.3], instances: [0, 2])
        let zeros = Evaluate.BankDistances(histogram: [1, 2], composition: [4, 3], patch: [0.5, 1], instances: [0, 0])
        #expect(Evaluate.scores(test, train: zeros, memory: .init("n")!, scale: .max) == [0, 2])
        #expect(Evaluate.scores(test, train: zeros, memory: .init("hcpn")!, scale: .max) == [0.5 + 0.5 + 0.9 + 0, 3 + 0.5 + 0.3 + 2])
        #expect(Evaluate.scores(test, train: zeros, memory: .init("pn")!, scale: .max, combine: .max) == [0.9, 2])
        let wide = Evaluate.BankDistances(histogram: [1, 2], composition: [4, 3], patch: [0.5, 1], instances: [0, 4])
        #expect(Evaluate.scores(test, train: wide, memory: .init("n")!, scale: .max) == [0, 0.5])
        // The letters: n after h, c and p, whatever order a sweep writes them in.
        #expect(MemoryCombination("nhcp")?.letters == "hcpn" && MemoryCombination("hn")?.letters == "hn" && MemoryCombination("x") == nil)
        #expect(MemoryCombination("gnhcp")?.letters == "hcpng" && MemoryCombination("gp")?.letters == "pg" && MemoryCombination("hh") == nil)
    }

    /// The geometry bank is scaled as the paper's banks are (no floor of a
    /// whole unit), summed or maximised with the rest.
    @Test func theGeometryBankIsScaledByItsTrainStatistics() {
        let test = Evaluate.BankDistances(histogram: [1, 6], composition: [2, 2], patch: [0.9, 0.3], instances: [0, 2], geometry: [0.1, 3])
        let train = Evaluate.BankDistances(histogram: [1, 2], composition: [4, 3], patch: [0.5, 1], instances: [0, 0], geometry: [0.2, 0.5])
        #expect(Evaluate.scores(test, train: train, memory: .init("g")!, scale: .max) == [0.2, 6])
        #expect(Evaluate.scores(test, train: train, memory: .init("hcpg")!, scale: .max) == [0.5 + 0.5 + 0.9 + 0.2, 3 + 0.5 + 0.3 + 6])
        #expect(Evaluate.scores(test, train: train, memory: .init("hcpng")!, scale: .max, combine: .max) == [0.9, 6])
    }

    /// distances.json from bank-fit before code version 6 has no instance
    /// distances: it still decodes, and an evaluation that needs them says so.
    @Test func anOldBankFitHasNoInstanceDistances() throws {
        let old = Data(#"{"histogram": [1], "composition": [2], "histogram_train_statistics": [1, 1], "composition_train_statistics": [1, 1], "good": 1, "logical": 0}"#.utf8)
        let d = try ArtifactFormat.decode(ArtifactFormat.BankDistances.self, old, name: "distances.json")
        #expect(d.instances == nil && d.instancesTrainStatistics == nil && d.histogram == [1])
        let inputs = StageInputs(["banks": [ArtifactFormat.bankDistances: old],
                                  "patch": [ArtifactFormat.patchScores: try ArtifactFormat.encode(ArtifactFormat.PatchScores(
                                      train: [1, 1], test: [1], pixelAUROC: nil, spro: nil, fprLimit: nil, testDefectTypes: nil, mapScale: nil))]])
        #expect(throws: StageError.self) {
            try EvaluateStage.run(.init(memoryType: .init("hcpn")!, scaleType: .max), inputs: inputs, context: StageContext())
        }
        #expect(d.geometry == nil && d.geometryTrainStatistics == nil)
        // The reason evaluate and export give, bank by bank.
        #expect(EvaluateStage.missingBank(d, memory: .init("hcp")!) == nil)
        #expect(EvaluateStage.missingBank(d, memory: .init("hcpng")!) == "part-instance distances (written by bank-fit before code version 6)")
        #expect(EvaluateStage.missingBank(d, memory: .init("g")!) == "part-geometry distances (written by bank-fit before code version 7)")
        do { _ = try EvaluateStage.run(.init(memoryType: .init("pg")!, scaleType: .max), inputs: inputs, context: StageContext()); Issue.record("ran") } catch {
            #expect("\(error)".contains("no part-geometry distances") && "\(error)".contains("code version 7"), "\(error)")
        }
        _ = try EvaluateStage.run(.init(memoryType: .hcp, scaleType: .max), inputs: inputs, context: StageContext())
    }

    @Test func aMissingOrMistypedParameterIsNamed() throws {
        let missing = Data(#"{"dataset": "/d", "category": "c", "image_size": 64, "backbone": "resnet18", "epochs": 2, "loss_set": "sup", "seed": 0}"#.utf8)
        #expect(throws: ParameterError.self) { try JobParameters.decode(SegmentTrainStage.Parameters.self, from: missing, stage: "segment-train") }
        do { _ = try JobParameters.decode(SegmentTrainStage.Parameters.self, from: missing, stage: "segment-train") } catch {
            #expect("\(error)" == "segment-train: the job has no parameter 'n_shot'")
        }
        let unknown = Data(#"{"memory_type": "hcp", "scale_type": "median"}"#.utf8)
        do { _ = try JobParameters.decode(EvaluateStage.Parameters.self, from: unknown, stage: "evaluate"); Issue.record("decoded") } catch {
            #expect("\(error)".hasPrefix("evaluate: parameter 'scale_type'"), "\(error)")
        }
    }
}
