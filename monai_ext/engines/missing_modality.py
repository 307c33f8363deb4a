"""Train and evaluate segmentation networks with MRI sequences missing: one ModDrop schedule for every model.

The core of ``benchmarks/multimodal_missing.py`` and of tutorial 04, which compare the multimodal
fusion network (:class:`~monai_ext.networks.segmentation.MultiEncoderFusionUNet`) with channel
stacking (a MONAI UNet on the ``M`` stacked sequences) when a sequence is missing:

- :func:`load_multimodal_split` reads splits of a ``dataset.json`` (the synthetic
  ``mri_brain_multimodal`` layout) into memory: ``(N, M*C, *spatial)`` z-scored images (MONAI's
  ``LoadImaged`` + ``Orientationd`` + :class:`~monai_ext.transforms.dictionary.NonzeroZScored`) and
  ``(N, 1, *spatial)`` integer labels;
- :func:`train_with_modality_dropout` is a plain training loop (DiceCE loss, AdamW, cosine schedule)
  whose random draws (case order, flips, and the modality dropout of
  :class:`~monai_ext.networks.blocks.ModalityDropout`) depend only on ``seed``, epoch and step, so two
  models trained with the same ``seed`` see the **same batches with the same sequences zeroed**.
  Networks whose ``forward`` takes ``presence`` receive the presence mask after dropout;
- :func:`evaluate_missing_modalities` scores whole tumour / tumour core / enhancing tumour Dice
  (BraTS regions: label > 0, labels 1 + 3, label 3) with all sequences and with each scenario of
  missing sequences (their channels zeroed, as in the multimodal convention).

Example:
    >>> import torch
    >>> from monai_ext.networks import build_unet
    >>> images, labels = torch.randn(2, 2, 16, 16, 16), torch.randint(0, 4, (2, 1, 16, 16, 16))
    >>> net = build_unet(3, 2, 4, channels=(4, 8), strides=(2,), num_res_units=1)
    >>> losses = train_with_modality_dropout(net, images, labels, epochs=1, num_modalities=2)
    >>> scores = evaluate_missing_modalities(net, images, labels, ("t1", "t2"))
    >>> sorted(scores), sorted(scores["all"])
    (['all', 'missing_t1', 'missing_t2'], ['dice_et', 'dice_tc', 'dice_wt', 'n_cases'])
"""

from __future__ import annotations

import inspect
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import load_decathlon_datalist
from monai.losses import DiceCELoss
from monai.metrics import compute_dice
from monai.transforms import Compose, EnsureTyped, LoadImaged, Orientationd
from torch import nn

from monai_ext.networks.blocks import ModalityDropout
from monai_ext.transforms.dictionary import NonzeroZScored

__all__ = [
    "REGIONS",
    "evaluate_missing_modalities",
    "load_multimodal_split",
    "missing_scenarios",
    "predict_labels",
    "region_dice",
    "scenario_name",
    "train_with_modality_dropout",
    "zero_modalities",
]

#: BraTS evaluation regions: name -> label values (whole tumour, tumour core, enhancing tumour)
REGIONS: dict[str, tuple[int, ...]] = {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)}


