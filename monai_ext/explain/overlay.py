"""Write attribution maps: NIfTI (3D, with the input's affine) and PNG overlays (2D, colormapped).

Both writers write to a temporary name in the target folder and ``os.replace`` it, so no half-written
file is left behind. :func:`overlay_rgb` blends a ``[0, 1]`` map over a grey or RGB image with a matplotlib
colormap (matplotlib is optional: without it a built-in blue-to-red ramp is used).

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> save_attribution_png(torch.rand(3, 16, 16), torch.rand(1, 16, 16), d / "a.png").name
    'a.png'
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["overlay_rgb", "save_attribution_nifti", "save_attribution_png"]


def _numpy(x: object, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    arr = np.asarray(x, dtype=np.float32)
    if arr.size == 0:
        raise ValueError(f"{name}: empty array.")
    return arr


def _temp_path(path: Path) -> Path:
    suffix = "".join(path.suffixes) or ".tmp"
    return path.with_name(f".{path.name}.{os.getpid()}.partial{suffix}")


def save_attribution_nifti(
    attribution: object,
    path: str | os.PathLike,
    affine: object | None = None,
    reference: object | None = None,
) -> Path:
    """Save a 2D/3D map (optionally with a leading channel of 1) as NIfTI, float32.

    The affine is ``affine`` if given, else ``reference.affine`` (a MetaTensor input, e.g. the image the map
    explains), else identity. The map must have the reference's spatial shape.

    Example:
        >>> import tempfile
        >>> from monai.data import MetaTensor
        >>> ref = MetaTensor(torch.zeros(1, 4, 4, 4), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
        >>> out = Path(tempfile.mkdtemp()) / "m.nii.gz"
        >>> p = save_attribution_nifti(torch.rand(1, 4, 4, 4), out, reference=ref)
        >>> import nibabel
        >>> nibabel.load(p).affine[2, 2]
        np.float64(3.0)
    """
    import nibabel as nib

    arr = _numpy(attribution, "save_attribution_nifti: `attribution`")
    if arr.ndim in (3, 4) and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"save_attribution_nifti: `attribution` must be (H, W[, D]) or (1, H, W[, D]), got {arr.shape}."
        )
    if affine is None and reference is not None:
        affine = getattr(reference, "affine", None)
        ref_shape = tuple(getattr(reference, "shape", ())[-arr.ndim :])
        if ref_shape and ref_shape != arr.shape:
            raise ValueError(
                f"save_attribution_nifti: `attribution` spatial shape {arr.shape} differs from the "
                f"`reference` image's {ref_shape}."
            )
    aff = (
        np.eye(4) if affine is None else _numpy(affine, "save_attribution_nifti: `affine`").astype(np.float64)
    )
    if aff.shape != (4, 4):
        if aff.shape == (3, 3):  # 2D affine -> 3D
            full = np.eye(4)
            full[:2, :2], full[:2, 3] = aff[:2, :2], aff[:2, 2]
            aff = full
        else:
            raise ValueError(
                f"save_attribution_nifti: `affine` must be 4x4 (or 3x3 for 2D), got {aff.shape}."
            )
    out = Path(path)
    if not out.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"save_attribution_nifti: `path` must end with .nii or .nii.gz, got {out.name!r}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(out)
    try:
        nib.save(nib.Nifti1Image(arr.astype(np.float32), aff), str(tmp))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _colormap(values: np.ndarray, cmap: str) -> np.ndarray:
    try:
        from matplotlib import colormaps

        return np.asarray(colormaps[cmap](values))[..., :3].astype(np.float32)
    except ImportError:
        ramp = np.stack([values, 1.0 - np.abs(2.0 * values - 1.0), 1.0 - values], axis=-1)
        return ramp.astype(np.float32)


def overlay_rgb(image: object, attribution: object, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """``(H, W, 3)`` uint8: ``image`` (``(H, W)``, ``(1|3, H, W)``, min-max scaled) blended with the map.

    The map (``(H, W)`` or ``(1, H, W)``, clipped to ``[0, 1]``) is weighted by itself, so unimportant regions
    show the image.

    Example:
        >>> overlay_rgb(torch.zeros(1, 8, 8), torch.ones(8, 8)).shape
        (8, 8, 3)
    """
    img = _numpy(image, "overlay_rgb: `image`")
    att = _numpy(attribution, "overlay_rgb: `attribution`")
    if img.ndim == 3:
        if img.shape[0] not in (1, 3):
            raise ValueError(f"overlay_rgb: `image` must be (H, W), (1, H, W) or (3, H, W), got {img.shape}.")
        img = np.moveaxis(img, 0, -1)
    elif img.ndim != 2:
        raise ValueError(f"overlay_rgb: `image` must be a 2D image (H, W) or (C, H, W), got {img.shape}.")
    if img.ndim == 2:
        img = img[..., None]
    if att.ndim == 3 and att.shape[0] == 1:
        att = att[0]
    if att.shape != img.shape[:2]:
        raise ValueError(
            f"overlay_rgb: `attribution` shape {att.shape} must match the image's {img.shape[:2]}."
        )
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
    att = np.clip(np.nan_to_num(att), 0.0, 1.0)
    weight = alpha * att[..., None]
    blended = (1.0 - weight) * img + weight * _colormap(att, cmap)
    return (np.clip(blended, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_attribution_png(
    image: object, attribution: object, path: str | os.PathLike, alpha: float = 0.45, cmap: str = "jet"
) -> Path:
    """Save :func:`overlay_rgb` of a 2D image and map as an RGB PNG.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "o.png"
        >>> save_attribution_png(torch.rand(8, 8), torch.rand(8, 8), out).suffix
        '.png'
    """
    from PIL import Image

    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"save_attribution_png: `path` must end with .png, got {out.name!r}.")
    rgb = overlay_rgb(image, attribution, alpha=alpha, cmap=cmap)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(out)
    try:
        Image.fromarray(rgb).save(tmp, format="PNG")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
