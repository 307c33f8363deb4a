"""Missing MRI sequences: multimodal fusion UNet vs channel stacking, whole-tumour Dice (JSON lines).

Issue 5, section 5. On the synthetic ``mri_brain_multimodal`` data (T1, T1c, T2, FLAIR), two models are
trained with the same schedule, the same case order and flips, and the **same random sequence
zeroing** (modality dropout, ModDrop; ``monai_ext.engines.missing_modality``):

- ``fusion``: ``monai_ext.networks.segmentation.MultiEncoderFusionUNet`` (one encoder per sequence,
  HeMIS mean + variance fusion of the skip connections over the sequences present, one decoder); it is
  given the presence mask after dropout;
- ``stacking``: ``monai.networks.nets.UNet`` on the 4 stacked channels (a missing sequence is a zero
  channel), with ``--baseline-width`` times the channels so both have similar parameter counts.

Both are evaluated on the held-out cases (``validation`` + ``test`` splits: there is no model
selection, so neither split is seen in training) with all sequences and with each one missing
(zeroed). One JSON line per model x setting, then a summary line with the two claims of the issue,
measured: (1) fusion within 0.05 whole-tumour Dice of its all-sequence score when any one sequence is
missing; (2) fusion beats stacking by >= 0.10 whole-tumour Dice in every one-missing setting.

Usage::

    python benchmarks/multimodal_missing.py --small                    # CPU: 48x48x32 at 4 mm, small nets
    python benchmarks/multimodal_missing.py --device cuda --epochs 300 # GPU: 96x96x64 at 2 mm
    python benchmarks/multimodal_missing.py --small --out results.json # also write every line to a JSON file
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import monai
import torch

from monai_ext.data.synthetic import cache_root, generate
from monai_ext.data.synthetic.mri_brain import SEQUENCES
from monai_ext.engines.missing_modality import (
    evaluate_missing_modalities,
    load_multimodal_split,
    train_with_modality_dropout,
)
from monai_ext.networks import MultiEncoderFusionUNet, build_unet, count_parameters

__all__ = ["PRESETS", "build_models", "dataset_for", "run_benchmark", "summarise"]

#: field of view of the synthetic head in mm (96 x 96 x 64 voxels at 2 mm); --size keeps it
FIELD_MM = (192.0, 192.0, 128.0)
WITHIN = 0.05
MARGIN = 0.10

PRESETS: dict[str, dict[str, Any]] = {
    # CPU: 24 min measured on 2 busy shared cores (8 epochs = 64 steps of 2 cases)
    "small": {
        "size": (48, 48, 32),
        "cases": 24,
        "epochs": 8,
        "channels": (8, 16, 32),
        "batch_size": 2,
        "learning_rate": 3e-3,
    },
    # GPU: the bundle's grid and network
    "full": {
        "size": (96, 96, 64),
        "cases": 40,
        "epochs": 300,
        "channels": (16, 32, 64, 128),
        "batch_size": 2,
        "learning_rate": 2e-3,
    },
}


def dataset_for(
    size: Sequence[int], cases: int, data_seed: int, root: str | os.PathLike | None = None
) -> Path:
    """The synthetic data set for this grid (generated once, atomically, under ``root`` or the cache)."""
    size = tuple(int(s) for s in size)
    spacing = tuple(f / s for f, s in zip(FIELD_MM, size))
    base = Path(root) if root is not None else cache_root() / "synthetic"
    out = base / f"mri_brain_multimodal-n{cases}-seed{data_seed}-{'x'.join(map(str, size))}"
    if not (out / "dataset.json").is_file():
        generate("mri_brain_multimodal", out, n=cases, seed=data_seed, shape=size, spacing=spacing)
    return out


def build_models(
    channels: Sequence[int], baseline_width: int = 2, seed: int = 0, num_classes: int = 4
) -> dict[str, torch.nn.Module]:
    """``{"fusion": MultiEncoderFusionUNet, "stacking": MONAI UNet}``, each initialised from ``seed``."""
    strides = (2,) * (len(channels) - 1)
    torch.manual_seed(seed)
    fusion = MultiEncoderFusionUNet(
        3,
        len(SEQUENCES),
        1,
        num_classes,
        channels=tuple(channels),
        strides=strides,
        num_res_units=1,
        fusion="hemis",
        modality_dropout=0.0,  # the training loop drops the same sequences for both models
    )
    torch.manual_seed(seed)
    stacking = build_unet(
        3,
        len(SEQUENCES),
        num_classes,
        channels=tuple(baseline_width * c for c in channels),
        strides=strides,
        num_res_units=1,
    )
    return {"fusion": fusion, "stacking": stacking}


def summarise(lines: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The two claims of the issue from the per-setting lines (whole-tumour Dice)."""
    wt = {(d["model"], d["setting"]): d["dice_wt"] for d in lines}
    settings = [d["setting"] for d in lines if d["model"] == "fusion" and d["setting"] != "all"]
    drops = {s: wt["fusion", "all"] - wt["fusion", s] for s in settings}
    margins = {s: wt["fusion", s] - wt["stacking", s] for s in settings}
    worst_drop = max(drops.values())
    min_margin = min(margins.values())
    return {
        "benchmark": "multimodal_missing",
        "summary": True,
        "fusion_dice_wt_all": wt["fusion", "all"],
        "stacking_dice_wt_all": wt["stacking", "all"],
        "fusion_drop_when_missing": {s: round(v, 4) for s, v in drops.items()},
        "fusion_minus_stacking_when_missing": {s: round(v, 4) for s, v in margins.items()},
        "fusion_worst_drop": round(worst_drop, 4),
        "fusion_min_margin_over_stacking": round(min_margin, 4),
        "claim_fusion_within_0_05_of_all_when_one_missing": bool(worst_drop <= WITHIN),
        "claim_fusion_beats_stacking_by_0_10_when_one_missing": bool(min_margin >= MARGIN),
    }


