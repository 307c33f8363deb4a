"""Transform throughput, ours against MONAI in the same run: one JSON line per benchmark.

Lines (``"benchmark"``):

- ``radiology_3d_chain``: ScaleIntensityRange -> RandAffine -> RandGaussianNoise on 1xS^3 volumes
  already on the device; MONAI per sample against one batched call of ``BatchAugChain``.
- ``macenko``: ``BatchMacenkoNormalize`` (fit + normalise, uint8 224x224 crops of scikit-image's
  immunohistochemistry image) against MONAI's ``NormalizeHEStains`` per patch (numpy, channel last,
  as MONAI expects; its per-patch rate is measured on ``min(batch, 64)`` patches).
- ``hed_jitter``: ``BatchHEDJitter`` against a per-patch scikit-image ``rgb2hed`` / ``hed2rgb``
  implementation of Tellez et al. (MONAI has no HED augmentation).
- ``training_pipeline_3d``: a training-style image + label pipeline, HU window -> label-balanced crop
  (pos/neg 1:1) -> random affine (bilinear image, nearest label) -> random flips -> gamma ->
  Gaussian noise; MONAI's dictionary transforms per sample against one ``BatchAugChain`` call.

Timing: ``--repeats`` interleaved rounds (MONAI, then ours, each round), after one untimed warm-up of
each; a line reports the best round (``*_per_s``), the median round and their ratios, so load changes
on a shared machine affect both sides alike. The OpenMP wait policy defaults to ``PASSIVE`` (set
before torch is imported, for both sides): on a CPU shared with other jobs, spinning OpenMP threads
otherwise stall each small kernel for whole scheduler slices.

Usage::

    python benchmarks/transforms.py                       # issue sizes: 160^3 x 16, 224^2 x 256
    python benchmarks/transforms.py --small               # CPU-sized: 96^3 x 4, 224^2 x 32
    OMP_NUM_THREADS=2 python benchmarks/transforms.py --device cpu --repeats 2 --out results.jsonl
    python benchmarks/transforms.py --only macenko hed_jitter
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch / numpy start OpenMP

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import monai  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from monai_ext.transforms import batch as B  # noqa: E402

BENCHMARKS = ("radiology_3d_chain", "macenko", "hed_jitter", "training_pipeline_3d")
ROTATE, SCALE, STD = (0.3, 0.3, 0.3), (0.1, 0.1, 0.1), 0.05
GAMMA = (0.7, 1.5)


# --------------------------------------------------------------------------- timing and metadata
def sync(device: torch.device) -> None:
    """Wait for queued device work (CUDA); no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(
    monai_fn: Callable[[], Any],
    monai_items: int,
    ours_fn: Callable[[], Any],
    ours_items: int,
    repeats: int,
    device: torch.device,
) -> dict[str, float]:
    """Items/s of both sides over ``repeats`` interleaved rounds after one warm-up each: best and median."""
    rates: dict[str, list[float]] = {"monai": [], "ours": []}
    sides = (("monai", monai_fn, monai_items), ("ours", ours_fn, ours_items))
    for _, fn, _ in sides:
        fn()
    sync(device)
    for _ in range(repeats):
        for name, fn, n in sides:
            t0 = time.perf_counter()
            fn()
            sync(device)
            rates[name].append(n / (time.perf_counter() - t0))
    best = {k: max(v) for k, v in rates.items()}
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "monai_per_s": round(best["monai"], 3),
        "ours_per_s": round(best["ours"], 3),
        "ratio": round(best["ours"] / best["monai"], 2),
        "monai_median_per_s": round(med["monai"], 3),
        "ours_median_per_s": round(med["ours"], 3),
        "median_ratio": round(med["ours"] / med["monai"], 2),
    }


