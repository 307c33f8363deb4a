"""Tissue masks of whole-slide images from a low-resolution pyramid level.

Tissue is separated from glass by an Otsu threshold on the HSV saturation (``method="saturation"``,
default) or on the optical density ``-log10(I / 255)`` summed over RGB (``method="od"``); the mask
is then closed, its holes filled (fat and tears inside tissue stay tissue) and objects smaller than
``min_object_um2`` removed.

Example:
    >>> from monai_ext.data.wsi import tissue_mask
    >>> # mask, ds = tissue_mask("slide.tif", downsample=16)  # bool (H/16, W/16), 16.0
"""

from __future__ import annotations

import os

import numpy as np

from monai_ext.data.wsi.reader import Slide

__all__ = ["TISSUE_METHODS", "tissue_mask", "tissue_mask_from_rgb"]

TISSUE_METHODS = ("saturation", "od")


def _block_mean(img: np.ndarray, f: int) -> np.ndarray:
    h, w = img.shape[0] // f, img.shape[1] // f
    return img[: h * f, : w * f].reshape(h, f, w, f, -1).mean(axis=(1, 3))


def tissue_mask_from_rgb(
    rgb: np.ndarray,
    method: str = "saturation",
    min_object_px: int = 16,
    fill_holes: bool = True,
    closing_radius: int = 1,
) -> np.ndarray:
    """Boolean tissue mask of an (H, W, 3) uint8 RGB thumbnail.

    Example:
        >>> rgb = np.full((64, 64, 3), 240, np.uint8); rgb[16:48, 16:48] = (200, 120, 180)
        >>> int(tissue_mask_from_rgb(rgb).sum())
        1024
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    if rgb.ndim != 3 or rgb.shape[-1] < 3:
        raise ValueError(f"rgb must be (height, width, 3), got shape {rgb.shape}")
    if method not in TISSUE_METHODS:
        raise ValueError(f"method must be one of {', '.join(TISSUE_METHODS)}, got {method!r}")
    x = rgb[..., :3].astype(np.float32)
    if method == "saturation":
        mx, mn = x.max(-1), x.min(-1)
        feat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    else:
        feat = -np.log10(np.clip(x, 1.0, 255.0) / 255.0).sum(-1)
    feat = ndimage.uniform_filter(feat, 3)  # tame JPEG and nucleus-level noise
    if np.ptp(feat) < 1e-6:
        return np.zeros(feat.shape, bool)
    mask = feat > threshold_otsu(feat)
    if closing_radius > 0:
        st = ndimage.generate_binary_structure(2, 1)
        mask = ndimage.binary_closing(np.pad(mask, closing_radius), st, iterations=closing_radius)
        mask = mask[closing_radius:-closing_radius, closing_radius:-closing_radius]
    if fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    if min_object_px > 0:
        labels, n = ndimage.label(mask)
        if n:
            sizes = np.bincount(labels.ravel())
            keep = sizes >= min_object_px
            keep[0] = False
            mask = keep[labels]
    return mask


def tissue_mask(
    slide: str | os.PathLike | Slide,
    downsample: float = 16.0,
    method: str = "saturation",
    min_object_um2: float = 5000.0,
    fill_holes: bool = True,
    backend: str = "tifffile",
    max_level_pixels: int = 2**26,
) -> tuple[np.ndarray, float]:
    """Tissue mask of a slide at (about) ``downsample`` from the closest finer pyramid level.

    The level whose downsample is the largest not above ``downsample`` is read whole (it is small)
    and block-averaged to ``downsample`` when they differ by an integer factor.

    Args:
        slide: path or open :class:`Slide`.
        downsample: level-0 pixels per mask pixel wanted.
        method: ``"saturation"`` (Otsu on HSV saturation) or ``"od"`` (Otsu on optical density).
        min_object_um2: remove tissue objects smaller than this area (square microns; pixels if the
            slide has no resolution).
        fill_holes: fill holes inside tissue.
        backend: reader backend when ``slide`` is a path.
        max_level_pixels: refuse to read a level larger than this (a slide without a pyramid).

    Returns:
        (boolean mask, its actual downsample relative to level 0).

    Example:
        >>> # mask, ds = tissue_mask("slide.tif", downsample=16, method="od")
    """
    if downsample < 1:
        raise ValueError(f"downsample must be >= 1, got {downsample}")
    own = not isinstance(slide, Slide)
    s = Slide(slide, backend=backend) if own else slide
    try:
        level = s.level_for_downsample(downsample)
        lh, lw = s.level_shapes[level]
        if lh * lw > max_level_pixels:
            raise ValueError(
                f"whole-slide image '{s.path}' is not a pyramid (or lacks a level near downsample "
                f"{downsample:g}): the coarsest usable level is {lh}x{lw} pixels; write it as a tiled "
                "pyramidal TIFF (e.g. `vips tiffsave in out.tif --tile --pyramid --compression jpeg`)"
            )
        rgb = s.read_level(level)
        ds = s.downsamples[level]
        f = int(round(downsample / ds))
        if f > 1 and abs(f * ds - downsample) < 0.01 * downsample:
            rgb = _block_mean(rgb, f)
            ds = ds * f
        try:
            mpp = s.mpp(0)
            px_um2 = (mpp[0] * ds) * (mpp[1] * ds)
        except ValueError:
            px_um2 = 1.0
        mask = tissue_mask_from_rgb(
            np.asarray(rgb), method=method, min_object_px=int(min_object_um2 / px_um2), fill_holes=fill_holes
        )
    finally:
        if own:
            s.close()
    return mask, float(ds)