def load_multimodal_split(
    dataset_dir: str | os.PathLike, splits: Sequence[str] = ("test",), orientation: str = "RAS"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load the cases of ``splits`` of ``dataset_dir/dataset.json`` as ``(images, labels)`` tensors.

    Each entry is ``{"image": [one file per sequence], "label": file}`` (paths relative to
    ``dataset_dir``); the sequences of a case are stacked as channels in the listed order and z-scored
    over their non-zero voxels. All cases must share one grid.

    Raises:
        FileNotFoundError: no ``dataset.json`` in ``dataset_dir``.
        ValueError: a split is missing or empty, an entry has no ``label``, or the grids differ.

    Example:
        >>> # images, labels = load_multimodal_split(generate("mri_brain_multimodal", d, n=5), ("training",))
    """
    root = Path(dataset_dir)
    datalist_file = root / "dataset.json"
    if not datalist_file.is_file():
        raise FileNotFoundError(f"load_multimodal_split: `dataset_dir` {str(root)!r} has no dataset.json.")
    available = json.loads(datalist_file.read_text())
    items: list[dict] = []
    for split in splits:
        if not available.get(split):
            raise ValueError(
                f"load_multimodal_split: split {split!r} of {datalist_file} is missing or empty; "
                f"expected one of {sorted(k for k, v in available.items() if isinstance(v, list) and v)}."
            )
        items += load_decathlon_datalist(str(datalist_file), True, split, str(root))
    for d in items:
        if "label" not in d:
            raise ValueError(f"load_multimodal_split: entry {d['image']} of {datalist_file} has no `label`.")
    load = Compose(
        [
            LoadImaged(keys=("image", "label"), image_only=True, ensure_channel_first=True),
            Orientationd(
                keys=("image", "label"), axcodes=orientation, labels=(("L", "R"), ("P", "A"), ("I", "S"))
            ),
            NonzeroZScored(keys="image"),
            EnsureTyped(keys=("image", "label"), data_type="tensor", track_meta=False),
        ]
    )
    images, labels = [], []
    for d in items:
        case = load(d)
        image, label = case["image"].float(), case["label"].round().long()
        if images and (image.shape != images[0].shape or label.shape[1:] != image.shape[1:]):
            raise ValueError(
                f"load_multimodal_split: case {d['label']} has image {list(image.shape)} and label "
                f"{list(label.shape)}; expected image {list(images[0].shape)} and label on the same grid."
            )
        images.append(image)
        labels.append(label)
    return torch.stack(images), torch.stack(labels)


def missing_scenarios(sequences: Sequence[str]) -> list[tuple[str, ...]]:
    """All sequences present, then each one missing.

    Example:
        >>> missing_scenarios(("t1", "t2"))
        [(), ('t1',), ('t2',)]
    """
    return [()] + [(s,) for s in sequences]


def scenario_name(missing: Sequence[str]) -> str:
    """``"all"`` or ``"missing_<seq>[_<seq>...]"`` (the names of the bundle's evaluation).

    Example:
        >>> scenario_name(()), scenario_name(("t1c", "flair"))
        ('all', 'missing_t1c_flair')
    """
    return "missing_" + "_".join(missing) if missing else "all"


def zero_modalities(
    images: torch.Tensor, missing: Sequence[int], num_modalities: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero the channels of the modalities ``missing`` (indices); return ``(images, presence (B, M))``.

    Example:
        >>> x, p = zero_modalities(torch.ones(1, 4, 2, 2), [1], 2)
        >>> x[0, :, 0, 0].tolist(), p.tolist()
        ([1.0, 1.0, 0.0, 0.0], [[True, False]])
    """
    b, c = images.shape[:2]
    if num_modalities < 1 or c % num_modalities:
        raise ValueError(
            f"zero_modalities: `images` has {c} channels, "
            f"not a multiple of `num_modalities` {num_modalities}."
        )
    bad = [m for m in missing if not 0 <= m < num_modalities]
    if bad:
        raise ValueError(f"zero_modalities: `missing` indices {bad} outside [0, {num_modalities}).")
    presence = torch.ones(b, num_modalities, dtype=torch.bool, device=images.device)
    if not missing:
        return images, presence
    presence[:, list(missing)] = False
    weight = presence.to(images.dtype).repeat_interleave(c // num_modalities, dim=1)
    return images * weight.reshape(weight.shape + (1,) * (images.dim() - 2)), presence


def _takes_presence(net: nn.Module) -> bool:
    return "presence" in inspect.signature(net.forward).parameters


def _forward(net: nn.Module, image: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
    return net(image, presence=presence) if _takes_presence(net) else net(image)


def _mix(*values: int) -> int:
    """A seed for ``torch.manual_seed`` from a tuple of non-negative integers."""
    return int(np.random.SeedSequence(list(values)).generate_state(1, dtype=np.uint64)[0] >> 1)


def _device_of(net: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    p = next(net.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _check_pair(images: torch.Tensor, labels: torch.Tensor, num_modalities: int, name: str) -> None:
    if images.dim() < 4 or labels.dim() != images.dim() or labels.shape[1] != 1:
        raise ValueError(
            f"{name}: `images` must be (N, M*C, *spatial) and `labels` (N, 1, *spatial); "
            f"got {list(images.shape)} and {list(labels.shape)}."
        )
    if labels.shape[0] != images.shape[0] or labels.shape[2:] != images.shape[2:]:
        raise ValueError(
            f"{name}: `labels` {list(labels.shape)} do not match `images` {list(images.shape)} "
            "in cases or spatial size."
        )
    if images.shape[1] % num_modalities:
        raise ValueError(
            f"{name}: `images` has {images.shape[1]} channels, not a multiple of "
            f"`num_modalities` {num_modalities}."
        )


def train_with_modality_dropout(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    num_modalities: int = 4,
    batch_size: int = 2,
    learning_rate: float = 2e-3,
    weight_decay: float = 1e-5,
    drop_prob: float = 0.25,
    num_classes: int = 4,
    flip: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``net`` on whole volumes with modality dropout; return the mean loss of every epoch.

    Args:
        net: segmentation network ``net(image)`` or ``net(image, presence=...)``, output
            ``(B, num_classes, *spatial)``.
            It must not drop modalities itself (build the fusion network with ``modality_dropout=0``):
            the loop applies one :class:`ModalityDropout` whose draws are shared by every model.
        images: ``(N, M*C, *spatial)`` float images (missing sequences all zero).
        labels: ``(N, 1, *spatial)`` integer labels in ``[0, num_classes)``.
        epochs: passes over the cases.
        num_modalities: ``M``.
        batch_size: cases per step (the last step of an epoch may be smaller).
        learning_rate, weight_decay: AdamW; the rate follows a cosine schedule over all steps.
        drop_prob: ModDrop probability per modality (at least one is always kept).
        num_classes: classes of ``labels`` (DiceCE loss over softmax outputs).
        flip: random flips along every spatial axis (one draw per batch).
        seed: fixes case order, flips and dropped modalities (not the weights: seed those yourself).
        device: where to train (default: the device of ``net``'s parameters).
        on_epoch: called as ``on_epoch(epoch, mean_loss)`` after every epoch.

    Example:
        >>> from monai_ext.networks import build_unet
        >>> net = build_unet(2, 2, 2, channels=(4, 8), strides=(2,), num_res_units=1)
        >>> len(train_with_modality_dropout(net, torch.randn(3, 2, 8, 8), torch.zeros(3, 1, 8, 8),
        ...                                 epochs=2, num_modalities=2, num_classes=2))
        2
    """
    name = "train_with_modality_dropout"
    _check_pair(images, labels, num_modalities, name)
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"{name}: `epochs` and `batch_size` must be >= 1, got {epochs}, {batch_size}.")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(
            f"{name}: `labels` must lie in [0, num_classes={num_classes}), "
            f"got [{int(labels.min())}, {int(labels.max())}]."
        )
    inner = [m for m in net.modules() if isinstance(m, ModalityDropout) and m.drop_prob > 0]
    if inner:
        raise ValueError(
            f"{name}: `net` ({type(net).__name__}) applies its own modality dropout "
            f"(drop_prob={inner[0].drop_prob}); build it with modality_dropout=0 so that every model "
            "sees the same dropped sequences."
        )
    dev = _device_of(net, device)
    net = net.to(dev).train()
    images, labels = images.to(dev), labels.to(dev)
    moddrop = ModalityDropout(num_modalities, images.shape[1] // num_modalities, drop_prob).train()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=weight_decay)
    n = images.shape[0]
    steps = math.ceil(n / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps)
    spatial = list(range(2, images.dim()))
    fork_devices = [dev] if dev.type == "cuda" else []
    history: list[float] = []
    for epoch in range(epochs):
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(_mix(seed, epoch))
            order = torch.randperm(n)
        total = 0.0
        for step in range(steps):
            idx = order[step * batch_size : (step + 1) * batch_size].to(dev)
            x, y = images[idx], labels[idx]
            with torch.random.fork_rng(devices=fork_devices):
                torch.manual_seed(_mix(seed, epoch, step + 1))
                axes = [a for a in spatial if flip and bool(torch.rand(()) < 0.5)]
                if axes:
                    x, y = torch.flip(x, axes), torch.flip(y, axes)
                x, presence = moddrop(x)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(_forward(net, x, presence), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{name}: non-finite loss at epoch {epoch}, step {step}.")
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / n)
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    return history


def predict_labels(
    net: nn.Module,
    images: torch.Tensor,
    missing: Sequence[int] = (),
    num_modalities: int = 4,
    size_divisor: int = 8,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Label maps ``(N, 1, *spatial)`` (argmax) of ``net`` with the modalities ``missing`` zeroed.

    Whole volumes, one case at a time, zero-padded to a multiple of ``size_divisor`` (cropped back).

    Example:
        >>> from monai_ext.networks import build_unet
        >>> net = build_unet(2, 2, 3, channels=(4, 8), strides=(2,), num_res_units=1)
        >>> predict_labels(net, torch.randn(2, 2, 12, 12), missing=[1], num_modalities=2).shape
        torch.Size([2, 1, 12, 12])
    """
    dev = _device_of(net, device)
    net = net.to(dev).eval()
    spatial = images.shape[2:]
    pad: list[int] = []
    for s in reversed(spatial):
        pad += [0, (-s) % size_divisor]
    out = []
    with torch.no_grad():
        for i in range(images.shape[0]):
            x, presence = zero_modalities(images[i : i + 1].to(dev), missing, num_modalities)
            logits = _forward(net, F.pad(x, pad), presence)
            crop = (slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)
            out.append(logits[crop].argmax(dim=1, keepdim=True).cpu())
    return torch.cat(out)


def region_dice(pred: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-case Dice of the BraTS regions :data:`REGIONS` (NaN where a region is absent from ``label``).

    Example:
        >>> lab = torch.tensor([[[0, 1, 2, 3]]])
        >>> {k: round(float(v[0]), 2) for k, v in region_dice(lab, lab).items()}
        {'wt': 1.0, 'tc': 1.0, 'et': 1.0}
    """
    if pred.shape != label.shape:
        raise ValueError(f"region_dice: `pred` {list(pred.shape)} and `label` {list(label.shape)} differ.")
    out = {}
    for region, values in REGIONS.items():
        v = torch.tensor(values, device=label.device)
        p = torch.isin(pred, v).float()
        t = torch.isin(label, v).float()
        out[region] = compute_dice(p, t, include_background=True, ignore_empty=True)[:, 0].cpu()
    return out


def evaluate_missing_modalities(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    sequences: Sequence[str],
    scenarios: Sequence[Sequence[str]] | None = None,
    size_divisor: int = 8,
    device: str | torch.device | None = None,
) -> dict[str, dict[str, float]]:
    """Mean region Dice of ``net`` per scenario of missing ``sequences`` (channel order of ``images``).

    Returns ``{scenario_name: {"dice_wt", "dice_tc", "dice_et", "n_cases"}}`` for ``scenarios``
    (default :func:`missing_scenarios`: all present, then each one missing). A region absent from a
    case's label is left out of that region's mean (NaN if it is absent from every case).

    Example:
        >>> from monai_ext.networks import build_unet
        >>> net = build_unet(2, 2, 4, channels=(4, 8), strides=(2,), num_res_units=1)
        >>> r = evaluate_missing_modalities(net, torch.randn(1, 2, 8, 8), torch.ones(1, 1, 8, 8), ["a", "b"])
        >>> list(r), 0.0 <= r["missing_a"]["dice_wt"] <= 1.0
        (['all', 'missing_a', 'missing_b'], True)
    """
    m = len(sequences)
    _check_pair(images, labels, m, "evaluate_missing_modalities")
    results: dict[str, dict[str, float]] = {}
    for missing in missing_scenarios(sequences) if scenarios is None else scenarios:
        unknown = [s for s in missing if s not in sequences]
        if unknown:
            raise ValueError(
                f"evaluate_missing_modalities: scenario {list(missing)} names {unknown}, "
                f"not among `sequences` {list(sequences)}."
            )
        idx = [list(sequences).index(s) for s in missing]
        pred = predict_labels(net, images, idx, m, size_divisor, device)
        dice = region_dice(pred, labels.cpu().long())
        row = {
            f"dice_{k}": float(np.nanmean(v.numpy())) if bool((~v.isnan()).any()) else float("nan")
            for k, v in dice.items()
        }
        results[scenario_name(missing)] = {**row, "n_cases": int(images.shape[0])}
    return results
