#!/usr/bin/env python3
"""PyTorch's figures for `ops/bench/predict`: the same inference as
`psad-worker predict` on an exported model, as the peer to measure against.
Benchmark peer only (needs torch, safetensors, efficientnet_lite_pytorch).

Per image: EfficientNet-Lite0's taps (strides 4, 8, 16) at the segmentation
size with the model's own head (its weights from segmenter.safetensors, the
same coordinate channels), the argmax parts, the part histogram and
composition vectors and their nearest train vectors (bank_vectors.json,
standardised), and PatchCore: the taps at PatchCore's size, the 3x3-pooled
stride-8 and stride-16 features joined, the nine nearest memory patches of
each (torch.cdist + topk against patch_memory.safetensors), the image score
their maximum. Weights of the backbone are random (speed does not depend
on them). Usage: torch_predict.py MODEL IMAGE_FOLDER... [--threads 2]
Prints one JSON line: images/s over the folder, and one image's latency.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from efficientnet_lite_pytorch import EfficientNet

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("folders", nargs="+")
p.add_argument("--threads", type=int, default=2)
args = p.parse_args()
torch.set_num_threads(args.threads)

d = json.load(open(os.path.join(args.model, "model.json")))
size, patch_size, classes = d["imageSize"], d["patchImageSize"], d["classes"]
head = load_file(os.path.join(args.model, "segmenter.safetensors"))
memory = load_file(os.path.join(args.model, "patch_memory.safetensors"))["memory"]
vectors = json.load(open(os.path.join(args.model, "bank_vectors.json")))
hist_train = torch.tensor(vectors["histogram"], dtype=torch.float64)
comp_train = torch.tensor(vectors["composition"], dtype=torch.float64)
hist_mean, hist_std = hist_train.mean(0), hist_train.std(0) + 1e-6
comp_mean, comp_std = comp_train.mean(0), comp_train.std(0) + 1e-6
hist_bank, comp_bank = (hist_train - hist_mean) / hist_std, (comp_train - comp_mean) / comp_std
model = EfficientNet.from_name("efficientnet-lite0").eval()
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def taps(x):
    """The last block's output at strides 4, 8 and 16."""
    h = F.relu6(model._bn0(model._conv_stem(x)))
    out, side = {}, x.shape[-1]
    for block in model._blocks:
        h = block(h)
        stride = side // h.shape[-1]
        if stride in (4, 8, 16):
            out[stride] = h
        elif stride > 16:
            break
    return out


def load(path, side):
    image = Image.open(path).convert("RGB").resize((side, side), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1).unsqueeze(0)
    return (x - mean) / std


def predict(path):
    x = load(path, size)
    t = taps(x)
    h4, w4 = t[4].shape[-2:]
    f = torch.cat([t[4], F.interpolate(t[8], (h4, w4), mode="bilinear", align_corners=True),
                   F.interpolate(t[16], (h4, w4), mode="bilinear", align_corners=True)], 1)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h4), torch.linspace(-1, 1, w4), indexing="ij")
    f = torch.cat([f, torch.stack([xs, ys]).unsqueeze(0)], 1)
    z = F.conv2d(F.relu(F.conv2d(f, head["head.0.weight"], head.get("head.0.bias"))), head["head.2.weight"], head.get("head.2.bias"))
    parts = F.interpolate(z, (size, size), mode="bilinear", align_corners=True).argmax(1)[0]
    # Banks: the part histogram and each foreground part's mean feature at every stride.
    histogram = torch.bincount(parts.flatten(), minlength=classes).double()
    onehot = F.one_hot(parts, classes).permute(2, 0, 1).float()[1:].unsqueeze(0)
    composition = []
    for s in (4, 8, 16):
        m = F.adaptive_avg_pool2d(onehot, t[s].shape[-2:])[0].flatten(1)
        composition.append((m @ t[s][0].flatten(1).T) / (histogram[1:].float().unsqueeze(1) + 1))
    composition = torch.cat(composition, 1).flatten().double()
    hist_distance = torch.cdist(((histogram - hist_mean) / hist_std).unsqueeze(0), hist_bank).min()
    comp_distance = torch.cdist(((composition - comp_mean) / comp_std).unsqueeze(0), comp_bank).min()
    # PatchCore.
    q = taps(load(path, patch_size))
    a = F.avg_pool2d(q[8], 3, 1, 1)
    b = F.interpolate(F.avg_pool2d(q[16], 3, 1, 1), a.shape[-2:], mode="nearest")
    patches = torch.cat([a, b], 1)[0].flatten(1).T
    nearest = torch.cdist(patches, memory).topk(9, largest=False).values
    return float(nearest[:, 0].max()) + float(hist_distance) + float(comp_distance)


images = sorted(os.path.join(folder, n) for folder in args.folders for n in os.listdir(folder) if n.endswith(".png"))
with torch.no_grad():
    predict(images[0])
    t0 = time.perf_counter()
    for path in images:
        predict(path)
    seconds = time.perf_counter() - t0
    latency = float("inf")
    for _ in range(3):
        t1 = time.perf_counter()
        predict(images[0])
        latency = min(latency, time.perf_counter() - t1)
print(json.dumps({"impl": f"torch {torch.__version__}", "threads": args.threads, "images": len(images),
                  "images_per_s": len(images) / seconds, "latency_ms": 1000 * latency}, sort_keys=True))
