#!/usr/bin/env python3
"""A part-geometry bank, measured before it is built: per part class, where
its pixels lie (centroid) and how they spread (second moments), from the
pseudo-label masks the sweep's bank-fit jobs read; compared as the paper's
histogram bank compares part areas (per-dimension standardisation by the
train vectors, 1-NN Euclidean distance, leave-one-out train statistics,
max scaling). The histogram bank sees how much of each part there is; this
sees where it is: a cable joining the wrong slots, a part moved.

Prints image AUROC (LA / SA) per category for the geometry bank alone,
the paper's hcp (sum, max scaling) and hcp with the geometry bank added,
by the sum and by the banks' maximum; then each logical defect type's
AUROC per bank.

Read-only on a state directory; standard library and numpy only.

    python3 ops/bench/geometry_bank.py STATE [--sweep NAME] [--tta-views 4] [--patch-backbone efficientnet-lite1]
        [--form joint|parts|centroids] [--lengths] [--scale per-dim|pooled|none] [--floor-pixels N]
"""
import argparse, io
import numpy as np
from sweepstate import State, png_array

parser = argparse.ArgumentParser()
parser.add_argument("state")
parser.add_argument("--sweep")
parser.add_argument("--loss-set", default="sup+H+hist")
parser.add_argument("--tta-views", type=int, default=4)
parser.add_argument("--patch-backbone", default="efficientnet-lite1")
parser.add_argument("--epsilon", type=float, default=1e-6)
parser.add_argument("--form", choices=["joint", "parts", "centroids"], default="joint",
                    help="joint: 1-NN over all classes' numbers at once (one train image must match every part); "
                         "parts: each class's five numbers matched to their own nearest train image, the squared "
                         "distances summed over classes (a moved part is not lost among many classes' neighbours); "
                         "centroids: joint, the centroids alone (no second moments)")
parser.add_argument("--scale", choices=["per-dim", "pooled", "none"], default="per-dim",
                    help="per-dim: each number standardised by its own train std (the bank as built); pooled: one std per "
                         "kind of number (x, y, xx, yy, xy) over all classes; none: no standardisation")
parser.add_argument("--lengths", action="store_true",
                    help="the second moments as lengths: sqrt(xx), sqrt(yy) and xy / sqrt(xx yy) scaled by sqrt(sqrt(xx yy)), "
                         "so every number is in units of the image's size")
parser.add_argument("--floor-pixels", type=float, default=0,
                    help="no number's std below this many of the mask's pixels (with --lengths every number is a length; "
                         "a difference under a pixel of the mask is not evidence)")
args = parser.parse_args()


def auroc(negatives, positives):
    n = np.asarray(negatives)[None, :]
    p = np.asarray(positives)[:, None]
    return float(((p > n) + 0.5 * (p == n)).mean())


def geometry(mask, classes):
    """Per foreground class: centroid (x, y) and second central moments
    (xx, yy, xy), in units of the image's width and height; zeros where the
    class is absent."""
    h, w = mask.shape
    ys, xs = np.mgrid[0:h, 0:w]
    xs, ys = (xs + 0.5) / w, (ys + 0.5) / h
    out = []
    for c in range(1, classes):
        m = mask == c
        n = m.sum()
        if n == 0:
            out += [0.0] * 5
            continue
        x, y = xs[m], ys[m]
        cx, cy = x.mean(), y.mean()
        out += [cx, cy, ((x - cx) ** 2).mean(), ((y - cy) ** 2).mean(), ((x - cx) * (y - cy)).mean()]
    return out


def nearest(train, test):
    d = np.sqrt(((test[:, None] - train[None]) ** 2).sum(-1))
    dr = np.sqrt(((train[:, None] - train[None]) ** 2).sum(-1))
    np.fill_diagonal(dr, np.inf)
    return d.min(1), dr.min(1)


def nearest_per_part(train, test, width=5):
    """Each class's `width` numbers matched to their own nearest train image
    (leave-one-out for the train images); the squared distances summed."""
    d2, dr2 = np.zeros(len(test)), np.zeros(len(train))
    for c in range(0, train.shape[1], width):
        a, b = train[:, c:c + width], test[:, c:c + width]
        d = ((b[:, None] - a[None]) ** 2).sum(-1)
        dr = ((a[:, None] - a[None]) ** 2).sum(-1)
        np.fill_diagonal(dr, np.inf)
        d2 += d.min(1); dr2 += dr.min(1)
    return np.sqrt(d2), np.sqrt(dr2)


