#!/usr/bin/env python3
"""Markdown tables for BENCHMARKS.md from `psad-worker method` results.

Arguments: result paths, each with or without its `.json` suffix (as
ops/bench/method passes them). Standard library only.
"""
import json
import sys


def load(paths):
    results = []
    for path in paths:
        with open(path if path.endswith(".json") else path + ".json") as f:
            results.append(json.load(f))
    return results


def pct(x):
    return f"{100 * x:.1f}"


def metric(result, loss_set, key):
    for run in result["runs"]:
        if run["loss_set"] == loss_set:
            return run["metrics"].get(key)
    return None


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def la_sa_table(results, columns):
    """columns: (title, loss_set, key). One row per category and a mean row."""
    header = ["category"] + [f"{title} {kind}" for title, _, _ in columns for kind in ("LA", "SA")]
    rows, sums = [], [[0.0, 0.0, 0] for _ in columns]
    for r in results:
        row = [r["category"]]
        for (title, loss_set, key), total in zip(columns, sums):
            m = metric(r, loss_set, key)
            if m is None:
                row += ["-", "-"]
                continue
            row += [pct(m["logical_auroc"]), pct(m["structural_auroc"])]
            total[0] += m["logical_auroc"]; total[1] += m["structural_auroc"]; total[2] += 1
        rows.append(row)
    mean = ["**mean**"]
    for total in sums:
        mean += [f"**{pct(total[0] / total[2])}**", f"**{pct(total[1] / total[2])}**"] if total[2] else ["-", "-"]
    rows.append(mean)
    return table(header, rows)


def main():
    results = load(sys.argv[1:])
    full = "sup+H+hist"
    print("### Per category, hcp with max scaling (loss set sup+H+hist), image AUROC %\n")
    print(la_sa_table(results, [("hcp", full, "hcp/max")]))
    print("\n### Memory banks (loss set sup+H+hist)\n")
    print(la_sa_table(results, [("h", full, "h/max"), ("c", full, "c/max"), ("p", full, "p/max"),
                                ("hcp none", full, "hcp/none"), ("hcp max", full, "hcp/max")]))
    print("\n### Losses (memory hcp, max scaling)\n")
    print(la_sa_table(results, [(s, s, "hcp/max") for s in ("sup", "sup+H", "sup+H+hist")]))
    print("\n### Pixel metrics (patch bank anomaly maps, preprocessed frame)\n")
    rows = [[r["category"], f"{r['pixel']['pixel_auroc']:.3f}", f"{r['pixel']['spro']:.3f}"] if r.get("pixel")
            else [r["category"], "-", "-"] for r in results]
    print(table(["category", "pixel AUROC", "sPRO (FPR <= 0.05)"], rows))
    print("\n### Stage wall time (s) / peak resident memory (MiB)\n")
    stages = []
    for r in results:
        for st in r["stages"]:
            if st["stage"] not in stages:
                stages.append(st["stage"])

    def cell(st):
        peak = st.get("peak_mebibytes", st.get("peak_mi_b"))
        return f"{st['seconds']:.1f} / {peak:.0f}" if peak is not None else f"{st['seconds']:.1f}"

    rows = []
    for name in stages:
        row = [name]
        for r in results:
            by = {st["stage"]: st for st in r["stages"]}
            row.append(cell(by[name]) if name in by else "-")
        rows.append(row)
    rows.append(["**total s**"] + [f"**{sum(st['seconds'] for st in r['stages']):.0f}**" for r in results])
    print(table(["stage"] + [r["category"] for r in results], rows))

if __name__ == "__main__":
    main()
