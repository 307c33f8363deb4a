"""NIfTI through nibabel and MONAI's ``NibabelReader``, with NaN/Inf detection and atomic writes.

``nonfinite="error"`` (default) raises on NaN/Inf voxels naming the file and the counts;
``"replace"`` sets them to ``replace_value`` (default 0.0) and records the counts in
``meta["nonfinite_replaced"]``; ``"ignore"`` leaves them.

Example:
    >>> from monai.transforms import LoadImage
    >>> from monai_ext.data.nifti import FiniteNiftiReader, load_nifti
    >>> load = LoadImage(reader=FiniteNiftiReader(nonfinite="replace"), image_only=True)
    >>> # img = load_nifti("/data/ct.nii.gz")   # MetaTensor, ValueError if it holds NaN/Inf
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.data import NibabelReader
from monai.transforms import LoadImage

__all__ = ["FiniteNiftiReader", "load_nifti", "write_nifti", "check_finite"]

_MODES = ("error", "replace", "ignore")


def check_finite(array: np.ndarray, name: str) -> tuple[int, int]:
    """Return (NaN count, Inf count) of ``array``; raise ValueError naming ``name`` if any."""
    n_nan, n_inf = _counts(array)
    if n_nan or n_inf:
        raise ValueError(
            f"{name}: {n_nan} NaN and {n_inf} Inf voxel(s) in {array.size}; fix the file or load with "
            "nonfinite='replace' (sets them to replace_value)"
        )
    return n_nan, n_inf


def _counts(array: np.ndarray) -> tuple[int, int]:
    if not np.issubdtype(array.dtype, np.floating):
        return 0, 0
    return int(np.isnan(array).sum()), int(np.isinf(array).sum())


class FiniteNiftiReader(NibabelReader):
    """MONAI's ``NibabelReader`` plus a NaN/Inf check (``nonfinite`` = error | replace | ignore).

    Example:
        >>> reader = FiniteNiftiReader(nonfinite="error")
    """

    def __init__(self, nonfinite: str = "error", replace_value: float = 0.0, **kwargs: Any) -> None:
        if nonfinite not in _MODES:
            raise ValueError(f"argument nonfinite must be one of {_MODES}, got {nonfinite!r}")
        super().__init__(**kwargs)
        self.nonfinite = nonfinite
        self.replace_value = float(replace_value)

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        imgs = img if isinstance(img, list | tuple) else [img]
        name = ", ".join(str(i.get_filename()) for i in imgs)
        data, meta = super().get_data(img)
        if self.nonfinite == "ignore":
            return data, meta
        n_nan, n_inf = _counts(data)
        if n_nan or n_inf:
            if self.nonfinite == "error":
                check_finite(data, name)
            data = np.where(np.isfinite(data), data, np.asarray(self.replace_value, dtype=data.dtype))
            meta["nonfinite_replaced"] = {"nan": n_nan, "inf": n_inf, "value": self.replace_value}
        return data, meta


def load_nifti(
    path: str | os.PathLike, nonfinite: str = "error", replace_value: float = 0.0, **kwargs: Any
) -> Any:
    """Load a NIfTI file as a MetaTensor (RAS affine) with the NaN/Inf policy; ``kwargs`` go to LoadImage."""
    if not Path(path).expanduser().is_file():
        raise FileNotFoundError(f"NIfTI file {str(path)!r} does not exist")
    reader = FiniteNiftiReader(nonfinite=nonfinite, replace_value=replace_value)
    return LoadImage(reader=reader, image_only=True, **kwargs)(path)


def write_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike, dtype: Any = None) -> Path:
    """Write ``array`` (x, y, z[, c]) with RAS ``affine`` to ``path`` atomically (temp file, then rename).

    ``dtype`` defaults to int16 for integral data within its range, else float32. Raises ValueError on
    NaN/Inf voxels.
    """
    arr = np.asarray(array)
    out = Path(path).expanduser()
    if not (out.name.endswith(".nii") or out.name.endswith(".nii.gz")):
        raise ValueError(f"NIfTI path {str(path)!r} must end with .nii or .nii.gz")
    check_finite(arr, str(out))
    if dtype is None:
        integral = np.issubdtype(arr.dtype, np.integer) or bool(np.all(np.mod(arr, 1) == 0))
        in_range = arr.size == 0 or (arr.min() >= -32768 and arr.max() <= 32767)
        dtype = np.int16 if integral and in_range else np.float32
    img = nib.Nifti1Image(arr.astype(dtype), np.asarray(affine, dtype=float))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if out.name.endswith(".gz") else ".nii"
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=suffix, dir=out.parent)
    os.close(fd)
    try:
        nib.save(img, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out
