"""Write a probability heat map as a pyramidal tiled TIFF aligned with its slide.

The heat map covers the whole slide: its pixel size is the slide's physical size divided by the
heat-map shape, written in the resolution tags (centimetre unit, as OpenSlide ``generic-tiff``
reads them) and in the description (``mpp=<x>``), so ``mpp * shape`` equals the slide's
``mpp * shape`` at every level. Values are stored as uint8 (probability * 255, greyscale), which
tifffile, OpenSlide and QuPath read; levels are 2x reductions (``subfiletype=1``) down to one tile.
The file is written under a temporary name and renamed, so no half-written heat map is left.

Example:
    >>> from monai_ext.data.wsi import write_heatmap
    >>> # write_heatmap("slide_heat.tif", probs, slide="slide.tif")  # probs: (H, W) in [0, 1]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from monai_ext.data.wsi.reader import INSTALL_HINT, Slide

__all__ = ["write_heatmap"]


def _reduce2(a: np.ndarray) -> np.ndarray:
    h, w = a.shape
    a = np.pad(a.astype(np.float32), ((0, h % 2), (0, w % 2)), mode="edge")
    return a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).mean(axis=(1, 3))


def _to_uint8(heatmap: Any) -> np.ndarray:
    a = np.asarray(heatmap.detach().cpu() if hasattr(heatmap, "detach") else heatmap)
    a = np.squeeze(a)
    if a.ndim != 2:
        raise ValueError(f"heatmap must be 2D (height, width), got shape {np.shape(heatmap)}")
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError("heatmap holds NaN/Inf values; expected probabilities in [0, 1]")
    if a.min() < 0 or a.max() > 1:
        raise ValueError(
            f"heatmap values must be probabilities in [0, 1] (or uint8), got [{a.min()}, {a.max()}]"
        )
    return np.rint(a * 255).astype(np.uint8)


def write_heatmap(
    path: str | os.PathLike,
    heatmap: Any,
    slide: str | os.PathLike | Slide | None = None,
    slide_shape: tuple[int, int] | None = None,
    slide_mpp: float | tuple[float, float] | None = None,
    tile: int = 256,
    compression: str | None = "zlib",
) -> Path:
    """Write ``heatmap`` (H, W) as a pyramidal TIFF with the slide's physical size; return the path.

    Args:
        path: output ``.tif``.
        heatmap: (H, W) probabilities in [0, 1] (numpy or torch), bool, or uint8 (0-255).
        slide: the slide (path or open :class:`Slide`) giving level-0 shape and mpp; or give
        slide_shape: level-0 (height, width), and
        slide_mpp: level-0 microns per pixel (y, x) or one value.
        tile: tile side (multiple of 16).
        compression: ``"zlib"`` (default, lossless), ``"jpeg"`` or None.

    Example:
        >>> # write_heatmap("heat.tif", np.zeros((256, 256)), slide_shape=(4096, 4096), slide_mpp=0.5)
    """
    try:
        import tifffile
    except ImportError as e:  # pragma: no cover - tifffile is in the wsi extra
        raise ImportError(f"writing heat maps needs tifffile: {INSTALL_HINT}") from e
    if tile < 16 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile}")
    if slide is not None:
        own = not isinstance(slide, Slide)
        s = Slide(slide) if own else slide
        try:
            slide_shape, slide_mpp = s.level_shapes[0], s.mpp(0)
        finally:
            if own:
                s.close()
    if slide_shape is None or slide_mpp is None:
        raise ValueError("give slide, or both slide_shape and slide_mpp, to align the heat map")
    my, mx = (float(slide_mpp), float(slide_mpp)) if np.isscalar(slide_mpp) else map(float, slide_mpp)  # type: ignore[arg-type]
    phys = (slide_shape[0] * my, slide_shape[1] * mx)  # microns
    img = _to_uint8(heatmap)
    out = Path(path)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"folder of heat map '{out}' does not exist")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    kw: dict[str, Any] = dict(
        photometric="minisblack",
        metadata=None,
        software=False,
        resolutionunit="CENTIMETER",
        tile=(tile, tile),
    )
    if compression is not None:
        kw["compression"] = compression
    try:
        with tifffile.TiffWriter(tmp, bigtiff=img.size > 2**31) as tw:
            level, k = img, 0
            while True:
                res = (1e4 * level.shape[1] / phys[1], 1e4 * level.shape[0] / phys[0])  # pixels per cm (x, y)
                extra: dict[str, Any] = (
                    {"subfiletype": 1}
                    if k
                    else {
                        "description": f"monai-ext heat map|mpp={phys[1] / level.shape[1]:.6g}"
                        f"|slide_shape={slide_shape[0]}x{slide_shape[1]}|scale=255"
                    }
                )
                tw.write(level, resolution=res, **kw, **extra)
                if min(level.shape) <= tile:
                    break
                level, k = np.rint(_reduce2(level)).astype(np.uint8), k + 1
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