def run_benchmark(
    size: Sequence[int],
    cases: int,
    epochs: int,
    channels: Sequence[int],
    batch_size: int = 2,
    learning_rate: float = 2e-3,
    drop_prob: float = 0.25,
    baseline_width: int = 2,
    seed: int = 0,
    data_seed: int = 0,
    device: str = "cpu",
    data_root: str | os.PathLike | None = None,
    log: bool = False,
) -> dict[str, Any]:
    """Train both models, evaluate every setting; return ``{"lines": [...], "summary": {...}}``."""
    dev = torch.device(device)
    data = dataset_for(size, cases, data_seed, data_root)
    train_x, train_y = load_multimodal_split(data, ("training",))
    test_x, test_y = load_multimodal_split(data, ("validation", "test"))
    common = {
        "benchmark": "multimodal_missing",
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "size": [int(s) for s in size],
        "cases_train": int(train_x.shape[0]),
        "cases_heldout": int(test_x.shape[0]),
        "epochs": epochs,
        "batch_size": batch_size,
        "drop_prob": drop_prob,
        "seed": seed,
        "torch": torch.__version__,
        "monai": monai.__version__,
    }
    lines: list[dict[str, Any]] = []
    for model, net in build_models(channels, baseline_width, seed).items():
        t0 = time.perf_counter()

        def progress(epoch: int, loss: float, model: str = model) -> None:
            if log:
                print(f"# {model} epoch {epoch + 1}/{epochs} loss {loss:.4f}", file=sys.stderr, flush=True)

        losses = train_with_modality_dropout(
            net.to(dev),
            train_x,
            train_y,
            epochs=epochs,
            num_modalities=len(SEQUENCES),
            batch_size=batch_size,
            learning_rate=learning_rate,
            drop_prob=drop_prob,
            seed=seed,
            device=dev,
            on_epoch=progress,
        )
        train_s = time.perf_counter() - t0
        scores = evaluate_missing_modalities(net, test_x, test_y, SEQUENCES, device=dev)
        for setting, row in scores.items():
            line = {
                **common,
                "model": model,
                "network": type(net).__module__ + "." + type(net).__name__,
                "params": count_parameters(net),
                "setting": setting,
                "missing": [] if setting == "all" else setting[len("missing_") :].split("_"),
                **{k: round(v, 4) for k, v in row.items() if k.startswith("dice_")},
                "loss_first_epoch": round(losses[0], 4),
                "loss_last_epoch": round(losses[-1], 4),
                "train_s": round(train_s, 1),
            }
            lines.append(line)
            if log:
                print(json.dumps(line), flush=True)
    summary = {**summarise(lines), **{k: common[k] for k in ("device", "size", "epochs", "seed")}}
    return {"lines": lines, "summary": summary}


def _write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="CPU preset (48x48x32 at 4 mm, small networks)")
    p.add_argument("--size", type=int, nargs=3, default=None, metavar=("H", "W", "D"), help="grid size")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--cases", type=int, default=None, help="synthetic cases (~65%% training)")
    p.add_argument("--channels", type=int, nargs="+", default=None, help="fusion encoder channels per level")
    p.add_argument("--baseline-width", type=int, default=2, help="stacking UNet channels = this x --channels")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--drop-prob", type=float, default=0.25, help="modality dropout probability")
    p.add_argument("--seed", type=int, default=0, help="weights, case order, flips, dropped sequences")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data set")
    p.add_argument("--data-root", default=None, help="where the data set is generated (default: cache)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=None, help="also write all lines to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = PRESETS["small" if args.small else "full"]
    size = tuple(args.size) if args.size else preset["size"]
    if any(s < 32 or s % 2 ** (len(args.channels or preset["channels"]) - 1) for s in size):
        p.error(f"--size {list(size)}: each side must be >= 32 and divisible by 2^(levels - 1)")
    started = time.perf_counter()
    result = run_benchmark(
        size=size,
        cases=args.cases or preset["cases"],
        epochs=args.epochs or preset["epochs"],
        channels=args.channels or preset["channels"],
        batch_size=args.batch_size or preset["batch_size"],
        learning_rate=args.lr or preset["learning_rate"],
        drop_prob=args.drop_prob,
        baseline_width=args.baseline_width,
        seed=args.seed,
        data_seed=args.data_seed,
        device=args.device,
        data_root=args.data_root,
        log=True,
    )
    result["summary"].update(
        runtime_s=round(time.perf_counter() - started, 1),
        machine=f"{platform.machine()} {platform.processor() or platform.system()}".strip(),
        date=datetime.date.today().isoformat(),
        command="python " + " ".join([Path(__file__).name, *(argv if argv is not None else sys.argv[1:])]),
    )
    print(json.dumps(result["summary"]), flush=True)
    if args.out is not None:
        _write_json_atomic(args.out, result)
    return result


if __name__ == "__main__":
    main()
