"""Per-case attribution maps for image + tabular networks during a bundle's inference: one switch.

:class:`ImageTabularAttributionSaver` runs after every evaluator iteration and writes, per case, into
``output_dir``:

- ``<case>_attribution.nii.gz``: Grad-CAM (or Grad-CAM++ / occlusion) of the explained output over the
  image, in ``[0, 1]``; inverted onto the input image's original grid (``monai.transforms.Invertd``) when
  ``transform`` (the inference preprocessing) is given and the image carries its applied operations,
  else on the network-input grid with that grid's affine;
- ``<case>_attribution.png``: the map over one axial slice of the network input (the central slice, or
  the slice where the map peaks), shown with the patient's right on the left and anterior up for RAS
  inputs;
- ``<case>_tabular_attribution.csv``: ``feature,encoded_value,attribution``: integrated gradients of the
  explained output per clinical variable, from a reference row (``baseline``, default 0: the encoding's
  centre, e.g. a typical patient) to the case's row, the image held fixed. The attributions sum to
  ``f(case) - f(reference row)``; a missing value (empty ``encoded_value``) gets the effect of being
  missing (:func:`monai_ext.explain.tabular_integrated_gradients`).

``<case>`` is the batch's ``name_key`` value (e.g. ``patient_id``; characters other than letters,
digits, ``.``, ``_`` and ``-`` become ``_``), else the image file name, else the case index. Every file
is written to a temporary name and renamed.

Bundle config (``inference.json``)::

    "write_attribution": false,
    {"_target_": "monai_ext.explain.image_tabular.ImageTabularAttributionSaver",
     "enabled": "@write_attribution", "output_dir": "$os.path.join(@output_dir, 'attribution')",
     "feature_names": "@tabular_columns", "transform": "@preprocessing"}

Example:
    >>> saver = ImageTabularAttributionSaver("unused", enabled=False, feature_names=["age", "sex"])
    >>> saver.method, saver.png_slice
    ('gradcam', 'center')
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_ext.data.atomic import write_bytes_atomic
from monai_ext.explain.cam import grad_cam
from monai_ext.explain.occlusion import occlusion_map
from monai_ext.explain.overlay import save_attribution_nifti, save_attribution_png
from monai_ext.explain.tabular import tabular_integrated_gradients

__all__ = ["ImageTabularAttributionSaver"]

METHODS = ("gradcam", "gradcampp", "occlusion")
PNG_SLICES = ("center", "peak")


def _case_name(value: Any, image: Any, index: int) -> str:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if value is not None and str(value).strip():
        return re.sub(r"[^A-Za-z0-9._-]", "_", str(value).strip())
    meta = getattr(image, "meta", None) or {}
    src = meta.get("filename_or_obj")
    if src:
        base = os.path.basename(str(src))
        for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".dcm"):
            if base.lower().endswith(ext):
                return base[: -len(ext)]
        return os.path.splitext(base)[0]
    return f"{index:06d}"


def _axial_view(x: torch.Tensor, index: int) -> torch.Tensor:
    """``(C, X, Y, Z)`` -> ``(C, Y, X)`` slice ``index`` of the last axis, rows = -Y, columns = -X (RAS)."""
    return torch.flip(x[..., index].transpose(-1, -2), dims=(-2, -1))


class ImageTabularAttributionSaver:
    """Write image (NIfTI + PNG) and tabular (CSV) attributions per case after each evaluator iteration.

    Args:
        output_dir: folder for the files (created).
        enabled: the bundle switch; ``False`` attaches nothing.
        feature_names: one name per tabular column (CSV rows, in order).
        method: image attribution, ``"gradcam"``, ``"gradcampp"`` or ``"occlusion"``.
        image_key, tabular_key: batch keys of the two network inputs (``network(image, tabular=...)``).
        name_key: batch key naming the case (e.g. ``patient_id``); ``None`` = image file name or index.
        output_idx: output column to explain; ``None`` = the argmax (column 0 of a Cox head).
        transform: the inference preprocessing; with it the NIfTI map is inverted onto the input's grid.
        png_slice: ``"center"`` (central axial slice) or ``"peak"`` (the slice where the map is largest).
        baseline: reference row of the integrated gradients, in the encoded space (scalar or ``(T,)``).
        ig_steps: integrated-gradients steps.
        target_layer, mask_size: as in :class:`monai_ext.explain.AttributionSaver`.

    Example:
        >>> ImageTabularAttributionSaver("out", feature_names=["age"], png_slice="peak").png_slice
        'peak'
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        enabled: bool = True,
        feature_names: Sequence[str] | None = None,
        method: str = "gradcam",
        image_key: str = "image",
        tabular_key: str = "tabular",
        name_key: str | None = "patient_id",
        output_idx: int | None = None,
        transform: Any | None = None,
        png_slice: str = "center",
        baseline: float | Sequence[float] = 0.0,
        ig_steps: int = 32,
        target_layer: str | None = None,
        mask_size: int | Sequence[int] = 8,
    ) -> None:
        name = "ImageTabularAttributionSaver"
        if method not in METHODS:
            raise ValueError(f"{name}: `method` must be one of {METHODS}, got {method!r}.")
        if png_slice not in PNG_SLICES:
            raise ValueError(f"{name}: `png_slice` must be one of {PNG_SLICES}, got {png_slice!r}.")
        if ig_steps < 1:
            raise ValueError(f"{name}: `ig_steps` must be >= 1, got {ig_steps}.")
        self.output_dir = Path(output_dir)
        self.enabled = bool(enabled)
        self.feature_names = None if feature_names is None else [str(f) for f in feature_names]
        self.method = method
        self.image_key = image_key
        self.tabular_key = tabular_key
        self.name_key = name_key
        self.output_idx = output_idx
        self.transform = transform
        self.png_slice = png_slice
        self.baseline = baseline
        self.ig_steps = int(ig_steps)
        self.target_layer = target_layer
        self.mask_size = mask_size
        self.written: list[Path] = []

    def attach(self, engine) -> None:
        """Register on ``Events.ITERATION_COMPLETED`` of ``engine`` (an evaluator with ``network``)."""
        if not self.enabled:
            return
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _items(self, batch: Any) -> list[Mapping]:
        if isinstance(batch, Mapping):  # collated: split into per-item dicts
            from monai.data import decollate_batch

            return list(decollate_batch(batch))
        return list(batch)

    def _image_maps(
        self, network: torch.nn.Module, images: torch.Tensor, tabular: torch.Tensor
    ) -> torch.Tensor:
        kwargs = {"tabular": tabular}
        if self.method == "occlusion":
            maps = occlusion_map(
                network, images, class_idx=self.output_idx, mask_size=self.mask_size, forward_kwargs=kwargs
            )
            peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, *[1] * (maps.dim() - 1))
            return maps.clamp_min(0) / peak
        return grad_cam(
            network,
            images,
            class_idx=self.output_idx,
            target_layer=self.target_layer,
            method=self.method,
            forward_kwargs=kwargs,
        )

    def _invert(self, amap: torch.Tensor, image: Any) -> Any:
        if self.transform is None or not getattr(image, "applied_operations", None):
            return None
        from monai.data import MetaTensor
        from monai.transforms import Invertd

        inverter = Invertd(
            keys="attribution", transform=self.transform, orig_keys=self.image_key, nearest_interp=False
        )
        data = {self.image_key: image, "attribution": MetaTensor(amap.float())}
        return inverter(data)["attribution"]

    def _tabular_csv(self, values: torch.Tensor, attribution: torch.Tensor) -> str:
        names = self.feature_names or [f"feature_{j}" for j in range(values.numel())]
        if len(names) != values.numel():
            raise ValueError(
                f"ImageTabularAttributionSaver: {len(names)} feature_names for {values.numel()} tabular "
                "columns."
            )
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["feature", "encoded_value", "attribution"])
        for name, v, a in zip(names, values.tolist(), attribution.tolist()):
            writer.writerow([name, "" if math.isnan(v) else f"{v:.6g}", f"{a:.6g}"])
        return buf.getvalue()

    def __call__(self, engine) -> None:
        items = self._items(engine.state.batch)
        if not items:
            return
        missing = [k for k in (self.image_key, self.tabular_key) if k not in items[0]]
        if missing:
            raise KeyError(
                f"ImageTabularAttributionSaver: batch has no key(s) {missing}; keys are {sorted(items[0])}."
            )
        network = engine.network
        device = next(network.parameters()).device
        images = torch.stack([torch.as_tensor(d[self.image_key]) for d in items]).to(device)
        images = images.as_tensor() if hasattr(images, "as_tensor") else images
        tabular = torch.stack([torch.as_tensor(d[self.tabular_key]) for d in items]).to(device).float()
        if images.dim() != 5:
            raise ValueError(
                f"ImageTabularAttributionSaver: expects 3D images (B, C, H, W, D), got {tuple(images.shape)}."
            )
        maps = self._image_maps(network, images, tabular).detach().cpu()
        tab_attr = tabular_integrated_gradients(
            network,
            images,
            tabular,
            class_idx=self.output_idx,
            baseline=torch.as_tensor(self.baseline, dtype=images.dtype, device=device),
            steps=self.ig_steps,
        ).cpu()
        start = (engine.state.iteration - 1) * len(items)
        for i, item in enumerate(items):
            image = item[self.image_key]
            stem = _case_name(item.get(self.name_key) if self.name_key else None, image, start + i)
            amap = maps[i]
            inverted = self._invert(amap, image)
            out_map, grid = (amap, image) if inverted is None else (inverted, inverted)
            nii = save_attribution_nifti(
                out_map, self.output_dir / f"{stem}_attribution.nii.gz", affine=getattr(grid, "affine", None)
            )
            depth = amap.shape[-1]
            k = depth // 2 if self.png_slice == "center" else int(amap[0].flatten(0, 1).amax(dim=0).argmax())
            img = torch.as_tensor(image).detach().cpu().float()
            img = img.as_tensor() if hasattr(img, "as_tensor") else img
            png = save_attribution_png(
                _axial_view(img[:1], k), _axial_view(amap, k), self.output_dir / f"{stem}_attribution.png"
            )
            csv_path = write_bytes_atomic(
                self.output_dir / f"{stem}_tabular_attribution.csv",
                self._tabular_csv(tabular[i].cpu(), tab_attr[i]).encode(),
            )
            self.written += [nii, png, csv_path]
