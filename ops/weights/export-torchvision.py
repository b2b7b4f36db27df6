#!/usr/bin/env python3
"""Exports torchvision's ImageNet ResNet / Wide-ResNet weights to safetensors,
for users who have PyTorch, torchvision and internet access (the project
itself never downloads weights). The Swift loader reads torchvision's
parameter names as they are.

  pip install torch torchvision safetensors
  python3 ops/weights/export-torchvision.py wide_resnet101_2 resnet101
  # writes ${PSAD_WEIGHTS:-~/.local/share/psad/weights}/<name>.safetensors

Names: resnet18, resnet50, resnet101, wide_resnet50_2, wide_resnet101_2.
"""
import os
import sys

import torchvision
from safetensors.torch import save_file

NAMES = ["resnet18", "resnet50", "resnet101", "wide_resnet50_2", "wide_resnet101_2"]


def main(names):
    if not names or any(n not in NAMES for n in names):
        print(__doc__)
        return 2
    dest = os.environ.get("PSAD_WEIGHTS") or os.path.expanduser("~/.local/share/psad/weights")
    os.makedirs(dest, exist_ok=True)
    for name in names:
        model = getattr(torchvision.models, name)(weights="IMAGENET1K_V1")
        state = {k: v.contiguous() for k, v in model.state_dict().items() if v.is_floating_point()}
        path = os.path.join(dest, f"{name}.safetensors")
        save_file(state, path, metadata={"source": f"torchvision {torchvision.__version__} {name} IMAGENET1K_V1"})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
