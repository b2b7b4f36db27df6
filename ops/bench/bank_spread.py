#!/usr/bin/env python3
"""Why the banks' sum loses structural accuracy: each bank's max-scaled
distance on the good test images (mean and spread) against its mean on the
logical and structural anomalies; how noisy the segmenter's part areas are
on train and on good test images next to the synthetic truth's; and what
the sum gives when each bank is scaled by statistics of held-out normal
images instead of the train images' leave-one-out distances; and what the
sum gives with variants of the histogram and composition banks computed
from the same vectors (k nearest train vectors, a whitened or log-count
histogram, one bank left out).

Read from a sweep's finished bank-fit and patch-features jobs in a state
directory (read-only; bank-fit code version 3 or later, which keeps the
test vectors). Standard library and numpy only.

    python3 ops/bench/bank_spread.py STATE DATASET [--sweep NAME] [--loss-set sup+H+hist] [--unet-epochs 0]
        [--patch-backbone efficientnet-lite0] [--patch-resize square] [--labelled-views 0] [--finetune head] [--tta-views 0]
        [--seed N] [--statistic leave-one-out|reference]

The held-out scaling is simulated on the test set itself: the good test
images are split in two at random, one half gives each bank's statistics
(max, or mean and std, of its distances), the other half is scored with the
anomalies; the AUROCs are the mean over 30 splits, next to the train
statistics' AUROCs on the same halves.
"""
import argparse, json, os, struct
import numpy as np
from sweepstate import State, png_array

parser = argparse.ArgumentParser()
parser.add_argument("state")
parser.add_argument("dataset")
parser.add_argument("--loss-set", default="sup+H+hist")
parser.add_argument("--sweep")
parser.add_argument("--unet-epochs", type=int, default=0)
parser.add_argument("--patch-backbone", default="efficientnet-lite0")
parser.add_argument("--patch-resize", default="square")
parser.add_argument("--labelled-views", type=int, default=0, help="segment-train's views per labelled image (0: fresh, the default)")
parser.add_argument("--finetune", default="head", help="what segment-train trained: head (the default), last or all")
parser.add_argument("--tta-views", type=int, default=0, help="pseudo-label's test-time views (0: none, the default)")
parser.add_argument("--seed", type=int, help="segment-train's seed (default: every seed, a row each)")
parser.add_argument("--statistic", choices=["leave-one-out", "reference"], help="the bank-fit's train statistic (default: every one, a row each)")
args = parser.parse_args()


def safetensors(data):
    """{name: float64 array} of a safetensors file's F32 tensors."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] != "F32": continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + a:8 + n + b], dtype="<f4").astype(np.float64).reshape(t["shape"])
    return out


def auroc(negatives, positives):
    n = np.asarray(negatives)[None, :]
    p = np.asarray(positives)[:, None]
    return float(((p > n) + 0.5 * (p == n)).mean())


def reference_statistic(x):
    """The reference code's train statistic (MemoryBank.trainStatistics(.reference)):
    for train vector i, the distance to the train vector whose index is the
    rank of train vector #1 among i's sorted distances."""
    out = []
    for i in range(len(x)):
        d = np.sqrt(((x - x[i]) ** 2).sum(1))
        order = sorted(range(len(x)), key=lambda j: (d[j], j))
        out.append(d[order.index(1)])
    return np.array(out)


def leave_one_out(x):
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return d.min(1)


def standardise(train, test, epsilon):
    m, sd = train.mean(0), train.std(0, ddof=1) + epsilon
    return (train - m) / sd, (test - m) / sd


def k_nearest(train, test, k):
    """Mean distance of each test vector to its k nearest train vectors, and
    the max over train vectors of the same leave-one-out (the max scaling's divisor)."""
    dt = np.sort(np.sqrt(((test[:, None] - train[None]) ** 2).sum(-1)), 1)[:, :k].mean(1)
    dr = np.sqrt(((train[:, None] - train[None]) ** 2).sum(-1))
    np.fill_diagonal(dr, np.inf)
    return dt, np.sort(dr, 1)[:, :k].mean(1).max()


def whiten(train, test, shrink=0.1):
    """Train covariance (shrunk 10% toward its diagonal) made the identity."""
    m = train.mean(0)
    cov = np.cov(train - m, rowvar=False)
    cov = (1 - shrink) * cov + shrink * np.diag(np.diag(cov))
    w, v = np.linalg.eigh(cov)
    t = v / np.sqrt(np.maximum(w, 1e-12))
    return (train - m) @ t, (test - m) @ t


def cv(counts):
    """Mean over foreground classes present of std / mean of the per-image pixel count."""
    mean = counts.mean(0)
    keep = [c for c in range(1, counts.shape[1]) if mean[c] > 0]
    return float(np.mean([counts[:, c].std(ddof=1) / mean[c] for c in keep]))