def run_info(device: torch.device, repeats: int) -> dict[str, Any]:
    """Device, threads, versions and date for every JSON line."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "device": f"{device.type}:{name}",
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "repeats": repeats,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "date": datetime.date.today().isoformat(),
    }


# --------------------------------------------------------------------------- data
def ct_volumes(batch: int, size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """(batch, 1, size^3) float32 HU-like noise volumes on ``device``."""
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(batch, 1, size, size, size, generator=g, device=device) * 400 - 200


def sphere_labels(batch: int, size: int, device: torch.device) -> torch.Tensor:
    """(batch, 1, size^3) float32 labels: one sphere of radius size / 6 per volume, placed per sample."""
    c = torch.arange(size, device=device, dtype=torch.float32)
    zz, yy, xx = torch.meshgrid(c, c, c, indexing="ij")
    out = torch.empty(batch, 1, size, size, size, device=device)
    for i in range(batch):
        cz, cy, cx = (size * (0.3 + 0.4 * ((i * f) % 7) / 6) for f in (1, 3, 5))
        out[i, 0] = (((zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2) < (size / 6) ** 2).float()
    return out


def he_patches(n: int, size: int = 224) -> torch.Tensor:
    """(n, 3, size, size) uint8 crops of scikit-image's immunohistochemistry image (and its mirror)."""
    from skimage import data

    img = torch.from_numpy(data.immunohistochemistry()).permute(2, 0, 1)
    big = torch.cat([img, img.flip(-1)], -1)  # 512 x 1024, so crops vary
    g = torch.Generator().manual_seed(0)
    ys = torch.randint(0, 512 - size, (n,), generator=g)
    xs = torch.randint(0, 1024 - size, (n,), generator=g)
    crops = [big[:, y : y + size, x : x + size] for y, x in zip(ys.tolist(), xs.tolist())]
    return torch.stack(crops).contiguous()


# --------------------------------------------------------------------------- benchmarks
def bench_radiology_chain(device: torch.device, size: int, batch: int, repeats: int) -> dict[str, Any]:
    """ScaleIntensityRange -> RandAffine -> RandGaussianNoise: MONAI per sample vs ours batched."""
    from monai.transforms import Compose, RandAffine, RandGaussianNoise, ScaleIntensityRange

    x = ct_volumes(batch, size, device)
    monai_chain = Compose(
        [
            ScaleIntensityRange(a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True),
            RandAffine(prob=1.0, rotate_range=ROTATE, scale_range=SCALE, padding_mode="zeros", device=device),
            RandGaussianNoise(prob=1.0, std=STD),
        ]
    ).set_random_state(0)
    ours = B.BatchAugChain(
        [
            B.BatchHUWindow(-1000, 1000, check_finite=False),
            B.BatchRandAffine(prob=1.0, rotate_range=ROTATE, scale_range=SCALE, padding_mode="zeros", seed=0),
            B.BatchRandGaussianNoise(prob=1.0, std=STD, seed=0),
        ],
        check_finite=False,
    )

    def run_monai() -> None:
        for i in range(batch):
            monai_chain(x[i])

    def run_ours() -> None:
        with torch.no_grad():
            ours(x)

    res = compare(run_monai, batch, run_ours, batch, repeats, device)
    return {
        "benchmark": "radiology_3d_chain",
        "chain": "ScaleIntensityRange->RandAffine->RandGaussianNoise",
        "unit": "volumes/s",
        "shape": [1, size, size, size],
        "batch": batch,
        **res,
    }


def bench_macenko(device: torch.device, batch: int, repeats: int) -> dict[str, Any]:
    """Batched Macenko fit + normalise vs MONAI NormalizeHEStains per patch (numpy)."""
    from monai.apps.pathology.transforms import NormalizeHEStains

    x = he_patches(batch).to(device)
    base = [p.permute(1, 2, 0).numpy().copy() for p in he_patches(min(batch, 64))]
    norm = B.BatchMacenkoNormalize(validate=False).to(device)
    monai_norm = NormalizeHEStains()
    res = compare(lambda: [monai_norm(p) for p in base], len(base), lambda: norm(x), batch, repeats, device)
    return {
        "benchmark": "macenko",
        "baseline": "monai.NormalizeHEStains per patch",
        "unit": "patches/s",
        "patch": 224,
        "batch": batch,
        **res,
    }


