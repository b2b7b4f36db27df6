#!/usr/bin/env python3
"""PyTorch's CPU figures for the same cases as `psad-bench kernels`, as JSON
lines. Benchmark peer only: never needed by the tests.

Usage: python3 ops/bench/torch_kernels.py [--threads 2] [--seconds 1]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--seconds", type=float, default=1.0)
args = p.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(1)


def measure(fn):
    fn()
    best, total, runs = float("inf"), 0.0, 0
    while total < args.seconds or runs < 3:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, total, runs = min(best, dt), total + dt, runs + 1
    return best


def report(name, flops, seconds):
    print(json.dumps({"name": name, "gflops": flops / seconds / 1e9, "ms": seconds * 1000,
                      "threads": args.threads, "impl": f"torch {torch.__version__}"}, sort_keys=True))


with torch.no_grad():
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    report("sgemm 1024x1024x1024", 2.0 * 1024 ** 3, measure(lambda: a @ b))
    for name, batch, cin, cout, size, k, groups in [
        ("conv 3x3 64->64 @64x64", 8, 64, 64, 64, 3, 1),
        ("conv 3x3 256->256 @32x32", 8, 256, 256, 32, 3, 1),
        ("conv 1x1 1024->256 @16x16", 8, 1024, 256, 16, 1, 1),
        ("depthwise 3x3 128 @64x64", 8, 128, 128, 64, 3, 128),
    ]:
        x = torch.randn(batch, cin, size, size)
        w = torch.randn(cout, cin // groups, k, k) * 0.1
        t = measure(lambda: F.conv2d(x, w, padding=k // 2, groups=groups))
        report(name, 2.0 * batch * cout * size * size * (cin // groups) * k * k, t)

for name, channels in [("head backward effnet-lite0 178->89->10", 178),
                       ("head backward wide-resnet 1794->897->10", 1794)]:
    batch, size, hidden, classes = 5, 64, channels // 2, 10
    x = torch.randn(batch, channels, size, size, requires_grad=True)
    w1 = (torch.randn(hidden, channels, 1, 1) * 0.05).requires_grad_()
    w2 = (torch.randn(classes, hidden, 1, 1) * 0.05).requires_grad_()
    y = F.conv2d(F.relu(F.conv2d(x, w1)), w2)
    g = y.detach().clone()
    t = measure(lambda: torch.autograd.grad(y, [x, w1, w2], g, retain_graph=True))
    report(name, 2 * 2 * batch * size * size * (channels * hidden + hidden * classes), t)


# segment-train's losses on the head's stride-4 logits, upsampled inside
# (align_corners), value and gradient: CE x 10 + Dice per image and class;
# entropy x 10 + histogram matching over the foreground classes.
for classes in (5, 26):
    z = (torch.randn(5, classes, 64, 64) * 2).requires_grad_()
    labels = torch.randint(0, classes, (5, 256, 256))
    onehot = F.one_hot(labels, classes).permute(0, 3, 1, 2).float()
    fractions = torch.full((5, classes), 1 / classes)

    def supervised():
        up = F.interpolate(z, size=(256, 256), mode="bilinear", align_corners=True)
        p = up.softmax(1)
        inter, mass = (p * onehot).sum((2, 3)), p.sum((2, 3)) + onehot.sum((2, 3))
        loss = 10 * F.cross_entropy(up, labels) + 1 - (2 * inter / (mass + 1e-4)).mean()
        torch.autograd.grad(loss, z)

    def unsupervised():
        q = F.interpolate(z, size=(256, 256), mode="bilinear", align_corners=True).softmax(1)
        entropy = -(q * torch.log(q + 1e-5)).mean()
        hist = (fractions[:, 1:] - q.mean((2, 3))[:, 1:]).abs().sum()
        torch.autograd.grad(10 * entropy + hist, z)

    report(f"losses CE + Dice, value and gradient, 5x{classes} 64->256", 0, measure(supervised))
    report(f"losses H + hist, value and gradient, 5x{classes} 64->256", 0, measure(unsupervised))
