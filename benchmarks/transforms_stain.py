"""Histology transform throughput, ours against MONAI / scikit-image in the same run (JSON lines).

The ``macenko`` and ``hed_jitter`` lines of ``benchmarks/transforms.py`` (same code): batched Macenko
against MONAI's ``NormalizeHEStains`` per patch, ``BatchHEDJitter`` against scikit-image per patch, on
224x224 crops of scikit-image's immunohistochemistry image. Usage::

    python benchmarks/transforms_stain.py            # batch 256, GPU when present
    python benchmarks/transforms_stain.py --small    # CPU-sized (batch 32)
"""

from __future__ import annotations

# isort: off
import transforms as bench  # first: sets the OpenMP wait policy before torch starts

import argparse  # noqa: E402
import json  # noqa: E402

import torch  # noqa: E402

# isort: on


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="CPU-sized run: batch 32")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    batch = args.batch or (32 if args.small else 256)
    repeats = args.repeats or (2 if args.small else 10)
    info = bench.run_info(device, repeats)
    for res in (bench.bench_macenko(device, batch, repeats), bench.bench_hed_jitter(device, batch, repeats)):
        print(json.dumps({**res, **info}), flush=True)


if __name__ == "__main__":
    main()
