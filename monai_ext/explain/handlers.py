"""Ignite handler that writes attribution maps during a bundle's inference: one switch, ``enabled``.

:class:`AttributionSaver` runs after every evaluator iteration, computes Grad-CAM (or Grad-CAM++ /
occlusion) for the batch's images with the evaluator's network, and writes one file per image into
``output_dir``: a PNG overlay for 2D images, a NIfTI map with the image's affine for 3D images. Files are
named after the input file (``<stem>_attribution.png`` / ``.nii.gz``) or ``<index>_attribution`` without
metadata. The evaluator runs without gradients; the handler enables them for its own pass.

Bundle config (``inference.json``)::

    "write_attribution": false,
    ...
    {"_target_": "monai_ext.explain.handlers.AttributionSaver", "enabled": "@write_attribution",
     "output_dir": "$os.path.join(@output_dir, 'attribution')"}

Example:
    >>> saver = AttributionSaver(output_dir="unused", enabled=False)
    >>> saver.method
    'gradcam'
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from monai_ext.explain.cam import grad_cam
from monai_ext.explain.occlusion import occlusion_map
from monai_ext.explain.overlay import save_attribution_nifti, save_attribution_png

__all__ = ["AttributionSaver"]

METHODS = ("gradcam", "gradcampp", "occlusion")


def _stem(meta: Mapping | None, index: int) -> str:
    name = None if meta is None else meta.get("filename_or_obj")
    if isinstance(name, (list, tuple)):
        name = name[0] if name else None
    if not name:
        return f"{index:06d}"
    base = os.path.basename(str(name))
    for ext in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".nrrd", ".mha"):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return os.path.splitext(base)[0]


class AttributionSaver:
    """Write per-image attribution maps (PNG overlay in 2D, NIfTI in 3D) after each evaluator iteration.

    Args:
        output_dir: folder for the maps (created).
        enabled: the bundle switch; ``False`` attaches nothing.
        method: ``"gradcam"``, ``"gradcampp"`` or ``"occlusion"``.
        image_key: batch key of the image.
        extra_keys: network keyword -> batch key for other inputs (e.g. ``{"tabular": "tabular"}``).
        class_idx: class to explain; ``None`` = predicted class.
        target_layer: module name; ``None`` = automatic (:func:`monai_ext.explain.find_target_layer`).
        mask_size: occlusion box size (``method="occlusion"``).

    Example:
        >>> AttributionSaver("out", method="occlusion", mask_size=8).mask_size
        8
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        enabled: bool = True,
        method: str = "gradcam",
        image_key: str = "image",
        extra_keys: Mapping[str, str] | None = None,
        class_idx: int | None = None,
        target_layer: str | None = None,
        mask_size: int | Sequence[int] = 8,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"AttributionSaver: `method` must be one of {METHODS}, got {method!r}.")
        self.output_dir = Path(output_dir)
        self.enabled = bool(enabled)
        self.method = method
        self.image_key = image_key
        self.extra_keys = dict(extra_keys or {})
        self.class_idx = class_idx
        self.target_layer = target_layer
        self.mask_size = mask_size
        self.written: list[Path] = []

    def attach(self, engine) -> None:
        """Register on ``Events.ITERATION_COMPLETED`` of ``engine`` (an evaluator with ``network``)."""
        if not self.enabled:
            return
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _items(self, batch) -> list[Mapping]:
        if isinstance(batch, Mapping):  # collated: split into per-item dicts
            images = batch[self.image_key]
            return [
                {k: v[i] for k, v in batch.items() if isinstance(v, torch.Tensor)} for i in range(len(images))
            ]
        return list(batch)

    def __call__(self, engine) -> None:
        items = self._items(engine.state.batch)
        if not items:
            return
        missing = [k for k in [self.image_key, *self.extra_keys.values()] if k not in items[0]]
        if missing:
            raise KeyError(f"AttributionSaver: batch has no key(s) {missing}; keys are {sorted(items[0])}.")
        network = engine.network
        device = next(network.parameters()).device
        images = torch.stack([torch.as_tensor(d[self.image_key]) for d in items]).to(device)
        images = images.as_tensor() if hasattr(images, "as_tensor") else images
        kwargs = {
            arg: torch.stack([torch.as_tensor(d[key]) for d in items]).to(device).float()
            for arg, key in self.extra_keys.items()
        }
        if self.method == "occlusion":
            maps = occlusion_map(
                network, images, class_idx=self.class_idx, mask_size=self.mask_size, forward_kwargs=kwargs
            )
            maps = maps.clamp_min(0) / maps.flatten(1).amax(dim=1).clamp_min(1e-12).view(
                -1, 1, *[1] * (maps.dim() - 2)
            )
        else:
            maps = grad_cam(
                network,
                images,
                class_idx=self.class_idx,
                target_layer=self.target_layer,
                method=self.method,
                forward_kwargs=kwargs,
            )
        start = (engine.state.iteration - 1) * len(items)
        for i, (item, amap) in enumerate(zip(items, maps.cpu())):
            image = item[self.image_key]
            stem = _stem(getattr(image, "meta", None), start + i)
            if images.dim() == 4:
                path = save_attribution_png(image, amap, self.output_dir / f"{stem}_attribution.png")
            else:
                path = save_attribution_nifti(
                    amap, self.output_dir / f"{stem}_attribution.nii.gz", reference=image
                )
            self.written.append(path)
