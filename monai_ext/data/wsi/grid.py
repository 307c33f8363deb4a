"""Patch grids over a slide at a pyramid level or at a requested microns per pixel, restricted to tissue.

A :class:`PatchGrid` holds level-0 top-left locations; each patch is read at ``grid.level`` with
``grid.read_size`` and resized to ``grid.patch_size`` when the requested resolution falls between
levels (e.g. 1.0 um/px from a slide with levels at 0.5 and 2.0 um/px reads 2x larger regions at
level 0 and halves them).

Example:
    >>> from monai_ext.data.wsi import patch_grid
    >>> # grid = patch_grid("slide.tif", 224, mpp=1.0, min_tissue=0.5)
    >>> # grid.locations[:3], grid.level, grid.read_size
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from monai_ext.data.wsi.reader import Slide
from monai_ext.data.wsi.tissue import tissue_mask

__all__ = ["PatchGrid", "patch_grid", "read_patch", "mask_fraction"]


@dataclass
class PatchGrid:
    """Patch locations of one slide.

    Attributes:
        locations: (N, 2) int64 level-0 (row, col) of each patch's top-left pixel.
        level: pyramid level the patches are read at.
        read_size: (height, width) read at ``level``.
        patch_size: (height, width) of the returned patches.
        extent: (height, width) of a patch in level-0 pixels.
        tissue_fraction: (N,) fraction of each patch covered by tissue (1.0 without a mask).
        mpp: microns per pixel of the patches, when known.
    """

    locations: np.ndarray
    level: int
    read_size: tuple[int, int]
    patch_size: tuple[int, int]
    extent: tuple[float, float]
    tissue_fraction: np.ndarray
    mpp: tuple[float, float] | None = None

    def __len__(self) -> int:
        return len(self.locations)


def _pair(v: int | tuple[int, int] | None, name: str) -> tuple[int, int] | None:
    if v is None:
        return None
    t = (int(v), int(v)) if np.isscalar(v) else tuple(int(x) for x in v)  # type: ignore[arg-type]
    if len(t) != 2 or min(t) < 1:
        raise ValueError(f"{name} must be a positive int or (height, width), got {v!r}")
    return t  # type: ignore[return-value]


def mask_fraction(
    mask: np.ndarray, downsample: float, locations: np.ndarray, extent: tuple[float, float]
) -> np.ndarray:
    """Mean of ``mask`` (at ``downsample``) over level-0 boxes ``locations`` + ``extent`` (summed-area table).

    Example:
        >>> m = np.zeros((4, 4), bool); m[:2, :2] = True
        >>> mask_fraction(m, 16, np.array([[0, 0], [0, 32]]), (32, 32)).tolist()
        [1.0, 0.0]
    """
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.float64)
    sat[1:, 1:] = np.asarray(mask, np.float64).cumsum(0).cumsum(1)
    loc = np.asarray(locations, np.float64).reshape(-1, 2)
    y0 = np.clip(np.round(loc[:, 0] / downsample), 0, mask.shape[0]).astype(int)
    x0 = np.clip(np.round(loc[:, 1] / downsample), 0, mask.shape[1]).astype(int)
    y1 = np.clip(np.round((loc[:, 0] + extent[0]) / downsample), 0, mask.shape[0]).astype(int)
    x1 = np.clip(np.round((loc[:, 1] + extent[1]) / downsample), 0, mask.shape[1]).astype(int)
    y1, x1 = (
        np.maximum(y1, np.minimum(y0 + 1, mask.shape[0])),
        np.maximum(x1, np.minimum(x0 + 1, mask.shape[1])),
    )
    total = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    area = np.maximum((y1 - y0) * (x1 - x0), 1)
    return total / area


def patch_grid(
    slide: str | os.PathLike | Slide,
    patch_size: int | tuple[int, int],
    level: int | None = None,
    mpp: float | None = None,
    stride: int | tuple[int, int] | None = None,
    tissue: str | tuple[np.ndarray, float] | None = "auto",
    min_tissue: float = 0.5,
    mpp_rtol: float = 0.05,
    include_border: bool = False,
    backend: str = "tifffile",
) -> PatchGrid:
    """Regular patch grid at ``level`` or ``mpp`` microns per pixel, kept where tissue >= ``min_tissue``.

    Args:
        slide: path or open :class:`Slide`.
        patch_size: output patch (height, width) in pixels (int for square).
        level: pyramid level (default 0 when ``mpp`` is not given).
        mpp: requested microns per pixel (exclusive with ``level``).
        stride: step between patches in output pixels (default ``patch_size``).
        tissue: ``"auto"`` (compute :func:`tissue_mask` at downsample 16), ``(mask, downsample)``, or
            None (no restriction).
        min_tissue: minimum tissue fraction of a kept patch.
        mpp_rtol: relative tolerance under which a level's mpp counts as the requested one.
        include_border: also place patches that run past the right/bottom edge (read padded).
        backend: reader backend when ``slide`` is a path.

    Example:
        >>> # grid = patch_grid("slide.tif", 256, level=1, min_tissue=0.25)
    """
    ps = _pair(patch_size, "patch_size")
    st = _pair(stride, "stride") or ps
    if level is not None and mpp is not None:
        raise ValueError("give either level or mpp, not both")
    if not 0.0 <= min_tissue <= 1.0:
        raise ValueError(f"min_tissue must be in [0, 1], got {min_tissue}")
    own = not isinstance(slide, Slide)
    s = Slide(slide, backend=backend) if own else slide
    try:
        out_mpp: tuple[float, float] | None
        if mpp is not None:
            if mpp <= 0:
                raise ValueError(f"mpp must be positive microns per pixel, got {mpp}")
            m0 = s.mpp(0)
            factor = float(mpp) / m0[0]  # level-0 pixels per output pixel
            level = s.level_for_downsample(factor * (1 + mpp_rtol))
            scale = factor / s.downsamples[level]
            read = ps if abs(scale - 1) <= mpp_rtol else (round(ps[0] * scale), round(ps[1] * scale))
            out_mpp = (float(mpp), float(mpp) * m0[1] / m0[0])
        else:
            level = 0 if level is None else int(level)
            if not 0 <= level < s.level_count:
                raise ValueError(f"level must be in [0, {s.level_count - 1}] for '{s.path}', got {level}")
            factor = s.downsamples[level]
            read = ps
            try:
                m = s.mpp(level)
                out_mpp = (m[0], m[1])
            except ValueError:
                out_mpp = None
        extent = (ps[0] * factor, ps[1] * factor)
        step = (st[0] * factor, st[1] * factor)
        h0, w0 = s.level_shapes[0]
        stop_y, stop_x = (h0, w0) if include_border else (h0 - extent[0] + 1e-6, w0 - extent[1] + 1e-6)
        ys = np.round(np.arange(0, max(stop_y, 0), step[0])).astype(np.int64)
        xs = np.round(np.arange(0, max(stop_x, 0), step[1])).astype(np.int64)
        locs = np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)
        if tissue is None:
            frac = np.ones(len(locs))
        else:
            if isinstance(tissue, str):
                if tissue != "auto":
                    raise ValueError(f"tissue must be 'auto', (mask, downsample) or None, got {tissue!r}")
                tissue = tissue_mask(s, downsample=16)
            mask, mds = tissue
            frac = mask_fraction(np.asarray(mask) > 0, float(mds), locs, extent)
        keep = frac >= min_tissue if tissue is not None else np.ones(len(locs), bool)
        return PatchGrid(locs[keep], int(level), read, ps, extent, frac[keep], out_mpp)
    finally:
        if own:
            s.close()


def read_patch(slide: Slide, grid: PatchGrid, index: int) -> np.ndarray:
    """Patch ``index`` of ``grid`` as (height, width, 3) uint8, resized to ``grid.patch_size`` if needed.

    Example:
        >>> # with Slide("slide.tif") as s: read_patch(s, patch_grid(s, 224, mpp=1.0), 0).shape
    """
    loc = grid.locations[index]
    img = slide.read_region((int(loc[0]), int(loc[1])), grid.read_size, grid.level)
    if tuple(grid.read_size) != tuple(grid.patch_size):
        from PIL import Image

        img = np.asarray(
            Image.fromarray(img).resize((grid.patch_size[1], grid.patch_size[0]), Image.Resampling.BILINEAR)
        )
    return img