state = State(args.state)
spread_rows, noise_rows, held_rows, statistic_rows, variant_rows = [], [], [], [], []
rng = np.random.default_rng(0)
for job, category in state.jobs("bank-fit", args.sweep):
    up = state.ancestors(job)
    if up.get("segment-train", {}).get("loss_set") != args.loss_set: continue
    if up.get("unet-train", {}).get("unet_epochs", 0) != args.unet_epochs: continue
    if state.labelled_views(job) != args.labelled_views: continue
    if up.get("segment-train", {}).get("finetune", "head") != args.finetune: continue
    if up.get("pseudo-label", {}).get("tta_views", 0) != args.tta_views: continue
    if args.seed is not None and up.get("segment-train", {}).get("seed", 0) != args.seed: continue
    if args.statistic and state.parameters(job).get("train_statistic", "leave-one-out") != args.statistic: continue
    outputs = state.outputs(job)
    # The sweep's own patch-features job where a sweep is named (earlier code versions share the preprocess job).
    in_sweep = {k for k, _ in state.jobs("patch-features", args.sweep)} if args.sweep else None
    patch_jobs = [k for k in state.children(state.parent(job, "preprocessed"), "patch-features") if in_sweep is None or k in in_sweep
                  if (lambda q: q["backbone"] == args.patch_backbone and q.get("patch_resize", "square") == args.patch_resize)(state.parameters(k))]
    if not patch_jobs or "banks.safetensors" not in outputs: continue
    banks = safetensors(state.blob(outputs["banks.safetensors"]))
    if "test_histogram" not in banks: continue
    d, p = state.json_output(job, "distances.json"), state.json_output(patch_jobs[0], "scores.json")
    good, logical = d["good"], d["logical"]
    test = {"h": np.array(d["histogram"]), "c": np.array(d["composition"]), "p": np.array(p["test"], dtype=float)}
    train = {"h": np.array(d["histogram_train_statistics"]), "c": np.array(d["composition_train_statistics"]),
             "p": np.array(p["train"], dtype=float)}
    for k in "hcp":
        x = test[k] / train[k].max()
        g = x[:good]
        spread_rows.append((category, k, g.mean(), g.std(ddof=1), x[good:good + logical].mean(), x[good + logical:].mean(),
                            (x[good + logical:].mean() - g.mean()) / g.std(ddof=1)))
    truth = None
    folder = f"{args.dataset}/{category}/synthetic_truth"
    if os.path.isdir(folder):
        classes = banks["train_histogram"].shape[1]
        def counts(split):
            files = sorted(f for f in os.listdir(f"{folder}/{split}") if f.endswith(".png"))
            return np.array([np.bincount(png_array(f"{folder}/{split}/{f}").ravel(), minlength=classes)[:classes] for f in files], float)
        truth = (cv(counts("train/good")), cv(counts("test/good")))
    noise_rows.append((category, cv(banks["train_histogram"]), cv(banks["test_histogram"][:good]), truth))
    results = {}
    for _ in range(30):
        order = rng.permutation(good)
        held, scored = order[:good // 2], order[good // 2:]
        for source in ("train", "held-out"):
            for scale in ("max", "std"):
                total = 0
                for k in "hcp":
                    s = train[k] if source == "train" else test[k][held]
                    total = total + (test[k] / s.max() if scale == "max" else (test[k] - s.mean()) / s.std(ddof=1))
                results.setdefault((source, scale), []).append(
                    (auroc(total[scored], total[good:good + logical]), auroc(total[scored], total[good + logical:])))
    held_rows.append((category, {key: np.mean(v, axis=0) for key, v in results.items()}))
    epsilon = state.parameters(job).get("epsilon", 1e-6)
    by_statistic = {}
    for statistic in ("leave-one-out", "reference"):
        total = test["p"] / train["p"].max()
        for k, name in (("h", "histogram"), ("c", "composition")):
            vectors = banks["train_" + name]
            standardised = (vectors - vectors.mean(0)) / (vectors.std(0, ddof=1) + epsilon)
            s = reference_statistic(standardised) if statistic == "reference" else leave_one_out(standardised)
            if statistic == state.parameters(job).get("train_statistic", "leave-one-out") and not np.allclose(s, train[k], rtol=1e-3, atol=1e-4):
                raise SystemExit(f"{category}: the {name} bank's {statistic} statistics recomputed from banks.safetensors "
                                 f"do not match the job's distances.json (first: {s[0]:.6g} against {train[k][0]:.6g})")
            total = total + test[k] / s.max()
        by_statistic[statistic] = (auroc(total[:good], total[good:good + logical]), auroc(total[:good], total[good + logical:]))
    statistic_rows.append((category, by_statistic))
    hist = standardise(banks["train_histogram"], banks["test_histogram"], epsilon)
    comp = standardise(banks["train_composition"], banks["test_composition"], epsilon)
    scaled = lambda pair, k=1: (lambda d, top: d / top)(*k_nearest(*pair, k))
    h1, c1, p1 = scaled(hist), scaled(comp), test["p"] / train["p"].max()
    variants = {"hcp (as the sweep)": h1 + c1 + p1, "hp": h1 + p1, "cp": c1 + p1,
                "h and c: 3 nearest": scaled(hist, 3) + scaled(comp, 3) + p1,
                "h and c: 5 nearest": scaled(hist, 5) + scaled(comp, 5) + p1,
                "h whitened": scaled(whiten(banks["train_histogram"], banks["test_histogram"])) + c1 + p1,
                "h of log counts": scaled(standardise(np.log1p(banks["train_histogram"]), np.log1p(banks["test_histogram"]), epsilon)) + c1 + p1}
    variant_rows.append((category, {name: (auroc(v[:good], v[good:good + logical]), auroc(v[:good], v[good + logical:]))
                                    for name, v in variants.items()}))

if not spread_rows:
    raise SystemExit(f"{args.state}: no finished bank-fit job with test vectors (bank-fit code version 3) and a patch-features job "
                     f"matching --loss-set {args.loss_set} --unet-epochs {args.unet_epochs} --labelled-views {args.labelled_views} "
                     f"--patch-backbone {args.patch_backbone} --patch-resize {args.patch_resize} --tta-views {args.tta_views}"
                     + (f" --seed {args.seed}" if args.seed is not None else "") + (f" --statistic {args.statistic}" if args.statistic else ""))
print("Each bank's distance over the max of its train statistics (loss set %s, UNet epochs %d)\n" % (args.loss_set, args.unet_epochs))
print("| category | bank | good mean | good sd | logical mean | structural mean | (structural - good) / good sd |")
print("|---|---|---:|---:|---:|---:|---:|")
for r in spread_rows:
    print(f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:.1f} |")
print("\nPart areas: coefficient of variation (std / mean of a part's pixel count, mean over foreground parts)\n")
print("| category | segmenter, train | segmenter, good test | truth, train | truth, good test |")
print("|---|---:|---:|---:|---:|")
for c, tr, te, truth in noise_rows:
    t = f"{truth[0]:.3f} | {truth[1]:.3f}" if truth else "- | -"
    print(f"| {c} | {tr:.3f} | {te:.3f} | {t} |")
print("\nhcp scaled by the train statistics or by held-out good images (half the good test set, mean of 30 splits), LA / SA\n")
print("| category | train, max | held-out, max | train, std | held-out, std |")
print("|---|---:|---:|---:|---:|")
means = {}
for c, r in held_rows:
    cells = []
    for key in [("train", "max"), ("held-out", "max"), ("train", "std"), ("held-out", "std")]:
        cells.append(f"{100 * r[key][0]:.1f} / {100 * r[key][1]:.1f}")
        means.setdefault(key, []).append(r[key])
    print(f"| {c} | " + " | ".join(cells) + " |")
if held_rows:
    print("| **mean** | " + " | ".join(f"{100 * np.mean(v, axis=0)[0]:.1f} / {100 * np.mean(v, axis=0)[1]:.1f}" for v in means.values()) + " |")
print("\nhcp with max scaling on the whole test set, the h and c banks' train statistic: leave-one-out (default) or the reference code's, LA / SA\n")
print("| category | leave-one-out | reference |")
print("|---|---:|---:|")
for c, r in statistic_rows:
    print(f"| {c} | " + " | ".join(f"{100 * r[k][0]:.1f} / {100 * r[k][1]:.1f}" for k in ("leave-one-out", "reference")) + " |")
if statistic_rows:
    print("| **mean** | " + " | ".join("%.1f / %.1f" % tuple(100 * np.mean([r[k] for _, r in statistic_rows], axis=0))
                                      for k in ("leave-one-out", "reference")) + " |")
print("\nhcp with max scaling and variants of the h and c banks from the same vectors (the leave-one-out statistic), LA / SA\n")
if variant_rows:
    names = list(variant_rows[0][1])
    print("| category | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for c, r in variant_rows:
        print(f"| {c} | " + " | ".join(f"{100 * r[n][0]:.1f} / {100 * r[n][1]:.1f}" for n in names) + " |")
    print("| **mean** | " + " | ".join("%.1f / %.1f" % tuple(100 * np.mean([r[n] for _, r in variant_rows], axis=0)) for n in names) + " |")
