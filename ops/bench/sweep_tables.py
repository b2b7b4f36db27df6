#!/usr/bin/env python3
"""Markdown tables for BENCHMARKS.md from sweep results CSVs
(`psad-coordinator results SWEEP > FILE.csv`; several files are merged,
a later file's result replacing an earlier one's for the same category and
setting: e.g. a category re-run on regenerated data after the others).

    python3 ops/bench/sweep_tables.py state/benchmark/benchmark.csv [state/benchmark/unet.csv]

Prints, in image AUROC %: hcp per category (max and std scaling), the memory
banks (h, c, p, hcp unscaled, hcp max, hcp std), the loss sets, and the UNet
retraining when the files hold more than one unet_epochs value. The loss set
and UNet setting held fixed in a table are the first files' most common ones
unless --loss-set / --unet-epochs say otherwise.
"""
import argparse, collections, csv, json

parser = argparse.ArgumentParser()
parser.add_argument("csv", nargs="+")
parser.add_argument("--loss-set", default="sup+H+hist")
parser.add_argument("--unet-epochs", default="0")
args = parser.parse_args()

# (category, memory, scale, loss_set, unet_epochs) -> {metric: value}
table = collections.defaultdict(dict)
for path in args.csv:
    for row in csv.DictReader(open(path)):
        s = json.loads(row["setting"])
        key = (row["category"], s["memory_type"], s["scale_type"], s.get("loss_set"), str(s.get("unet_epochs", 0)))
        table[key][row["metric"]] = float(row["value"]) * 100
categories = sorted({k[0] for k in table})
losses = sorted({k[3] for k in table}, key=["sup", "sup+H", "sup+H+hist"].index)
unets = sorted({k[4] for k in table}, key=int)

def cell(category, memory, scale, loss=args.loss_set, unet=args.unet_epochs):
    m = table.get((category, memory, scale, loss, unet))
    return (m["logical_auroc"], m["structural_auroc"]) if m else (float("nan"), float("nan"))

def print_table(title, columns):
    """columns: [(header, function(category) -> (LA, SA))]"""
    print(f"#### {title}\n")
    print("| category | " + " | ".join(f"{h} LA | {h} SA" for h, _ in columns) + " |")
    print("|---|" + "---:|---:|" * len(columns))
    sums = [[0.0, 0.0] for _ in columns]
    for c in categories:
        values = [f(c) for _, f in columns]
        for s, v in zip(sums, values):
            s[0] += v[0]; s[1] += v[1]
        print(f"| {c} | " + " | ".join(f"{la:.1f} | {sa:.1f}" for la, sa in values) + " |")
    n = len(categories)
    print("| **mean** | " + " | ".join(f"**{la / n:.1f}** | **{sa / n:.1f}**" for la, sa in sums) + " |\n")

fixed = f"loss set {args.loss_set}, UNet epochs {args.unet_epochs}"
print_table(f"Per category, hcp ({fixed})", [("max", lambda c: cell(c, "hcp", "max")), ("std", lambda c: cell(c, "hcp", "std"))])
print_table(f"Memory banks ({fixed})", [
    ("h", lambda c: cell(c, "h", "max")), ("c", lambda c: cell(c, "c", "max")), ("p", lambda c: cell(c, "p", "max")),
    ("hcp none", lambda c: cell(c, "hcp", "none")), ("hcp max", lambda c: cell(c, "hcp", "max")),
    ("hcp std", lambda c: cell(c, "hcp", "std"))])
if len(losses) > 1:
    print_table(f"Loss sets (hcp, max scaling, UNet epochs {args.unet_epochs})",
                [(l, lambda c, l=l: cell(c, "hcp", "max", loss=l)) for l in losses])
    print_table(f"Loss sets (hcp, std scaling, UNet epochs {args.unet_epochs})",
                [(l, lambda c, l=l: cell(c, "hcp", "std", loss=l)) for l in losses])
if len(unets) > 1:
    columns = []
    for memory, scale in [("hcp", "max"), ("hcp", "std")]:
        for u in unets:
            columns.append((f"{memory} {scale} U{u}", lambda c, u=u, m=memory, s=scale: cell(c, m, s, unet=u)))
    print_table(f"UNet retraining (loss set {args.loss_set}; U0: the segmenter's own masks, UN: N UNet epochs)", columns)
