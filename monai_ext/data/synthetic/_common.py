"""Shared helpers for the synthetic generators: atomic output folders, NIfTI writing, datalists.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with atomic_dir(pathlib.Path(d) / "out") as tmp:
    ...         _ = write_nifti(tmp / "x.nii.gz", np.zeros((4, 4, 2)), (1.0, 1.0, 3.0))
    ...     (pathlib.Path(d) / "out" / "x.nii.gz").exists()
    True
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_dir", "atomic_write_text", "write_json", "write_nifti", "ras_affine", "rng_for"]


@contextlib.contextmanager
def atomic_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder that is renamed to ``out_dir`` only when the block succeeds.

    A failure (or Ctrl-C) removes the temporary folder, so a partial data set never looks complete.
    ``out_dir`` must not exist yet or be an empty folder.
    """
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"output folder {out} exists and is not empty; choose a new folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as e:
        raise PermissionError(f"output folder {out} is not writable ({e.strerror or e})") from None
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def ras_affine(spacing: Sequence[float], origin: Sequence[float] | None = None) -> np.ndarray:
    """Diagonal RAS affine (4x4) for voxel ``spacing`` (mm) and world ``origin`` (mm)."""
    aff = np.eye(4)
    aff[: len(spacing), : len(spacing)] = np.diag([float(s) for s in spacing])
    if origin is not None:
        aff[: len(origin), 3] = origin
    return aff


def write_nifti(
    path: str | os.PathLike,
    array: np.ndarray,
    spacing: Sequence[float],
    origin: Sequence[float] | None = None,
    affine: np.ndarray | None = None,
) -> Path:
    """Write ``array`` (x, y, z[, c]) as NIfTI with a RAS affine; integer arrays keep their dtype."""
    import nibabel as nib

    aff = ras_affine(spacing, origin) if affine is None else np.asarray(affine, dtype=float)
    img = nib.Nifti1Image(np.asarray(array), aff)
    img.header.set_xyzt_units("mm")
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{''.join(path.suffixes)}")
    nib.save(img, str(tmp))
    os.replace(tmp, path)
    return path


def rng_for(seed: int, index: int) -> np.random.Generator:
    """Independent, reproducible generator for case ``index`` of a data set made with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
