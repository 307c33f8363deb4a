"""A MONAI ``Dataset`` of patches from whole-slide images, for inference and training.

Each slide is turned into a :class:`~monai_ext.data.wsi.grid.PatchGrid` (tissue-restricted) once,
at construction; items are read lazily (one tile-bounded region read per item, slide files opened
once per worker process). Each item is a dict:

- ``"image"``: (3, H, W) uint8 patch (channel first), then ``transform`` is applied;
- ``"location"``: int64 (row, col) of the patch's top-left pixel at level 0;
- ``"level"``, ``"slide"`` (index in ``data``), ``"path"``, ``"tissue_fraction"``, ``"size"`` (level-0
  extent, for writing predictions back), the non-image keys of the slide's entry;
- with ``mask_key``: ``mask_key`` = 1/0 (mask fraction >= ``mask_threshold``) and
  ``f"{mask_key}_fraction"``, from a PNG/NumPy mask at ``entry["mask_downsample"]`` (e.g. the
  generator's tumour mask).

Example:
    >>> from monai_ext.data.wsi import SlidePatchDataset
    >>> # ds = SlidePatchDataset([{"image": "slide.tif", "label": "tumour.png", "mask_downsample": 16}],
    >>> #                        patch_size=224, mpp=1.0, mask_key="label")
    >>> # ds[0]["image"].shape, ds[0]["location"], ds[0]["label"]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import Dataset
from monai.transforms import apply_transform

from monai_ext.data.wsi.grid import PatchGrid, mask_fraction, patch_grid, read_patch
from monai_ext.data.wsi.reader import Slide

__all__ = ["SlidePatchDataset"]


def _load_mask(path: str | os.PathLike, key: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"mask '{p}' (key {key!r}) does not exist")
    if p.suffix == ".npy":
        return np.load(p) > 0
    from PIL import Image

    with Image.open(p) as im:
        return np.asarray(im.convert("L")) > 0


class SlidePatchDataset(Dataset):
    """Patches of one or more slides as a MONAI ``Dataset`` of dicts with ``"image"`` and ``"location"``.

    Args:
        data: slide paths or dicts with ``image_key`` (other keys are copied to every item).
        patch_size: output patch size (int or (height, width)).
        level: pyramid level (exclusive with ``mpp``; default 0).
        mpp: microns per pixel of the patches.
        stride: grid step in output pixels (default ``patch_size``).
        min_tissue: minimum tissue fraction of a patch (tissue mask from :func:`tissue_mask`).
        tissue: ``"auto"`` or None (all patches).
        mask_key: entry key of a mask file (PNG or .npy at ``entry["mask_downsample"]``, default 16)
            giving per-patch labels.
        mask_threshold: patch label = mask fraction >= this.
        transform: MONAI transform applied to each item dict.
        backend: ``"tifffile"``, ``"openslide"`` or ``"cucim"``.
        image_key: key of the slide path in dict entries.
        include_border: also place patches running past the right/bottom edge (padded white).
    """

    def __init__(
        self,
        data: Sequence[str | os.PathLike | dict[str, Any]],
        patch_size: int | tuple[int, int],
        level: int | None = None,
        mpp: float | None = None,
        stride: int | tuple[int, int] | None = None,
        min_tissue: float = 0.5,
        tissue: str | None = "auto",
        mask_key: str | None = None,
        mask_threshold: float = 0.5,
        transform: Callable | None = None,
        backend: str = "tifffile",
        image_key: str = "image",
        include_border: bool = False,
    ):
        entries = [dict(d) if isinstance(d, dict) else {image_key: d} for d in data]
        self.backend, self.image_key = backend, image_key
        self.grids: list[PatchGrid] = []
        records: list[dict[str, Any]] = []
        for i, entry in enumerate(entries):
            if image_key not in entry:
                raise KeyError(f"data[{i}] has no key {image_key!r} (the slide path); keys: {sorted(entry)}")
            with Slide(entry[image_key], backend=backend) as s:
                grid = patch_grid(
                    s, patch_size, level, mpp, stride, tissue, min_tissue, include_border=include_border
                )
            self.grids.append(grid)
            labels = frac = None
            if mask_key is not None:
                if mask_key not in entry:
                    raise KeyError(f"data[{i}] has no key {mask_key!r} (mask_key); keys: {sorted(entry)}")
                mask = _load_mask(entry[mask_key], mask_key)
                frac = mask_fraction(
                    mask, float(entry.get("mask_downsample", 16)), grid.locations, grid.extent
                )
                labels = (frac >= mask_threshold).astype(np.int64)
            extra = {k: v for k, v in entry.items() if k not in (image_key, mask_key)}
            for j, loc in enumerate(grid.locations):
                rec = {
                    **extra,
                    "slide": i,
                    "patch": j,
                    "path": str(entry[image_key]),
                    "location": np.asarray(loc, np.int64),
                    "level": grid.level,
                    "size": np.asarray(grid.extent, np.float64),
                    "tissue_fraction": float(grid.tissue_fraction[j]),
                }
                if labels is not None and frac is not None:
                    rec[mask_key] = int(labels[j])
                    rec[f"{mask_key}_fraction"] = float(frac[j])
                records.append(rec)
        super().__init__(records, transform)
        self._slides: dict[int, Slide] = {}
        self._pid = os.getpid()

    def _slide(self, i: int, path: str) -> Slide:
        if self._pid != os.getpid():  # forked worker: open our own handles
            self._slides, self._pid = {}, os.getpid()
        if i not in self._slides:
            self._slides[i] = Slide(path, backend=self.backend)
        return self._slides[i]

    def _transform(self, index: int) -> Any:
        rec = self.data[index]
        img = read_patch(self._slide(rec["slide"], rec["path"]), self.grids[rec["slide"]], rec["patch"])
        item = {**rec, self.image_key: np.ascontiguousarray(np.moveaxis(img, -1, 0))}
        return apply_transform(self.transform, item) if self.transform is not None else item

    def close(self) -> None:
        """Close the open slide files."""
        for s in self._slides.values():
            s.close()
        self._slides = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_slides"] = {}
        return state