def _hed_numpy(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tellez et al. HED jitter of one HWC uint8 patch with scikit-image (the per-patch baseline)."""
    from skimage import color

    hed = color.rgb2hed(img)
    hed = hed * rng.uniform(0.95, 1.05, 3) + rng.uniform(-0.05, 0.05, 3)
    return (color.hed2rgb(hed) * 255).astype(np.uint8)


def bench_hed_jitter(device: torch.device, batch: int, repeats: int) -> dict[str, Any]:
    """BatchHEDJitter vs scikit-image rgb2hed / hed2rgb per patch."""
    x = he_patches(batch).to(device)
    base = [p.permute(1, 2, 0).numpy().copy() for p in he_patches(min(batch, 64))]
    aug = B.BatchHEDJitter(prob=1.0, seed=0, check_finite=False)
    rng = np.random.default_rng(0)
    res = compare(
        lambda: [_hed_numpy(p, rng) for p in base], len(base), lambda: aug(x), batch, repeats, device
    )
    return {
        "benchmark": "hed_jitter",
        "baseline": "skimage rgb2hed/hed2rgb per patch (MONAI has no HED augmentation)",
        "unit": "patches/s",
        "patch": 224,
        "batch": batch,
        **res,
    }


def bench_training_pipeline(
    device: torch.device, size: int, crop: int, batch: int, repeats: int
) -> dict[str, Any]:
    """Image + label training augmentation: MONAI dictionary transforms per sample vs one batched chain."""
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandGaussianNoised,
        ScaleIntensityRanged,
    )

    x, lab = ct_volumes(batch, size, device), sphere_labels(batch, size, device)
    keys = ("image", "label")
    monai_chain = Compose(
        [
            ScaleIntensityRanged("image", a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True),
            RandCropByPosNegLabeld(keys, "label", (crop,) * 3, pos=1, neg=1, num_samples=1),
            RandAffined(
                keys,
                prob=1.0,
                rotate_range=ROTATE,
                scale_range=SCALE,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
                device=device,
            ),
            *[RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(3)],
            RandAdjustContrastd("image", prob=0.5, gamma=GAMMA),
            RandGaussianNoised("image", prob=1.0, std=STD),
        ]
    ).set_random_state(0)
    ours = B.BatchAugChain(
        [
            B.BatchHUWindow(-1000, 1000, check_finite=False),
            B.BatchLabelBalancedCrop((crop,) * 3, num_samples=1, ratios=(1.0, 1.0), seed=0),
            B.BatchRandAffine(prob=1.0, rotate_range=ROTATE, scale_range=SCALE, padding_mode="zeros", seed=0),
            B.BatchRandFlip(prob=1.0, seed=0),
            B.BatchRandGamma(prob=0.5, gamma=GAMMA, seed=0),
            B.BatchRandGaussianNoise(prob=1.0, std=STD, seed=0),
        ],
        check_finite=False,
    )

    def run_monai() -> None:
        for i in range(batch):
            monai_chain({"image": x[i], "label": lab[i]})

    def run_ours() -> None:
        with torch.no_grad():
            ours(x, lab)

    res = compare(run_monai, batch, run_ours, batch, repeats, device)
    return {
        "benchmark": "training_pipeline_3d",
        "chain": "HUWindow->LabelBalancedCrop->RandAffine(image bilinear, label nearest)->RandFlip x3"
        "->RandGamma(p=0.5)->RandGaussianNoise",
        "unit": "samples/s",
        "shape": [1, size, size, size],
        "crop": [crop] * 3,
        "batch": batch,
        **res,
    }


# --------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="CPU-sized: 96^3 x 4 volumes, 32 patches")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5, 2 with --small)")
    p.add_argument("--out", default=None, help="also write the JSON lines to this file")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    p.add_argument("--size", type=int, default=None, help="3D volume edge (default 160, 96 with --small)")
    p.add_argument("--volumes", type=int, default=None, help="3D batch (default 16, 4 with --small)")
    p.add_argument("--crop", type=int, default=None, help="pipeline crop edge (default 96, 64 with --small)")
    p.add_argument("--patches", type=int, default=None, help="patch batch (default 256, 32 with --small)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: OMP_NUM_THREADS)")
    a = p.parse_args(argv)
    defaults = {
        "size": (96, 160),
        "volumes": (4, 16),
        "crop": (64, 96),
        "patches": (32, 256),
        "repeats": (2, 5),
    }
    for name, (small, full) in defaults.items():
        if getattr(a, name) is None:
            setattr(a, name, small if a.small else full)
    a.crop = min(a.size, a.crop)
    if min(a.size, a.volumes, a.crop, a.patches, a.repeats) < 1:
        p.error("--size, --volumes, --crop, --patches and --repeats must be >= 1")
    return a


def write_lines(lines: list[str], path: str) -> None:
    """Write JSON lines atomically (temporary file in the target folder, then rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write("".join(line + "\n" for line in lines))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    info = run_info(device, a.repeats)
    runs = {
        "radiology_3d_chain": lambda: bench_radiology_chain(device, a.size, a.volumes, a.repeats),
        "macenko": lambda: bench_macenko(device, a.patches, a.repeats),
        "hed_jitter": lambda: bench_hed_jitter(device, a.patches, a.repeats),
        "training_pipeline_3d": lambda: bench_training_pipeline(device, a.size, a.crop, a.volumes, a.repeats),
    }
    results, lines = [], []
    for name in a.only:
        res = {**runs[name](), **info}
        results.append(res)
        lines.append(json.dumps(res))
        print(lines[-1], flush=True)
    if a.out:
        write_lines(lines, a.out)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
