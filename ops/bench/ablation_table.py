#!/usr/bin/env python3
"""One markdown table for an ablation sweep: a row per combination of the
settings that vary in the results (other than memory and scale type), a
column per category with hcp LA / SA, and the means (the mean of p's SA
and hcp with std scaling too). Rows whose categories are not all finished
say which are missing and get no mean.

    psad-coordinator results fidelity --state state/fidelity > fidelity.csv
    python3 ops/bench/ablation_table.py fidelity.csv [--scale max]
"""
import argparse, collections, csv, json

parser = argparse.ArgumentParser()
parser.add_argument("csv")
parser.add_argument("--scale", default="max")
args = parser.parse_args()

rows = list(csv.DictReader(open(args.csv)))
if not rows or not {"category", "metric", "value", "setting"} <= set(rows[0]):
    raise SystemExit(f"{args.csv}: no results (expected `psad-coordinator results SWEEP` output: category, metric, value, setting)")
settings = [json.loads(r["setting"]) for r in rows]
fixed = {"memory_type", "scale_type"}
varying = sorted(k for k in set().union(*settings) if k not in fixed and len({json.dumps(s.get(k)) for s in settings}) > 1)
# (setting tuple, category, memory, scale) -> {metric: %}
values = collections.defaultdict(dict)
for r, s in zip(rows, settings):
    values[(tuple(s.get(k) for k in varying), r["category"], s["memory_type"], s["scale_type"])][r["metric"]] = 100 * float(r["value"])
categories = sorted({k[1] for k in values})
combos = sorted({k[0] for k in values}, key=lambda t: [str(x) for x in t])


def cell(combo, category, memory, scale):
    m = values.get((combo, category, memory, scale))
    return (m["logical_auroc"], m["structural_auroc"]) if m and "logical_auroc" in m else None


print("| " + " | ".join(varying) + " | " + " | ".join(f"{c} hcp LA / SA" for c in categories)
      + f" | **mean hcp/{args.scale}** | mean p SA | mean hcp/std |")
print("|" + "---|" * len(varying) + "---:|" * (len(categories) + 3))
for combo in combos:
    cells, hcp, p, std = [], [], [], []
    for c in categories:
        v = cell(combo, c, "hcp", args.scale)
        cells.append(f"{v[0]:.1f} / {v[1]:.1f}" if v else "(running)")
        if v: hcp.append(v)
        pv, sv = cell(combo, c, "p", args.scale), cell(combo, c, "hcp", "std")
        if pv: p.append(pv[1])
        if sv: std.append(sv)
    complete = len(hcp) == len(categories) and len(p) == len(categories) and len(std) == len(categories)
    def mean(v): return f"{sum(x[0] for x in v) / len(v):.1f} / {sum(x[1] for x in v) / len(v):.1f}"
    tail = [f"**{mean(hcp)}**", f"{sum(p) / len(p):.1f}", mean(std)] if complete else ["", "", ""]
    print("| " + " | ".join(str(x) for x in combo) + " | " + " | ".join(cells) + " | " + " | ".join(tail) + " |")
