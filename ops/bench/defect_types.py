#!/usr/bin/env python3
"""Image AUROC per defect type: each bank alone and hcp with max and std
scaling, read from a sweep's finished bank-fit and patch-features jobs in a
state directory (read-only), with each anomalous test image's defect type
from the dataset's ground truth (`defects_config.json` pixel values).
Standard library and numpy only.

    python3 ops/bench/defect_types.py STATE DATASET [--loss-set sup+H+hist] [--unet-epochs 0]

Good test images are the negatives of every row; a row's positives are the
test images whose ground truth holds that defect type.
"""
import argparse, json, sqlite3, struct, zlib
import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("state")
parser.add_argument("dataset")
parser.add_argument("--loss-set", default="sup+H+hist")
parser.add_argument("--unet-epochs", type=int, default=0)
args = parser.parse_args()

def png_values(path):
    """The set of pixel values of an 8-bit grey or palette PNG."""
    data = open(path, "rb").read()
    pos, idat = 8, b""
    while pos < len(data):
        n, = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            w, h, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (0, 3), f"{path}: only 8-bit grey or palette masks"
        elif kind == b"IDAT":
            idat += body
    raw, prev, values = zlib.decompress(idat), bytearray(w), set()
    for y in range(h):
        f, row = raw[y * (w + 1)], bytearray(raw[y * (w + 1) + 1:(y + 1) * (w + 1)])
        for x in range(w):
            a, b, c = (row[x - 1] if x else 0), prev[x], (prev[x - 1] if x else 0)
            if f == 1: row[x] = (row[x] + a) & 255
            elif f == 2: row[x] = (row[x] + b) & 255
            elif f == 3: row[x] = (row[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[x] = (row[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        values.update(row)
        prev = row
    return values

def auroc(negatives, positives):
    """Mann-Whitney statistic, ties counted half."""
    n = np.asarray(negatives)[None, :]
    p = np.asarray(positives)[:, None]
    return float(((p > n) + 0.5 * (p == n)).mean())

db = sqlite3.connect(f"file:{args.state}/state.sqlite?mode=ro", uri=True)
def blob(digest):
    row = db.execute("select data from small_blob where hash=?", (digest,)).fetchone()
    return bytes(row[0]) if row else open(f"{args.state}/blobs/{digest[:2]}/{digest}", "rb").read()
def output(job, name):
    return json.loads(blob(db.execute("select hash from job_output where job=? and name=?", (job, name)).fetchone()[0]))
def ancestors(job):
    """Parameters of every job above `job`, by kind."""
    found, frontier = {}, [job]
    while frontier:
        for parent, kind, parameters in db.execute(
                "select p.key, p.kind, p.parameters from edge e join job p on p.key = e.parent where e.child = ?",
                (frontier.pop(),)):
            found[kind] = json.loads(parameters)
            frontier.append(parent)
    return found

for job, category in db.execute("select key, category from job where kind='bank-fit' and state='done' order by category").fetchall():
    up = ancestors(job)
    if up.get("segment-train", {}).get("loss_set") != args.loss_set: continue
    if up.get("unet-train", {}).get("unet_epochs", 0) != args.unet_epochs: continue
    preprocess = db.execute("select parent from edge where child=? and role='preprocessed'", (job,)).fetchone()[0]
    patch_job = db.execute("select e.child from edge e join job c on c.key = e.child where e.parent=? and c.kind='patch-features'"
                           " and c.state='done'", (preprocess,)).fetchone()
    if not patch_job: continue
    d, p = output(job, "distances.json"), output(patch_job[0], "scores.json")
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
        for i in range(count):
            folder = f"{args.dataset}/{category}/ground_truth/{split}/{i:03d}"
            import os
            values = set().union(*(png_values(f"{folder}/{f}") for f in sorted(os.listdir(folder)))) - {0}
            for v in values:
                groups.setdefault((split.split("_")[0], names.get(v, str(v))), []).append(first + i)
    print(f"\n{category} (loss set {args.loss_set}, UNet epochs {args.unet_epochs})\n")
    print("| split | defect type | images | " + " | ".join(scores) + " |")
    print("|---|---|---:|" + "---:|" * len(scores))
    for (split, name), rows in sorted(groups.items()):
        print(f"| {split} | {name} | {len(rows)} | " + " | ".join(f"{100 * auroc(s[:good], s[rows]):.1f}" for s in scores.values()) + " |")
