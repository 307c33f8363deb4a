"""Whole-slide region requests (QuPath, DSA) reaching the histology bundles.

MONAI Label's pathology clients ask for a region of a slide: ``location`` = (x, y) of its top-left
pixel and ``size`` = (width, height), both in level-0 pixels (what MONAI Label's ``/infer/wsi_v2``
tiling computes and QuPath sends), plus ``level``. :class:`LoadSlideRegiond` reads that region with
:class:`monai_ext.data.wsi.Slide` (OpenSlide by default: every format MONAI Label lists as a slide)
at ``level``, or at the pyramid level matching the bundle's ``mpp`` when the bundle declares one,
and hands the bundle's preprocessing a channel-first RGB ``MetaTensor`` laid out as the bundle's own
loader would (rows first, or x first for PIL-loaded patch bundles). A request without ``location``
reads the whole slide at that level. :func:`region_to_level0` maps pixel positions back.

Example:
    >>> from monai_ext.label.regions import parse_region
    >>> parse_region({"location": [1024, 512], "size": [256, 128], "level": 0})
    ((1024, 512), (256, 128), 0)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["SLIDE_SUFFIXES", "REGION_KEY", "LoadSlideRegiond", "is_slide", "parse_region", "region_to_level0"]

#: file suffixes read as whole-slide images (MONAI Label's list of OpenSlide formats)
SLIDE_SUFFIXES = (".bif", ".mrxs", ".ndpi", ".scn", ".svs", ".svslide", ".tif", ".tiff", ".vms", ".vmu")
#: where the transform records the region it read (level-0 location/size, read level, downsample)
REGION_KEY = "monai_ext_region"


def is_slide(path: Any) -> bool:
    """Whether ``path`` names a whole-slide image file (by suffix)."""
    return isinstance(path, str | os.PathLike) and str(path).lower().endswith(SLIDE_SUFFIXES)


def _pair(value: Any, name: str) -> tuple[int, int]:
    try:
        a, b = (int(round(float(v))) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two numbers, got {value!r}") from None
    return a, b


def parse_region(request: Mapping[str, Any]) -> tuple[tuple[int, int] | None, tuple[int, int] | None, int]:
    """``(location (x, y) | None, size (w, h) | None, level)`` of a request; checked.

    A zero size (MONAI Label's default ``[0, 0]``) means the whole slide.
    """
    location = request.get("location")
    size = request.get("size")
    level = request.get("level", 0)
    try:
        level = int(level or 0)
    except (TypeError, ValueError):
        raise ValueError(f"level must be an integer pyramid level, got {level!r}") from None
    loc = _pair(location, "location (x, y)") if location is not None else None
    sz = _pair(size, "size (width, height)") if size is not None else None
    if sz is not None and sz == (0, 0):
        loc, sz = None, None
    if sz is not None and (sz[0] < 1 or sz[1] < 1):
        raise ValueError(f"size (width, height) must be positive, got {list(size)}")
    if level < 0:
        raise ValueError(f"level must be >= 0, got {level}")
    return loc, sz, level


def region_to_level0(points_xy: np.ndarray, region: Mapping[str, Any]) -> np.ndarray:
    """Map (x, y) pixel positions of a region read at ``region['read_level']`` to level-0 pixels."""
    pts = np.asarray(points_xy, dtype=np.float64)
    ds = float(region["downsample"])
    return pts * ds + np.asarray(region["location"], dtype=np.float64)


class LoadSlideRegiond(MapTransform):
    """Read the requested region of a slide into ``keys`` as a channel-first uint8 RGB ``MetaTensor``.

    Args:
        keys: the image key(s) holding a slide path.
        mpp: microns per pixel the bundle works at (None: read at the request's ``level``); the
            coarsest pyramid level not coarser than it is read.
        xy_first: lay the array out ``(3, W, H)`` as MONAI's ``PILReader`` does by default (patch
            bundles trained on PNG), instead of ``(3, H, W)``.
        backend: :class:`monai_ext.data.wsi.Slide` backend (``openslide``, ``tifffile``, ``cucim``).
        max_pixels: refuse regions larger than this at the read level (a whole slide at level 0).

    The region (level-0 ``location``/``size``, ``read_level``, ``downsample``, ``xy_first``) is
    recorded under ``REGION_KEY``.

    Example:
        >>> load = LoadSlideRegiond("image", mpp=2.0)
        >>> # load({"image": "slide.tif", "location": [0, 0], "size": [512, 512]})["image"].shape
    """

    def __init__(
        self,
        keys: KeysCollection,
        mpp: float | None = None,
        xy_first: bool = False,
        backend: str = "openslide",
        max_pixels: int = 8192 * 8192,
    ) -> None:
        super().__init__(keys)
        self.mpp = None if mpp is None else float(mpp)
        self.xy_first = bool(xy_first)
        self.backend = backend
        self.max_pixels = int(max_pixels)

    def _read_level(self, slide: Any, level: int) -> int:
        if level >= slide.level_count:
            raise ValueError(
                f"level {level} is out of range for slide {slide.path.name!r} "
                f"(levels 0..{slide.level_count - 1})"
            )
        if self.mpp is None:
            return level
        try:
            mpp0 = float(np.mean(slide.mpp(0)))
        except ValueError:
            return level  # no resolution in the file: trust the request
        return max(level, slide.level_for_downsample(self.mpp / mpp0))

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        from monai_ext.data.wsi import Slide

        d = dict(data)
        loc, size, level = parse_region(d)
        for key in self.key_iterator(d):
            path = d[key]
            with Slide(path, backend=self.backend) as slide:
                h0, w0 = slide.level_shapes[0]
                if loc is None:
                    loc, size = (0, 0), (w0, h0)
                read_level = self._read_level(slide, level)
                ds = slide.downsamples[read_level]
                rw, rh = max(1, round(size[0] / ds)), max(1, round(size[1] / ds))
                if rw * rh > self.max_pixels:
                    raise ValueError(
                        f"region {list(size)} at level {read_level} of {os.path.basename(str(path))!r} is "
                        f"{rw} x {rh} pixels (> {self.max_pixels}); ask for a smaller region or a coarser "
                        "level"
                    )
                patch = slide.read_region((loc[1], loc[0]), (rh, rw), level=read_level)  # (H, W, 3)
            arr = np.moveaxis(patch, -1, 0)
            if self.xy_first:
                arr = arr.transpose(0, 2, 1)
            affine = torch.diag(torch.tensor([ds, ds, 1.0, 1.0], dtype=torch.float64))
            if self.xy_first:
                affine[0, 3], affine[1, 3] = loc[0], loc[1]
            else:
                affine[0, 3], affine[1, 3] = loc[1], loc[0]
            meta = {
                "filename_or_obj": str(path),
                "spatial_shape": np.asarray(arr.shape[1:]),
                "original_channel_dim": 0,
                "original_affine": affine.clone(),
                "affine": affine,
            }
            d[key] = MetaTensor(torch.from_numpy(np.ascontiguousarray(arr)), meta=meta)
            d[REGION_KEY] = {
                "location": [int(loc[0]), int(loc[1])],
                "size": [int(size[0]), int(size[1])],
                "level": int(level),
                "read_level": int(read_level),
                "downsample": float(ds),
                "shape": [int(rh), int(rw)],
                "xy_first": self.xy_first,
            }
        return d
