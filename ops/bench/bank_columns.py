#!/usr/bin/env python3
"""Image AUROC per benchmark, segmenter seed and column (memory/scale type,
with `/max` where the banks' maximum is taken instead of their sum), the
mean over categories, then the mean over seeds: the tables of BENCHMARKS.md
"The part-instance bank". Reads `psad-coordinator results NAME` CSV.

    .build/release/psad-coordinator results third-instances --state state/third > /tmp/third.csv
    python3 ops/bench/bank_columns.py /tmp/third.csv [--columns hcp/max,hcpn/max,...] [--per-category]

Standard library only.
"""
import argparse, csv, json, statistics
from collections import defaultdict

parser = argparse.ArgumentParser()
parser.add_argument("csv")
parser.add_argument("--columns", default="hcp/max,hcpn/max,hcp/max/max,hcpn/max/max,hcp/std,hcpn/std,n/max")
parser.add_argument("--per-category", action="store_true", help="a row per category and seed as well")
args = parser.parse_args()
columns = args.columns.split(",")

cells = defaultdict(dict)   # (seed, category, column) -> {metric: value}
for row in csv.DictReader(open(args.csv)):
    if row["metric"] not in ("logical_auroc", "structural_auroc"): continue
    s = json.loads(row["setting"])
    column = f"{s['memory_type']}/{s['scale_type']}" + (f"/{s['combine']}" if s.get("combine") else "")
    cells[(s.get("seed", 0), row["category"], column)][row["metric"]] = float(row["value"])

seeds = sorted({k[0] for k in cells})
categories = sorted({k[1] for k in cells})
pair = lambda m: f"{100 * m[0]:.2f} / {100 * m[1]:.2f}"
print("| seed | " + " | ".join(columns) + " |")
print("|---|" + "---:|" * len(columns))
overall = defaultdict(list)
for seed in seeds:
    means = []
    for c in columns:
        values = [cells.get((seed, cat, c)) for cat in categories]
        if any(v is None or len(v) < 2 for v in values):
            means.append(None); continue
        m = (statistics.mean(v["logical_auroc"] for v in values), statistics.mean(v["structural_auroc"] for v in values))
        overall[c].append(m); means.append(m)
    print(f"| {seed} | " + " | ".join(pair(m) if m else "-" for m in means) + " |")
print("| **mean** | " + " | ".join(pair((statistics.mean(x[0] for x in overall[c]), statistics.mean(x[1] for x in overall[c])))
                                    if len(overall[c]) == len(seeds) else "-" for c in columns) + " |")
if args.per_category:
    print("\n| category | seed | " + " | ".join(columns) + " |")
    print("|---|---|" + "---:|" * len(columns))
    for cat in categories:
        for seed in seeds:
            v = [cells.get((seed, cat, c)) for c in columns]
            print(f"| {cat} | {seed} | " + " | ".join(f"{100 * x['logical_auroc']:.1f} / {100 * x['structural_auroc']:.1f}" if x and len(x) == 2 else "-"
                                                   for x in v) + " |")