state = State(args.state)
rows, type_rows = [], []
in_sweep = {k for k, _ in state.jobs("patch-features", args.sweep)} if args.sweep else None
for job, category in state.jobs("bank-fit", args.sweep):
    up = state.ancestors(job)
    if up.get("segment-train", {}).get("loss_set") != args.loss_set: continue
    if up.get("pseudo-label", {}).get("tta_views", 0) != args.tta_views: continue
    masks_job = state.parent(job, "masks")
    patch_jobs = [k for k in state.children(state.parent(job, "preprocessed"), "patch-features")
                  if (in_sweep is None or k in in_sweep) and state.parameters(k)["backbone"] == args.patch_backbone]
    if not patch_jobs: continue
    d, p = state.json_output(job, "distances.json"), state.json_output(patch_jobs[0], "scores.json")
    good, logical = d["good"], d["logical"]
    names = state.outputs(masks_job, "masks/%")
    classes = state.json_output(state.parent(job, "preprocessed"), "preprocess.json")["classes"]
    train_names = sorted(n for n in names if n.startswith("masks/train/"))
    test_names = sorted(n for n in names if n.startswith("masks/test/good/")) + \
        sorted(n for n in names if n.startswith("masks/test/logical")) + sorted(n for n in names if n.startswith("masks/test/structural"))
    if len(test_names) != len(d["histogram"]):
        raise SystemExit(f"{category}: {len(test_names)} test masks, {len(d['histogram'])} distances")
    train_masks = [png_array(state.blob(names[n])) for n in train_names]
    test_masks = [png_array(state.blob(names[n])) for n in test_names]
    gt = np.array([geometry(m, classes) for m in train_masks])
    ge = np.array([geometry(m, classes) for m in test_masks])
    if args.form == "centroids":
        keep = [i for i in range(gt.shape[1]) if i % 5 < 2]
        gt, ge = gt[:, keep], ge[:, keep]
    if args.lengths:
        def as_lengths(v):
            v = v.copy()
            xx, yy, xy = v[:, 2::5].copy(), v[:, 3::5].copy(), v[:, 4::5].copy()
            v[:, 2::5], v[:, 3::5] = np.sqrt(xx), np.sqrt(yy)
            v[:, 4::5] = np.sign(xy) * np.sqrt(np.abs(xy))
            return v
        gt, ge = as_lengths(gt), as_lengths(ge)
    mean, sd = gt.mean(0), gt.std(0, ddof=1) + args.epsilon
    width = 2 if args.form == "centroids" else 5
    if args.floor_pixels > 0:
        if not args.lengths and args.form != "centroids":
            raise SystemExit("--floor-pixels needs --lengths (the second moments are areas otherwise)")
        size = train_masks[0].shape
        floor = np.array([1 / size[1], 1 / size[0], 1 / size[1], 1 / size[0], 1 / min(size)][:width] * (len(sd) // width))
        sd = np.maximum(sd, args.floor_pixels * floor)
    if args.scale == "pooled":
        for k in range(width):
            sd[k::width] = np.sqrt((gt[:, k::width].var(0, ddof=1)).mean()) + args.epsilon
    elif args.scale == "none":
        sd = np.ones_like(sd)
    g_test, g_train = (nearest if args.form == "joint" else nearest_per_part)((gt - mean) / sd, (ge - mean) / sd)
    scaled = {"h": np.array(d["histogram"]) / max(d["histogram_train_statistics"]),
              "c": np.array(d["composition"]) / max(d["composition_train_statistics"]),
              "p": np.array(p["test"], float) / max(p["train"]),
              "g": g_test / g_train.max()}
    if d.get("instances") is not None:
        scaled["n"] = np.array(d["instances"]) / max(max(d["instances_train_statistics"]), 1.0)
    def figures(score):
        return auroc(score[:good], score[good:good + logical]), auroc(score[:good], score[good + logical:])
    hcp, hcpg = scaled["h"] + scaled["c"] + scaled["p"], scaled["h"] + scaled["c"] + scaled["p"] + scaled["g"]
    hcp_max = np.maximum.reduce([scaled["h"], scaled["c"], scaled["p"]])
    hcpg_max = np.maximum(hcp_max, scaled["g"])
    extra = []
    if "n" in scaled:
        extra = [figures(hcp + scaled["n"]), figures(np.maximum(hcp_max, scaled["n"])), figures(np.maximum(hcpg_max, scaled["n"]))]
    rows.append((category, [figures(x) for x in (scaled["g"], hcp, hcpg, hcp_max, hcpg_max)] + extra))
    types = p.get("test_defect_types", [])
    for kind in sorted({t for ts in types[good:good + logical] for t in ts}):
        hit = [i for i in range(good, good + logical) if kind in types[i]]
        type_rows.append((category, kind, len(hit), [auroc(x[:good], x[hit]) for x in (scaled["h"], scaled["c"], scaled["p"], scaled["g"], hcp, hcpg)]))

if not rows:
    raise SystemExit(f"{args.state}: no finished bank-fit job with a patch-features job matching --loss-set {args.loss_set} "
                     f"--tta-views {args.tta_views} --patch-backbone {args.patch_backbone}"
                     + (f" in sweep {args.sweep}" if args.sweep else ""))
columns = ["g", "hcp/max", "hcpg/max", "hcp/max, banks' maximum", "hcpg/max, banks' maximum"]
if len(rows[0][1]) > len(columns):
    columns += ["hcpn/max", "hcpn/max, banks' maximum", "hcpng/max, banks' maximum"]
print("| category | " + " | ".join(columns) + " |")
print("|---|" + "---:|" * len(columns))
for category, figs in rows:
    print(f"| {category} | " + " | ".join(f"{100 * a:.1f} / {100 * b:.1f}" for a, b in figs) + " |")
if rows:
    means = np.mean([[f for pair in figs for f in pair] for _, figs in rows], 0)
    print("| **mean** | " + " | ".join(f"{100 * means[2 * i]:.2f} / {100 * means[2 * i + 1]:.2f}" for i in range(len(columns))) + " |")

print("\nLogical anomalies per defect type: image AUROC against the good test images\n")
print("| category | defect type | images | h | c | p | g | hcp/max | hcpg/max |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for category, kind, n, figs in type_rows:
    print(f"| {category} | {kind} | {n} | " + " | ".join(f"{100 * f:.1f}" for f in figs) + " |")
