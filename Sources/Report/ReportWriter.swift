import AtomicWrite
import Foundation
import Scheduler
import Shared

/// Renders a ``SweepReport``: one self-contained HTML file (pictures
/// embedded as data URIs, ROC curves as inline SVG), and the same numbers
/// as CSV (one row per evaluation) and JSON.
public enum ReportWriter {
    static let names = ["logical_auroc": "LA", "structural_auroc": "SA", "mean_auroc": "mean", "pixel_auroc": "pixel AUROC", "spro": "sPRO"]

    /// Writes `report.html`, `report.csv` and `report.json` into `folder`; returns their URLs.
    @discardableResult
    public static func write(_ report: SweepReport, to folder: URL) throws -> [URL] {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let files = [("report.html", Data(html(report).utf8)), ("report.csv", Data(csv(report).utf8)), ("report.json", try json(report))]
        return try files.map { name, data in
            let url = folder.appendingPathComponent(name)
            try AtomicFile.write(data, to: url)
            return url
        }
    }

    // MARK: - numbers

    static func percent(_ v: Double?) -> String { v.map { String(format: "%.1f", 100 * $0) } ?? "–" }

    static func delta(_ v: Double?, _ w: Double?) -> String {
        guard let v, let w else { return "–" }
        let d = 100 * (v - w)
        return String(format: "%+.1f", d)
    }

