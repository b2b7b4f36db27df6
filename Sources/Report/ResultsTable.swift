import Foundation
import Shared

/// `results --table`: a sweep's image AUROCs as a Markdown table.
public enum ResultsTable {
    /// Markdown: a column pair (LA, SA) per memory/scale type (and
    /// combination, where it is not the sum: `hcp/max/max`), and a row per
    /// category and setting of everything else the sweep varies (named in a
    /// second column, `n_shot=1 loss_set=sup`), so a wide grid reads as a
    /// long table instead of being averaged over; a mean row per setting.
    public static func markdown(_ rows: [(category: String, setting: String, metric: String, value: Double)]) -> String {
        typealias Field = EvaluationSetting.CodingKeys
        let banks = [Field.memoryType.name, Field.scaleType.name], metrics = ["logical_auroc", "structural_auroc"]
        let combine = Field.combine.name
        let scored = rows.filter { metrics.contains($0.metric) }
        let settings = scored.map { row -> [String: String] in
            let object = (try? JSONSerialization.jsonObject(with: Data(row.setting.utf8))) as? [String: Any] ?? [:]
            return object.mapValues { "\($0)" }
        }
        // The fields (besides the banks) that take more than one value in these results.
        let names = Set(settings.flatMap(\.keys)).subtracting(banks + [combine]).sorted()
        let varied = names.filter { name in Set(settings.map { $0[name] ?? "" }).count > 1 }
        var cells: [String: [String: [String: [Double]]]] = [:]   // row -> column -> metric -> values
        var columns: [String] = [], rowKeys: [[String]] = []      // row key: category, setting label
        for (row, setting) in zip(scored, settings) {
            let column = (banks.map { setting[$0] ?? "?" } + [setting[combine]].compactMap { $0 }).joined(separator: "/")
            let label = varied.map { "\($0)=\(setting[$0] ?? "-")" }.joined(separator: " ")
            if !columns.contains(column) { columns.append(column) }
            if !rowKeys.contains([row.category, label]) { rowKeys.append([row.category, label]) }
            cells[row.category + "\u{0}" + label, default: [:]][column, default: [:]][row.metric, default: []].append(row.value)
        }
        columns.sort()
        rowKeys.sort { ($0[1], $0[0]) < ($1[1], $1[0]) }
        func mean(_ v: [Double]?) -> Double? { v.flatMap { $0.isEmpty ? nil : $0.reduce(0, +) / Double($0.count) } }
        func pct(_ v: Double?) -> String { v.map { String(format: "%.1f", 100 * $0) } ?? "-" }
        let settingColumn = !varied.isEmpty
        var lines = ["| category |" + (settingColumn ? " setting |" : "") + columns.map { " \($0) LA | \($0) SA |" }.joined(),
                     "|---|" + (settingColumn ? "---|" : "") + String(repeating: "---:|", count: 2 * columns.count)]
        var sums = [String: [String: [String: [Double]]]]()       // setting label -> column -> metric -> category means
        func line(_ first: String, _ label: String, _ values: (String, String) -> Double?) -> String {
            "| \(first) |" + (settingColumn ? " \(label) |" : "") + columns.map { c in metrics.map { " \(pct(values(c, $0))) |" }.joined() }.joined()
        }
        for (i, key) in rowKeys.enumerated() {
            let (category, label) = (key[0], key[1])
            lines.append(line(category, label) { column, metric in
                let v = mean(cells[category + "\u{0}" + label]?[column]?[metric])
                if let v { sums[label, default: [:]][column, default: [:]][metric, default: []].append(v) }
                return v
            })
            if i + 1 == rowKeys.count || rowKeys[i + 1][1] != label {
                lines.append(line("**mean**", label) { column, metric in mean(sums[label]?[column]?[metric]) })
            }
        }
        return lines.joined(separator: "\n")
    }
}
