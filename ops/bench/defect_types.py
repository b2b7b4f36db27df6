#!/usr/bin/env python3
"""Image AUROC per defect type: each bank alone and hcp with max and std
scaling, read from a sweep's finished bank-fit and patch-features jobs in a
state directory (read-only), with each anomalous test image's defect type
from the dataset's ground truth (`defects_config.json` pixel values).
Standard library and numpy only.

    python3 ops/bench/defect_types.py STATE DATASET [--loss-set sup+H+hist] [--unet-epochs 0] [--sweep NAME]

Good test images are the negatives of every row; a row's positives are the
test images whose ground truth holds that defect type.
"""
import argparse, json, os
import numpy as np
from sweepstate import State, png_array

parser = argparse.ArgumentParser()
parser.add_argument("state")
parser.add_argument("dataset")
parser.add_argument("--loss-set", default="sup+H+hist")
parser.add_argument("--sweep", help="only the jobs of this sweep (a dataset regenerated since earlier sweeps must be read with its own)")
parser.add_argument("--unet-epochs", type=int, default=0)
args = parser.parse_args()


def auroc(negatives, positives):
    """Mann-Whitney statistic, ties counted half."""
    n = np.asarray(negatives)[None, :]
    p = np.asarray(positives)[:, None]
    return float(((p > n) + 0.5 * (p == n)).mean())


state = State(args.state)
for job, category in state.jobs("bank-fit", args.sweep):
    up = state.ancestors(job)
    if up.get("segment-train", {}).get("loss_set") != args.loss_set: continue
    if up.get("unet-train", {}).get("unet_epochs", 0) != args.unet_epochs: continue
    patch_jobs = state.children(state.parent(job, "preprocessed"), "patch-features")
    if not patch_jobs: continue
    d, p = state.json_output(job, "distances.json"), state.json_output(patch_jobs[0], "scores.json")
    test = {"h": np.array(d["histogram"]), "c": np.array(d["composition"]), "p": np.array(p["test"], dtype=float)}
    train = {"h": np.array(d["histogram_train_statistics"]), "c": np.array(d["composition_train_statistics"]),
             "p": np.array(p["train"], dtype=float)}
    scores = dict(test)
    scores["hcp/max"] = sum(test[k] / train[k].max() for k in "hcp")
    scores["hcp/std"] = sum((test[k] - train[k].mean()) / train[k].std(ddof=1) for k in "hcp")
    good, logical = d["good"], d["logical"]
    names = {x["pixel_value"]: x["defect_name"] for x in json.load(open(f"{args.dataset}/{category}/defects_config.json"))}
    groups = {}
    for split, first, count in [("logical_anomalies", good, logical), ("structural_anomalies", good + logical, len(test["h"]) - good - logical)]:
        # Test images in file-name order, as the stages read them; each one's ground truth is the folder of its stem.
        stems = sorted(f[:-4] for f in os.listdir(f"{args.dataset}/{category}/test/{split}") if f.endswith(".png"))
        if len(stems) != count:
            raise SystemExit(f"{category}/test/{split}: {len(stems)} images, but the sweep scored {count}; wrong DATASET?")
        for i in range(count):
            folder = f"{args.dataset}/{category}/ground_truth/{split}/{stems[i]}"
            values = set().union(*(set(np.unique(png_array(f"{folder}/{f}")).tolist()) for f in sorted(os.listdir(folder)))) - {0}
            for v in values:
                groups.setdefault((split.split("_")[0], names.get(v, str(v))), []).append(first + i)
    print(f"\n{category} (loss set {args.loss_set}, UNet epochs {args.unet_epochs})\n")
    print("| split | defect type | images | " + " | ".join(scores) + " |")
    print("|---|---|---:|" + "---:|" * len(scores))
    for (split, name), rows in sorted(groups.items()):
        print(f"| {split} | {name} | {len(rows)} | " + " | ".join(f"{100 * auroc(s[:good], s[rows]):.1f}" for s in scores.values()) + " |")
