"""Benchmark: 3D chain ScaleIntensityRange -> RandAffine -> RandGaussianNoise, MONAI vs ours batched.

Prints one JSON line per run (volumes/s for both, and the ratio), measured in the same process on the
same device with the same data already on that device.

Usage:
    python benchmarks/transforms_radiology.py                 # 1x160^3, batch 16, cuda if available
    python benchmarks/transforms_radiology.py --small         # 1x96^3, batch 4 (CPU-friendly)
    python benchmarks/transforms_radiology.py --device cpu --size 128 --batch 8 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time

import monai
import torch
from monai.transforms import Compose, RandAffine, RandGaussianNoise, ScaleIntensityRange

from monai_ext.transforms.batch import BatchAugChain, BatchHUWindow, BatchRandAffine, BatchRandGaussianNoise

ROTATE, SCALE, STD = (0.3, 0.3, 0.3), (0.1, 0.1, 0.1), 0.05


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (allocations, cudnn, caches)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--small", action="store_true", help="96^3, batch 4 (for CPU runs)")
    a = p.parse_args()
    if a.small:
        a.size, a.batch = 96, 4
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(a.batch, 1, a.size, a.size, a.size, generator=g, device=device) * 400 - 200

    monai_chain = Compose(
        [
            ScaleIntensityRange(a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True),
            RandAffine(prob=1.0, rotate_range=ROTATE, scale_range=SCALE, padding_mode="zeros", device=device),
            RandGaussianNoise(prob=1.0, std=STD),
        ]
    ).set_random_state(0)
    ours = BatchAugChain(
        [
            BatchHUWindow(-1000, 1000, check_finite=False),
            BatchRandAffine(prob=1.0, rotate_range=ROTATE, scale_range=SCALE, padding_mode="zeros", seed=0),
            BatchRandGaussianNoise(prob=1.0, std=STD, seed=0),
        ],
        check_finite=False,
    )

    def run_monai() -> None:
        for i in range(a.batch):
            monai_chain(x[i])

    def run_ours() -> None:
        with torch.no_grad():
            ours(x)

    t_monai = _time(run_monai, device, a.repeats)
    t_ours = _time(run_ours, device, a.repeats)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        json.dumps(
            {
                "benchmark": "radiology_3d_chain",
                "chain": "ScaleIntensityRange->RandAffine->RandGaussianNoise",
                "device": f"{device.type}:{dev_name}",
                "threads": a.threads if device.type == "cpu" else None,
                "shape": [1, a.size, a.size, a.size],
                "batch": a.batch,
                "monai_per_sample_volumes_per_s": round(a.batch / t_monai, 3),
                "ours_batched_volumes_per_s": round(a.batch / t_ours, 3),
                "ratio": round(t_monai / t_ours, 2),
                "torch": torch.__version__,
                "monai": monai.__version__,
                "date": datetime.date.today().isoformat(),
            }
        )
    )


if __name__ == "__main__":
    main()
