#!/usr/bin/env python3
"""PyTorch's figures for `psad-bench backbones`: one network per process.
Benchmark peer only. Usage: torch_backbones.py NETWORK [--threads 2]"""
import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("network")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--batch", type=int, default=8)
p.add_argument("--size", type=int, default=256)
p.add_argument("--seconds", type=float, default=3.0)
args = p.parse_args()
torch.set_num_threads(args.threads)

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))

if args.network == "efficientnet-lite0":
    from efficientnet_lite_pytorch import EfficientNet
    model = EfficientNet.from_name("efficientnet-lite0").eval()

    def run(x):
        h = model._swish(model._bn0(model._conv_stem(x)))
        for block in model._blocks:
            h = block(h)
        return h
else:
    from torchvision_resnet import build
    depth = 3 if args.network == "wide_resnet50_2" else 4
    model = build(args.network).eval()

    def run(x):
        return model.taps(x, depth)

x = torch.randn(args.batch, 3, args.size, args.size)
with torch.no_grad():
    run(x)
    best, total, runs = float("inf"), 0.0, 0
    while total < args.seconds or runs < 2:
        t0 = time.perf_counter()
        run(x)
        dt = time.perf_counter() - t0
        best, total, runs = min(best, dt), total + dt, runs + 1
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"name": args.network, "images_per_s": args.batch / best, "peak_mib": peak,
                  "impl": f"torch {torch.__version__}", "threads": args.threads}, sort_keys=True))
