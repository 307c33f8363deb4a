"""Benchmark: CT UNet training step rate, bare model step vs MONAI's fast-training recipe vs our pipeline.

All pipelines train the CT UNet of the ``ct_organ_segmentation`` bundle
(``monai_ext.networks.segmentation.build_unet``, 3D, channels 16-256, 2 residual units, instance norm,
6 classes, DiceCE, Adam) in the same process, on the same device and synthetic volumes
(``monai.data.create_test_image_3d``), with AMP (float16 autocast + GradScaler) on CUDA:

- ``bare_step``: one device-resident batch, no data pipeline: the upper bound.
- ``monai_fast_training``: MONAI's fast-training recipe: ``CacheDataset`` with the volumes (and their
  ``FgBgToIndicesd`` indices) cached on the device, ``ThreadDataLoader``, per-sample
  ``RandCropByPosNegLabeld`` (``num_samples`` crops per volume) + ``RandFlipd`` x3 + ``RandRotate90d`` +
  ``RandShiftIntensityd``.
- ``monai_fast_training_affine_noise``: the same plus ``RandAffined`` and ``RandGaussianNoised``.
- ``ours`` / ``ours_affine_noise``: volumes cached on the device (``CacheDataset`` + ``ThreadDataLoader``
  of whole volumes), then one batched call on the device through
  :class:`~monai_ext.transforms.batch.hook.GPUAugmentPrepareBatch`: ``BatchLabelBalancedCrop`` +
  ``BatchRandFlip`` + rot90 + intensity shift (+ ``BatchRandAffine`` + ``BatchRandGaussianNoise``),
  with the same probabilities and ranges as the MONAI recipe.

Pipelines are timed in interleaved rounds (each round: every pipeline, ``warmup`` untimed then
``iterations`` timed steps), so load changes on a shared machine affect them alike. One JSON line per
pipeline (best-round samples/s, median, ratio to the bare step) and a summary line.

Usage:
    python benchmarks/training.py                      # 96^3 patches, 16 per step, cuda if available
    python benchmarks/training.py --small              # 48^3 patches, 4 per step (CPU-feasible)
    python benchmarks/training.py --device cpu --small --iterations 4 --out results.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import monai
import numpy as np
import torch
from monai.data import CacheDataset, ThreadDataLoader, create_test_image_3d
from monai.losses import DiceCELoss
from monai.transforms import (
    Compose,
    EnsureTyped,
    FgBgToIndicesd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandShiftIntensityd,
)
from monai.utils import set_determinism

from monai_ext.networks.segmentation import build_unet
from monai_ext.transforms.batch import (
    BatchAugChain,
    BatchAugmentation,
    BatchLabelBalancedCrop,
    BatchRandAffine,
    BatchRandFlip,
    BatchRandGaussianNoise,
    BatchRandRot90,
    BatchRandShiftIntensity,
    GPUAugmentPrepareBatch,
)

PIPELINES = (
    "bare_step",
    "monai_fast_training",
    "monai_fast_training_affine_noise",
    "ours",
    "ours_affine_noise",
)
# augmentation settings shared by MONAI's recipe and ours
FLIP_PROB, ROT90_PROB, SHIFT_PROB, SHIFT = 0.5, 0.5, 0.5, 0.1
AFFINE_PROB, ROTATE, SCALE = 0.5, (0.26, 0.26, 0.26), (0.1, 0.1, 0.1)
NOISE_PROB, NOISE_STD = 0.5, 0.05


@dataclasses.dataclass
class TrainingBenchConfig:
    """Sizes of one benchmark run (``--small`` and the defaults are two of these)."""

    patch: int = 96
    batch: int = 16
    num_samples: int = 4
    volume: tuple[int, int, int] = (160, 160, 128)
    num_volumes: int = 16
    iterations: int = 20
    warmup: int = 3
    rounds: int = 3
    num_classes: int = 6
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    num_res_units: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch % self.num_samples:
            raise ValueError(
                f"batch ({self.batch}) must be a multiple of num_samples ({self.num_samples}): "
                "each step takes batch / num_samples volumes"
            )
        if any(self.patch > v for v in self.volume):
            raise ValueError(f"patch {self.patch} does not fit in volume {self.volume}")


SMALL = TrainingBenchConfig(
    patch=48, batch=4, num_samples=4, volume=(64, 64, 64), num_volumes=8, iterations=3, warmup=1, rounds=2
)


# ----------------------------------------------------------------------------------------------- pipelines
def _volumes(cfg: TrainingBenchConfig) -> list[dict[str, np.ndarray]]:
    rs = np.random.RandomState(cfg.seed)
    out = []
    for _ in range(cfg.num_volumes):
        img, lab = create_test_image_3d(
            *cfg.volume,
            num_objs=12,
            rad_max=max(6, min(cfg.volume) // 6),
            rad_min=3,
            noise_max=0.2,
            num_seg_classes=cfg.num_classes - 1,
            channel_dim=0,
            random_state=rs,
        )
        out.append({"image": img.astype(np.float32), "label": lab.astype(np.float32)})
    return out


def _monai_loader(data: list[dict], cfg: TrainingBenchConfig, device: torch.device, heavy: bool):
    keys = ["image", "label"]
    size = (cfg.patch,) * 3
    random = [
        RandCropByPosNegLabeld(
            keys,
            label_key="label",
            spatial_size=size,
            pos=1,
            neg=1,
            num_samples=cfg.num_samples,
            fg_indices_key="label_fg",
            bg_indices_key="label_bg",
        ),
        RandFlipd(keys, prob=FLIP_PROB, spatial_axis=0),
        RandFlipd(keys, prob=FLIP_PROB, spatial_axis=1),
        RandFlipd(keys, prob=FLIP_PROB, spatial_axis=2),
        RandRotate90d(keys, prob=ROT90_PROB, max_k=3),
        RandShiftIntensityd("image", offsets=SHIFT, prob=SHIFT_PROB),
    ]
    if heavy:
        random += [
            RandAffined(
                keys,
                spatial_size=size,
                prob=AFFINE_PROB,
                rotate_range=ROTATE,
                scale_range=SCALE,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
                device=device,
            ),
            RandGaussianNoised("image", prob=NOISE_PROB, std=NOISE_STD),
        ]
    transform = Compose(
        [
            FgBgToIndicesd("label", fg_postfix="_fg", bg_postfix="_bg"),
            EnsureTyped(keys, device=device, track_meta=False),
            *random,
        ]
    ).set_random_state(cfg.seed)
    ds = CacheDataset(data, transform, cache_rate=1.0, num_workers=0, copy_cache=False, progress=False)
    return ThreadDataLoader(ds, batch_size=cfg.batch // cfg.num_samples, shuffle=True, num_workers=0)


def _ours_loader(data: list[dict], cfg: TrainingBenchConfig, device: torch.device):
    ds = CacheDataset(
        data,
        EnsureTyped(["image", "label"], device=device, track_meta=False),
        cache_rate=1.0,
        num_workers=0,
        progress=False,
    )
    return ThreadDataLoader(ds, batch_size=cfg.batch // cfg.num_samples, shuffle=True, num_workers=0)


def _ours_prepare(cfg: TrainingBenchConfig, heavy: bool) -> GPUAugmentPrepareBatch:
    s = cfg.seed
    augs: list[BatchAugmentation] = [
        BatchLabelBalancedCrop((cfg.patch,) * 3, num_samples=cfg.num_samples, ratios=(1.0, 1.0), seed=s),
        BatchRandFlip(prob=1.0, seed=s + 1),  # each axis with probability 0.5, as 3 RandFlipd(prob=0.5)
        BatchRandRot90(prob=ROT90_PROB, max_k=3, seed=s + 2),
        BatchRandShiftIntensity(prob=SHIFT_PROB, offset=SHIFT, seed=s + 3),
    ]
    if heavy:
        augs += [
            BatchRandAffine(prob=AFFINE_PROB, rotate_range=ROTATE, scale_range=SCALE, seed=s + 4),
            BatchRandGaussianNoise(prob=NOISE_PROB, std=NOISE_STD, sample_std=False, seed=s + 5),
        ]
    return GPUAugmentPrepareBatch(BatchAugChain(augs, check_finite=False))


def _forever(loader) -> Iterator[Any]:
    return itertools.chain.from_iterable(itertools.repeat(loader))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Step:
    """One optimisation step of the CT UNet (AMP with GradScaler on CUDA)."""

    def __init__(self, cfg: TrainingBenchConfig, device: torch.device) -> None:
        torch.manual_seed(cfg.seed)
        self.net = build_unet(
            3,
            1,
            cfg.num_classes,
            channels=cfg.channels,
            strides=[2] * (len(cfg.channels) - 1),
            num_res_units=cfg.num_res_units,
            norm="INSTANCE",
        ).to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-4)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.device = device

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.amp):
            loss = self.loss(self.net(x), y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return loss.detach()


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.as_tensor() if hasattr(t, "as_tensor") else t


def _timed(next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]], step: _Step, cfg, device) -> dict:
    """``warmup`` untimed steps (they also drain a loader's prefetched batch), then ``iterations`` timed."""
    for _ in range(cfg.warmup):
        step(*next_batch())
    _sync(device)
    t0 = time.perf_counter()
    losses = []
    for _ in range(cfg.iterations):
        x, y = next_batch()
        if x.shape[0] != cfg.batch or tuple(x.shape[2:]) != (cfg.patch,) * 3:
            raise RuntimeError(f"pipeline produced a batch of shape {tuple(x.shape)}")
        losses.append(step(x, y))
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rate": cfg.batch * cfg.iterations / seconds, "loss": float(losses[-1])}


def _pipeline(name: str, cfg: TrainingBenchConfig, device: torch.device, data: list[dict]):
    """``next_batch()`` of pipeline ``name``, returning ``(image, label)`` on ``device``."""
    if name == "bare_step":
        g = torch.Generator(device=device).manual_seed(cfg.seed)
        x = torch.rand((cfg.batch, 1) + (cfg.patch,) * 3, generator=g, device=device)
        y = torch.randint(0, cfg.num_classes, x.shape, generator=g, device=device).float()
        return lambda: (x, y)
    if name.startswith("monai"):
        it = _forever(_monai_loader(data, cfg, device, heavy=name.endswith("affine_noise")))

        def next_monai():
            b = next(it)
            return _plain(b["image"]).to(device), _plain(b["label"]).to(device)

        return next_monai
    it_ours = _forever(_ours_loader(data, cfg, device))
    prep = _ours_prepare(cfg, heavy=name.endswith("affine_noise"))
    return lambda: prep(next(it_ours), device)


def run_training_benchmark(
    cfg: TrainingBenchConfig, device: str | torch.device, pipelines: Sequence[str] = PIPELINES
) -> list[dict[str, Any]]:
    """Measure ``pipelines`` (``bare_step`` included) in ``cfg.rounds`` interleaved rounds; one record each.

    Each round times every pipeline in turn (``warmup`` + ``iterations`` steps), so load changes on a
    shared machine hit all pipelines alike; ``samples_per_s`` is the best round, ``median`` the median.
    """
    device = torch.device(device)
    unknown = [p for p in pipelines if p not in PIPELINES]
    if unknown or "bare_step" not in pipelines:
        raise ValueError(
            f"pipelines must include 'bare_step' and come from {PIPELINES}, got {list(pipelines)}"
        )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    set_determinism(cfg.seed)
    data = _volumes(cfg)
    names = ["bare_step", *[p for p in PIPELINES if p in pipelines and p != "bare_step"]]
    setups = {n: (_Step(cfg, device), _pipeline(n, cfg, device, data)) for n in names}
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for _ in range(cfg.rounds):
        for n in names:
            step, next_batch = setups[n]
            runs[n].append(_timed(next_batch, step, cfg, device))
    records = []
    for n in names:
        rates = [r["rate"] for r in runs[n]]
        loss = runs[n][-1]["loss"]
        if not math.isfinite(loss):
            raise RuntimeError(f"{n}: non-finite loss {loss}")
        records.append(
            {
                "pipeline": n,
                "samples_per_s": max(rates),
                "samples_per_s_median": float(np.median(rates)),
                "seconds": sum(r["seconds"] for r in runs[n]),
                "final_loss": loss,
            }
        )
    bare = records[0]["samples_per_s"]
    for r in records:
        r["ratio_to_bare"] = r["samples_per_s"] / bare
    return records


def _json_records(
    records: list[dict], cfg: TrainingBenchConfig, device: torch.device, threads: int
) -> list[dict]:
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    common = {
        "benchmark": "training_ct_unet",
        "device": f"{device.type}:{dev_name}",
        "threads": threads if device.type == "cpu" else None,
        "amp": device.type == "cuda",
        "patch": [cfg.patch] * 3,
        "batch": cfg.batch,
        "num_samples": cfg.num_samples,
        "volume": list(cfg.volume),
        "num_volumes": cfg.num_volumes,
        "iterations": cfg.iterations,
        "warmup": cfg.warmup,
        "rounds": cfg.rounds,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "date": datetime.date.today().isoformat(),
    }
    out = [
        {
            **common,
            "pipeline": r["pipeline"],
            "samples_per_s": round(r["samples_per_s"], 3),
            "samples_per_s_median": round(r["samples_per_s_median"], 3),
            "ratio_to_bare": round(r["ratio_to_bare"], 3),
            "seconds": round(r["seconds"], 3),
            "final_loss": round(r["final_loss"], 4),
        }
        for r in records
    ]
    summary = {
        **common,
        "pipeline": "summary",
        "samples_per_s": {r["pipeline"]: round(r["samples_per_s"], 3) for r in records},
        "ratio_to_bare": {r["pipeline"]: round(r["ratio_to_bare"], 3) for r in records},
    }
    return out + [summary]


def _write_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".training.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="48^3 patches, 4 per step, 8 volumes of 64^3 (CPU)")
    p.add_argument("--iterations", type=int, default=None, help="timed steps per pipeline and round")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per pipeline and round")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (best one reported)")
    p.add_argument("--pipelines", default=",".join(PIPELINES), help="comma-separated subset")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", default=None, help="also write the JSON lines to this file")
    a = p.parse_args(argv)
    cfg = dataclasses.replace(SMALL) if a.small else TrainingBenchConfig()
    if a.iterations is not None:
        cfg.iterations = a.iterations
    if a.warmup is not None:
        cfg.warmup = a.warmup
    if a.rounds is not None:
        cfg.rounds = a.rounds
    if cfg.iterations < 1 or cfg.warmup < 0 or cfg.rounds < 1:
        p.error("--iterations and --rounds must be >= 1, --warmup >= 0")
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    records = _json_records(
        run_training_benchmark(cfg, device, a.pipelines.split(",")), cfg, device, a.threads
    )
    lines = "".join(json.dumps(r) + "\n" for r in records)
    print(lines, end="", flush=True)
    if a.out:
        _write_atomic(a.out, lines)
    return records


if __name__ == "__main__":
    main()
