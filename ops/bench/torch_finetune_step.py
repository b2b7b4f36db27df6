#!/usr/bin/env python3
"""PyTorch's figures for `psad-bench finetune-step`: one segment-train step
(head, last or all of the encoder trained; the trained units in train mode,
the frozen part in eval mode computed once outside the step), 10 x
cross-entropy + Dice on logits upsampled bilinearly (align_corners), AdamW.
Benchmark peer only. Usage: torch_finetune_step.py NETWORK TRAIN [--threads 2]"""
import argparse
import json
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("network")
p.add_argument("train", choices=["head", "last", "all"])
p.add_argument("--threads", type=int, default=2)
p.add_argument("--batch", type=int, default=5)
p.add_argument("--size", type=int, default=256)
p.add_argument("--classes", type=int, default=8)
p.add_argument("--seconds", type=float, default=10.0)
args = p.parse_args()
torch.set_num_threads(args.threads)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))

# The network as units in order, each with the stride of its output.
if args.network.startswith("efficientnet-lite"):
    from efficientnet_lite_pytorch import EfficientNet
    model = EfficientNet.from_name(args.network)
    stem = nn.Sequential(model._conv_stem, model._bn0, model._swish)
    units, stride = [(stem, 2)], 2
    for block in model._blocks:
        s = block._depthwise_conv.stride
        stride *= s[0] if isinstance(s, (tuple, list)) else s
        units.append((block, stride))
else:
    from torchvision_resnet import build
    model = build(args.network)
    units = [(nn.Sequential(model.conv1, model.bn1, nn.ReLU(), model.maxpool), 4)]
    for i in range(3):
        for block in getattr(model, f"layer{i + 1}"):
            units.append((block, 4 << i))
units = [(u, s) for u, s in units if s <= 16]
last = {s: i for i, (_, s) in enumerate(units)}   # the last unit at each stride
start = {"head": len(units), "last": last[8] + 1, "all": 0}[args.train]


def run(x, lo, hi, taps):
    for i in range(lo, hi):
        x = units[i][0](x)
        if i == last.get(units[i][1]) and units[i][1] in (4, 8, 16):
            taps[units[i][1]] = x
    return x


x = torch.randn(args.batch, 3, args.size, args.size)
labels = torch.randint(0, args.classes, (args.batch, args.size, args.size))
frozen = {}
for u, _ in units:
    u.eval()
with torch.no_grad():
    prefix = run(x, 0, start, frozen) if start > 0 else x
    probe = {}   # the taps' channels, from one image in eval mode
    run(x[:1], 0, len(units), probe)
cin = sum(probe[s].shape[1] for s in (4, 8, 16)) + 2
trained = nn.ModuleList([u for u, _ in units[start:]]).train()
head = nn.Sequential(nn.Conv2d(cin, cin // 2, 1), nn.ReLU(), nn.Conv2d(cin // 2, args.classes, 1))
optimizer = torch.optim.AdamW(list(head.parameters()) + list(trained.parameters()), lr=1e-3, weight_decay=0.01)
h4 = args.size // 4
ys, xs = torch.meshgrid(torch.linspace(0, 1, h4), torch.linspace(0, 1, h4), indexing="ij")
coords = torch.stack([xs, ys]).expand(args.batch, 2, h4, h4)


def step():
    taps = dict(frozen)
    run(prefix, start, len(units), taps)
    t4 = taps[4]
    up = [F.interpolate(taps[s], size=t4.shape[2:], mode="bilinear", align_corners=True) for s in (8, 16)]
    z = head(torch.cat([t4] + up + [coords], 1))
    z = F.interpolate(z, size=(args.size, args.size), mode="bilinear", align_corners=True)
    prob = z.softmax(1)
    onehot = F.one_hot(labels, args.classes).permute(0, 3, 1, 2).float()
    dice = 1 - (2 * (prob * onehot).sum((2, 3)) / (prob.sum((2, 3)) + onehot.sum((2, 3)) + 1e-4)).mean()
    loss = 10 * F.cross_entropy(z, labels) + dice
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


step()
best, total, runs = float("inf"), 0.0, 0
while total < args.seconds or runs < 3:
    t0 = time.perf_counter()
    step()
    dt = time.perf_counter() - t0
    best, total, runs = min(best, dt), total + dt, runs + 1
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"name": f"{args.network} {args.train}", "ms_per_step": best * 1000, "peak_mib": peak,
                  "impl": f"torch {torch.__version__}", "threads": args.threads}, sort_keys=True))
