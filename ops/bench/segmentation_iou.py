#!/usr/bin/env python3
"""Intersection over union of the part masks the banks used against the
synthetic benchmark's true part masks (`synthetic_truth/`), per class, for
the test/good images: the segmenter's own masks (pseudo-label jobs) and the
UNet's (unet-train jobs), read from a state directory (read-only). Only for
data that has the truth, i.e. the synthetic benchmark.

    python3 ops/bench/segmentation_iou.py STATE DATASET [--loss-set sup+H+hist] [--sweep NAME]

Masks are compared in the preprocessed frame: the truth is cropped and
resized by nearest neighbour as preprocessing does, padding left out.
"""
import argparse, json, os
import numpy as np
from sweepstate import State, png_array

parser = argparse.ArgumentParser()
parser.add_argument("state")
parser.add_argument("dataset")
parser.add_argument("--loss-set", default="sup+H+hist")
parser.add_argument("--sweep", help="only the jobs of this sweep (a dataset regenerated since earlier sweeps must be read with its own)")
args = parser.parse_args()

state = State(args.state)
print("| category | masks from | mIoU | per class |")
print("|---|---|---:|---|")
for kind in ["pseudo-label", "unet-train"]:
    for job, category in state.jobs(kind, args.sweep):
        up = state.ancestors(job)
        if up.get("segment-train", {}).get("loss_set") != args.loss_set: continue
        root = f"{args.dataset}/{category}"
        manifest = json.load(open(f"{root}/psad-manifest.json"))
        classes = [c["name"] for c in manifest["classes"]]
        margin = manifest["preprocess"].get("crop_margin") or 0
        size = manifest["preprocess"]["target_size"]
        inter, union = np.zeros(len(classes)), np.zeros(len(classes))
        for name, digest in sorted(state.outputs(job, "masks/test/good/%").items()):
            path = f"/tmp/psad-iou-{digest}.png"
            if not os.path.exists(path):
                open(path, "wb").write(state.blob(digest))
            predicted = png_array(path)
            truth = png_array(f"{root}/synthetic_truth/test/good/{os.path.basename(name)}")
            if margin:
                truth = truth[margin:-margin, margin:-margin]
            h, w = truth.shape
            scale = size / max(w, h)
            rows = np.minimum(((np.arange(round(h * scale)) + 0.5) / scale).astype(int), h - 1)
            cols = np.minimum(((np.arange(round(w * scale)) + 0.5) / scale).astype(int), w - 1)
            truth = truth[rows][:, cols]
            predicted = predicted[:truth.shape[0], :truth.shape[1]]
            for c in range(len(classes)):
                inter[c] += np.sum((truth == c) & (predicted == c))
                union[c] += np.sum((truth == c) | (predicted == c))
        iou = inter / np.maximum(union, 1)
        epochs = json.loads(state.db.execute("select parameters from job where key=?", (job,)).fetchone()[0]).get("unet_epochs")
        label = "segmenter" if kind == "pseudo-label" else f"UNet, {epochs} epochs"
        print(f"| {category} | {label} | {iou.mean():.3f} | " + ", ".join(f"{n} {v:.2f}" for n, v in zip(classes, iou)) + " |")
