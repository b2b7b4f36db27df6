import Foundation
@testable import Report
import Shared
import Testing

@Suite struct ResultsTableTests {
    static func setting(nShot: Int, memory: String, scale: ScaleName, combine: BankCombine? = nil) -> String {
        EvaluationSetting(imageSize: 256, backbone: .efficientNetLite0, lessNormalFraction: 1, nShot: nShot, epochs: 100,
                          lossSet: .supEntropyHistogram, seed: 0, unetEpochs: 0, epsilon: 1e-6, trainStatistic: .leaveOneOut,
                          memoryType: MemoryCombination(memory)!, scaleType: scale, coresetFraction: 1,
                          patchBackbone: .efficientNetLite0, bankBackbone: .efficientNetLite0, patchImageSize: 256,
                          patchResize: .square, combine: combine).canonicalJSON
    }

    @Test func theStoredSettingKeepsItsFormat() {
        // Results already in state databases were written in this form (those
        // recorded before patch_image_size and patch_resize existed lack them,
        // and the report matches them on the fields they have): a change to an
        // existing field's name or type would orphan them.
        #expect(Self.setting(nShot: 5, memory: "hcp", scale: .max) == #"{"backbone":"efficientnet-lite0","bank_backbone":"efficientnet-lite0","coreset_fraction":1.0,"epochs":100,"epsilon":1e-06,"image_size":256,"less_normal_fraction":1.0,"loss_set":"sup+H+hist","memory_type":"hcp","n_shot":5,"patch_backbone":"efficientnet-lite0","patch_image_size":256,"patch_resize":"square","scale_type":"max","seed":0,"train_statistic":"leave-one-out","unet_epochs":0}"#)
    }

    @Test func aWideGridGetsARowPerCategoryAndSettingNotAnAverage() {
        var rows: [(category: String, setting: String, metric: String, value: Double)] = []
        for category in ["a", "b"] { for n in [1, 5] { for memory in ["h", "hcp"] {
            let setting = Self.setting(nShot: n, memory: memory, scale: .max)
            let base = (category == "a" ? 0.5 : 0.7) + (n == 5 ? 0.1 : 0) + (memory == "hcp" ? 0.05 : 0)
            rows.append((category, setting, "logical_auroc", base))
            rows.append((category, setting, "structural_auroc", base + 0.01))
            rows.append((category, setting, "pixel_auroc", 0.99))
        } } }
        let lines = ResultsTable.markdown(rows).split(separator: "\n").map(String.init)
        #expect(lines[0] == "| category | setting | h/max LA | h/max SA | hcp/max LA | hcp/max SA |", "\(lines[0])")
        // Two settings x (two categories + a mean row), after the header and the rule.
        #expect(lines.count == 2 + 2 * 3, "\(lines)")
        #expect(lines.contains("| a | n_shot=1 | 50.0 | 51.0 | 55.0 | 56.0 |"))
        #expect(lines.contains("| b | n_shot=5 | 80.0 | 81.0 | 85.0 | 86.0 |"))
        #expect(lines.contains("| **mean** | n_shot=5 | 70.0 | 71.0 | 75.0 | 76.0 |"))
        // One setting: no setting column.
        let narrow = ResultsTable.markdown(rows.filter { $0.setting.contains(#""n_shot":1,"#) })
        #expect(narrow.hasPrefix("| category | h/max LA |") && narrow.contains("| **mean** | 60.0 | 61.0 | 65.0 | 66.0 |"), "\(narrow)")
    }

    @Test func theMaximumOfTheBanksIsItsOwnColumn() throws {
        func with(_ combine: BankCombine?) throws -> String { Self.setting(nShot: 5, memory: "hcp", scale: .max, combine: combine) }
        let rows: [(category: String, setting: String, metric: String, value: Double)] = [
            ("a", try with(nil), "logical_auroc", 0.9), ("a", try with(nil), "structural_auroc", 0.8),
            ("a", try with(.max), "logical_auroc", 0.85), ("a", try with(.max), "structural_auroc", 0.95)]
        let lines = ResultsTable.markdown(rows).split(separator: "\n").map(String.init)
        #expect(lines[0] == "| category | hcp/max LA | hcp/max SA | hcp/max/max LA | hcp/max/max SA |", "\(lines[0])")
        #expect(lines.contains("| a | 90.0 | 80.0 | 85.0 | 95.0 |"), "\(lines)")
    }
}