    public static func csv(_ report: SweepReport) -> String {
        let keys = report.headline.keys.sorted()
        func field(_ s: String) -> String { s.contains(",") || s.contains("\"") ? "\"\(s.replacingOccurrences(of: "\"", with: "\"\""))\"" : s }
        var lines = [(["category"] + keys + SweepReport.metrics).joined(separator: ",")]
        for e in report.evaluations {
            lines.append(([e.category] + keys.map { e.setting[$0] ?? "" } + SweepReport.metrics.map { e.metrics[$0].map { "\($0)" } ?? "" })
                .map(field).joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    public static func json(_ report: SweepReport) throws -> Data {
        var object: [String: Any] = [
            "sweep": report.sweep,
            "headline_setting": report.headline,
            "categories": report.rows.map { row -> [String: Any] in
                var r: [String: Any] = ["category": row.category, "metrics": row.metrics]
                if let a = row.against { r["against"] = a }
                return r
            },
            "mean": report.meanRow,
            "defect_types": report.defectTypes.map { r -> [String: Any] in
                ["category": r.category ?? "", "split": r.split, "defect_type": r.defectType, "images": r.images, "auroc": r.auroc]
            },
            "ablations": report.ablations.map { a in
                ["parameter": a.parameter, "categories": a.categories,
                 "rows": a.rows.map { ["value": $0.value, "metrics": $0.metrics] as [String: Any] }] as [String: Any]
            },
            "stages": report.stages.map { s in
                ["kind": s.kind, "jobs": s.jobs, "done": s.done, "reused": s.reused, "ran": s.ran, "seconds": s.seconds,
                 "failed_attempts": s.failedAttempts] as [String: Any]
            },
            "evaluations": report.evaluations.map { ["category": $0.category, "setting": $0.setting, "metrics": $0.metrics] as [String: Any] },
            "notes": report.notes,
        ]
        if let against = report.against {
            object["against"] = against
            object["mean_against"] = report.meanAgainst ?? [:]
        }
        return try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    }

    // MARK: - HTML

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    public static func html(_ report: SweepReport) -> String {
        var h = """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8">
            <title>PSAD sweep \(escape(report.sweep))</title>
            <style>
            body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
            h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
            table { border-collapse: collapse; margin: .6em 0; }
            th, td { padding: .25em .7em; border-bottom: 1px solid #e4e4e4; text-align: right; }
            th:first-child, td:first-child { text-align: left; }
            tr.mean td { font-weight: bold; border-top: 2px solid #999; }
            td.up { color: #1a7f37; } td.down { color: #c62828; }
            .setting { color: #555; font-size: .92em; }
            .curves, .examples { display: flex; flex-wrap: wrap; gap: 1.2em; }
            figure { margin: 0; } figcaption { font-size: .85em; color: #444; max-width: 340px; }
            .pair img { width: 160px; height: 160px; image-rendering: pixelated; margin-right: 4px; }
            .note { background: #fff8e1; padding: .5em .8em; border-left: 4px solid #f9a825; }
            </style></head><body>
            <h1>PSAD sweep <code>\(escape(report.sweep))</code></h1>
            <p class="setting">Headline setting: \(report.headline.keys.sorted().map { "\(escape($0)) = <b>\(escape(report.headline[$0]!))</b>" }.joined(separator: ", ")).
            Image AUROC (%) for logical (LA) and structural (SA) anomalies; pixel AUROC and sPRO (integrated to FPR 0.05) from the patch anomaly maps.</p>

            """
        for note in report.notes { h += "<p class=\"note\">\(escape(note))</p>\n" }
        h += mainTable(report)
        for ablation in report.ablations { h += ablationTable(ablation) }
        h += defectTypeTable(report)
        h += "<h2>ROC curves</h2>\n<div class=\"curves\">\n"
        for curve in report.curves {
            h += rocFigure(curve, metrics: report.rows.first { $0.category == curve.category }?.metrics ?? [:])
        }
        h += "</div>\n"
        if !report.examples.isEmpty {
            h += "<h2>Examples</h2>\n<p>Each test image with its predicted part segmentation blended in, and beside it the patch anomaly map (dark: normal, yellow: the category's highest patch distance).</p>\n"
            for category in orderedUnique(report.examples.map(\.category)) {
                h += "<h3>\(escape(category))</h3>\n<div class=\"examples\">\n"
                for e in report.examples where e.category == category {
                    h += """
                        <figure><div class="pair"><img alt="\(escape(e.split)) \(escape(e.id)) with parts" src="data:image/png;base64,\(e.overlay.base64EncodedString())">\
                        <img alt="anomaly map" src="data:image/png;base64,\(e.map.base64EncodedString())"></div>
                        <figcaption>\(escape(e.caption)): test/\(escape(e.split))/\(escape(e.id)).png, score \(String(format: "%.3f", e.score))</figcaption></figure>

                        """
                }
                h += "</div>\n"
            }
        }
        h += stageTable(report)
        h += "<p class=\"setting\">The same numbers: <code>report.csv</code> (one row per evaluation) and <code>report.json</code> beside this file.</p>\n</body></html>\n"
        return h
    }

    static func orderedUnique(_ values: [String]) -> [String] {
        var seen = Set<String>()
        return values.filter { seen.insert($0).inserted }
    }

    static func cell(_ v: Double?) -> String { "<td>\(percent(v))</td>" }

    static func deltaCell(_ v: Double?, _ w: Double?) -> String {
        guard let v, let w else { return "<td>–</td>" }
        let d = v - w
        return "<td class=\"\(d > 0.0005 ? "up" : d < -0.0005 ? "down" : "")\">\(delta(v, w))</td>"
    }

    static func mainTable(_ report: SweepReport) -> String {
        let metrics = SweepReport.metrics
        let compare = report.against != nil
        var h = "<h2>Per category</h2>\n<table><tr><th>category</th>"
        h += metrics.map { "<th>\(names[$0]!)</th>" }.joined()
        if let against = report.against {
            h += "<th>LA vs \(escape(against))</th><th>SA vs \(escape(against))</th><th>mean vs \(escape(against))</th>"
        }
        h += "</tr>\n"
        func line(_ name: String, _ m: [String: Double], _ a: [String: Double]?, mean: Bool) -> String {
            var r = "<tr\(mean ? " class=\"mean\"" : "")><td>\(escape(name))</td>" + metrics.map { cell(m[$0]) }.joined()
            if compare { r += ["logical_auroc", "structural_auroc", "mean_auroc"].map { deltaCell(m[$0], a?[$0]) }.joined() }
            return r + "</tr>\n"
        }
        for row in report.rows { h += line(row.category, row.metrics, row.against, mean: false) }
        h += line("mean", report.meanRow, report.meanAgainst, mean: true)
        return h + "</table>\n" + (compare ? "<p class=\"setting\">Differences in percentage points against the headline results of <code>\(escape(report.against!))</code>.</p>\n" : "")
    }

    static let ablationTitles: [String: String] = {
        typealias Field = EvaluationSetting.CodingKeys
        return ["\(Field.memoryType.name)/\(Field.scaleType.name)": "Memory banks (memory type / scale type)",
                Field.lossSet.name: "Losses", Field.nShot.name: "Labelled images (\(Field.nShot.name))",
                Field.lessNormalFraction.name: "Less normal data (fraction of train images in memory)",
                Field.unetEpochs.name: "UNet retraining (epochs; 0: segmenter masks)"]
    }()

    static func ablationTable(_ a: SweepReport.Ablation) -> String {
        // Pixel metrics only where they change (they come from the patch maps: memory and scale types leave them alone).
        let metrics = SweepReport.metrics.filter { m in
            m.hasSuffix("auroc") && m != "pixel_auroc" || Set(a.rows.map { $0.metrics[m].map { String(format: "%.6f", $0) } ?? "-" }).count > 1
        }
        var h = "<h2>\(escape(ablationTitles[a.parameter] ?? "Ablation: \(a.parameter)"))</h2>\n"
        h += "<table><tr><th>\(escape(a.parameter))</th>" + metrics.map { "<th>\(names[$0]!)</th>" }.joined() + "</tr>\n"
        for row in a.rows { h += "<tr><td>\(escape(row.value))</td>" + metrics.map { cell(row.metrics[$0]) }.joined() + "</tr>\n" }
        return h + "</table>\n<p class=\"setting\">Means over \(a.categories) categories; every other setting at the headline value.</p>\n"
    }

    static func stageTable(_ report: SweepReport) -> String {
        var h = "<h2>Stages</h2>\n<table><tr><th>stage</th><th>jobs</th><th>done</th><th>reused</th><th>ran for this sweep</th><th>wall s (total)</th><th>wall s (mean)</th><th>failed attempts</th></tr>\n"
        for s in report.stages {
            h += "<tr><td>\(escape(s.kind))</td><td>\(s.jobs)</td><td>\(s.done)</td><td>\(s.reused)</td><td>\(s.ran)</td>"
            h += "<td>\(String(format: "%.1f", s.seconds))</td><td>\(s.ran > 0 ? String(format: "%.1f", s.seconds / Double(s.ran)) : "–")</td><td>\(s.failedAttempts)</td></tr>\n"
        }
        return h + "</table>\n<p class=\"setting\">Reused: done before this sweep was submitted (same key), so not run again. Wall time of the accepted attempts.</p>\n"
    }

    /// AUROC per defect type at the headline setting: good test images
    /// against the images of one split holding that type.
    static func defectTypeTable(_ report: SweepReport) -> String {
        guard !report.defectTypes.isEmpty else { return "" }
        var h = "<h2>Per defect type</h2>\n<table>\n<tr><th>category</th><th>split</th><th>defect type</th><th>images</th><th>AUROC</th></tr>\n"
        for row in report.defectTypes {
            h += "<tr><td>\(escape(row.category ?? ""))</td><td>\(escape(row.split))</td><td>\(escape(row.defectType))</td>"
                + "<td>\(row.images)</td><td>\(percent(row.auroc))</td></tr>\n"
        }
        return h + "</table>\n<p class=\"setting\">Image AUROC (%) of the good test images against the images of the split whose ground truth holds the type (an image with two types counts for both); headline setting.</p>\n"
    }

    /// A ROC plot: false-positive rate across, true-positive rate up, the
    /// logical and structural curves and the diagonal.
    static func rocFigure(_ curve: SweepReport.Curve, metrics: [String: Double]) -> String {
        let size = 220.0, pad = 30.0
        func path(_ p: RocPoints) -> String {
            var parts: [String] = []
            for (i, (x, y)) in zip(p.fpr, p.tpr).enumerated() {
                let point = String(format: "%.1f,%.1f", pad + x * size, pad + (1 - y) * size)
                parts.append((i == 0 ? "M" : "L") + point)
            }
            return parts.joined(separator: " ")
        }
        let w = size + 2 * pad
        return """
            <figure><svg xmlns="http://www.w3.org/2000/svg" width="\(Int(w))" height="\(Int(w + 10))" viewBox="0 0 \(Int(w)) \(Int(w + 10))" role="img" aria-label="ROC \(escape(curve.category))">
            <rect x="\(pad)" y="\(pad)" width="\(size)" height="\(size)" fill="none" stroke="#999"/>
            <path d="M\(pad),\(pad + size) L\(pad + size),\(pad)" stroke="#ccc" stroke-dasharray="4 3"/>
            <path class="roc-logical" d="\(path(curve.logical))" fill="none" stroke="#1565c0" stroke-width="2"/>
            <path class="roc-structural" d="\(path(curve.structural))" fill="none" stroke="#e65100" stroke-width="2"/>
            <text x="\(pad)" y="18" font-size="13">\(escape(curve.category))</text>
            <text x="\(pad + size - 4)" y="\(pad + size - 24)" font-size="11" text-anchor="end" fill="#1565c0">logical \(percent(metrics["logical_auroc"]))</text>
            <text x="\(pad + size - 4)" y="\(pad + size - 8)" font-size="11" text-anchor="end" fill="#e65100">structural \(percent(metrics["structural_auroc"]))</text>
            <text x="\(pad + size / 2)" y="\(w + 2)" font-size="11" text-anchor="middle">false-positive rate</text>
            <text x="10" y="\(pad + size / 2)" font-size="11" text-anchor="middle" transform="rotate(-90 10 \(pad + size / 2))">true-positive rate</text>
            </svg></figure>

            """
    }
}
