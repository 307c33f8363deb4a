"""Benchmark: 3D chain ScaleIntensityRange -> RandAffine -> RandGaussianNoise, MONAI vs ours batched.

The ``radiology_3d_chain`` line of ``benchmarks/transforms.py`` (same code) with its own size flags.

Usage:
    python benchmarks/transforms_radiology.py                 # 1x160^3, batch 16, cuda if available
    python benchmarks/transforms_radiology.py --small         # 1x96^3, batch 4 (CPU-friendly)
    python benchmarks/transforms_radiology.py --device cpu --size 128 --batch 8 --repeats 3
"""

from __future__ import annotations

# isort: off
import transforms as bench  # first: sets the OpenMP wait policy before torch starts

import argparse  # noqa: E402
import json  # noqa: E402

import torch  # noqa: E402

# isort: on


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
    res = bench.bench_radiology_chain(device, a.size, a.batch, a.repeats)
    print(json.dumps({**res, **bench.run_info(device, a.repeats)}))


if __name__ == "__main__":
    main()
