"""Histology transform throughput, ours against MONAI / scikit-image in the same run (JSON lines).

Lines:
- ``macenko``: ``monai_ext`` batched Macenko (fit + normalise, uint8 224x224, batch 256) against
  MONAI's ``NormalizeHEStains`` called per patch (numpy, channel-last, as MONAI expects);
- ``hed_jitter``: ``BatchHEDJitter`` (prob 1) against a per-patch scikit-image
  ``rgb2hed`` / ``hed2rgb`` implementation of Tellez et al. (MONAI has no HED augmentation).

Patches are 224x224 crops of scikit-image's immunohistochemistry image. Usage::

    python benchmarks/transforms_stain.py            # full size, GPU when present
    python benchmarks/transforms_stain.py --small    # CPU-sized (batch 32, fewer baseline patches)
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time

import monai
import numpy as np
import torch
from monai.apps.pathology.transforms import NormalizeHEStains
from skimage import color, data

from monai_ext.transforms.batch import BatchHEDJitter, BatchMacenkoNormalize


def _patches(n: int, size: int = 224) -> torch.Tensor:
    img = torch.from_numpy(data.immunohistochemistry()).permute(2, 0, 1)
    big = torch.cat([img, img.flip(-1)], -1)  # 512 x 1024, so crops vary
    g = torch.Generator().manual_seed(0)
    ys = torch.randint(0, 512 - size, (n,), generator=g)
    xs = torch.randint(0, 1024 - size, (n,), generator=g)
    return torch.stack(
        [big[:, y : y + size, x : x + size] for y, x in zip(ys.tolist(), xs.tolist())]
    ).contiguous()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn, n_items: int, repeats: int, device: torch.device) -> float:
    fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return n_items * repeats / (time.perf_counter() - t0)


def _hed_numpy(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hed = color.rgb2hed(img)
    hed = hed * rng.uniform(0.95, 1.05, 3) + rng.uniform(-0.05, 0.05, 3)
    return (color.hed2rgb(hed) * 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="CPU-sized run: batch 32, 16 baseline patches")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    batch = args.batch or (32 if args.small else 256)
    repeats = args.repeats or (2 if args.small else 10)
    n_base = 16 if args.small else 64
    x = _patches(batch).to(device)
    base = [p.permute(1, 2, 0).numpy().copy() for p in _patches(n_base)]
    info = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "patch": 224,
        "batch": batch,
    }

    norm = BatchMacenkoNormalize(validate=False).to(device)
    ours = _rate(lambda: norm(x), batch, repeats, device)
    monai_norm = NormalizeHEStains()
    theirs = _rate(lambda: [monai_norm(p) for p in base], n_base, 1, torch.device("cpu"))
    line = {"name": "macenko", **info, "ours_per_s": round(ours, 1), "baseline": "monai.NormalizeHEStains"}
    print(
        json.dumps({**line, "baseline_per_s": round(theirs, 1), "speedup": round(ours / theirs, 2)}),
        flush=True,
    )

    aug = BatchHEDJitter(prob=1.0, seed=0, check_finite=False)
    ours = _rate(lambda: aug(x), batch, repeats, device)
    rng = np.random.default_rng(0)
    theirs = _rate(lambda: [_hed_numpy(p, rng) for p in base], n_base, 1, torch.device("cpu"))
    line = {
        "name": "hed_jitter",
        **info,
        "ours_per_s": round(ours, 1),
        "baseline": "skimage rgb2hed per patch",
    }
    print(
        json.dumps({**line, "baseline_per_s": round(theirs, 1), "speedup": round(ours / theirs, 2)}),
        flush=True,
    )


if __name__ == "__main__":
    main()
