"""Geometry of DICOM slices: slice normals, positions along the normal, spacing checks and RAS affines.

Array layout used throughout ``monai_ext.data.dicom`` (the same as MONAI's ``ITKReader``): axis 0 runs
along the columns of a slice (DICOM row direction cosine), axis 1 along the rows (column direction
cosine), axis 2 along the slice normal ``row x col``, slices sorted by increasing position on it.

Example:
    >>> import numpy as np
    >>> a = affine_ras([1, 0, 0, 0, 1, 0], [-10.0, -20.0, 5.0], (0.5, 0.7), 2.0)
    >>> a[:3, 3].tolist(), np.diag(a)[:3].tolist()
    ([10.0, 20.0, 5.0], [-0.7, -0.5, 2.0])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["slice_normal", "affine_lps", "affine_ras", "SpacingReport", "check_spacing", "LPS_TO_RAS"]

#: flips x and y: DICOM patient space is LPS, MONAI's default space is RAS
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal ``row x col`` of an ImageOrientationPatient (6 direction cosines)."""
    iop = np.asarray(orientation, dtype=float)
    if iop.shape != (6,):
        raise ValueError(f"ImageOrientationPatient must have 6 values, got {list(iop)}")
    n = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(n)
    if norm < 1e-6:
        raise ValueError(f"ImageOrientationPatient {list(iop)} has parallel row and column directions")
    return n / norm


def affine_lps(
    orientation: Sequence[float], origin: Sequence[float], pixel_spacing: Sequence[float], slice_step: float
) -> np.ndarray:
    """4x4 voxel -> LPS mm affine for the (col, row, slice) array layout.

    ``pixel_spacing`` is DICOM PixelSpacing (row spacing, column spacing); ``slice_step`` the signed distance
    between consecutive slices along :func:`slice_normal`.
    """
    iop = np.asarray(orientation, dtype=float)
    a = np.eye(4)
    a[:3, 0] = iop[:3] * float(pixel_spacing[1])
    a[:3, 1] = iop[3:] * float(pixel_spacing[0])
    a[:3, 2] = slice_normal(iop) * float(slice_step)
    a[:3, 3] = np.asarray(origin, dtype=float)
    return a


def affine_ras(
    orientation: Sequence[float], origin: Sequence[float], pixel_spacing: Sequence[float], slice_step: float
) -> np.ndarray:
    """Like :func:`affine_lps` but in MONAI's RAS convention (what ``ITKReader`` returns)."""
    return LPS_TO_RAS @ affine_lps(orientation, origin, pixel_spacing, slice_step)


@dataclass
class SpacingReport:
    """Measured spacing between consecutive slices (sorted along the normal) and what is wrong with it."""

    positions: list[float]
    steps: list[float]
    step: float
    duplicates: list[float] = field(default_factory=list)
    gaps: list[tuple[int, float]] = field(default_factory=list)
    non_uniform: bool = False

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.gaps or self.non_uniform)

    def describe(self) -> str:
        """One line listing the problems with the measured spacings (mm)."""
        parts = []
        if self.duplicates:
            parts.append(f"{len(self.duplicates)} duplicate slice position(s) at {_fmt(self.duplicates)} mm")
        if self.gaps:
            parts.append(
                "gap(s) of "
                + ", ".join(f"{g:.3f} mm after slice {i}" for i, g in self.gaps)
                + f" (regular step {self.step:.3f} mm)"
            )
        if self.non_uniform and not self.gaps:
            parts.append("non-uniform slice spacing")
        if not parts:
            return f"uniform slice spacing {self.step:.4f} mm"
        return "; ".join(parts) + f"; measured steps {_fmt(sorted(set(np.round(self.steps, 3).tolist())))} mm"


def _fmt(values: Sequence[float], n: int = 8) -> str:
    vals = [f"{v:.3f}" for v in list(values)[:n]]
    return "[" + ", ".join(vals) + (", ..." if len(values) > n else "") + "]"


def check_spacing(positions: Sequence[float], rtol: float = 0.01, atol: float = 0.01) -> SpacingReport:
    """Check sorted slice positions along the normal for duplicates, gaps and non-uniform steps.

    The regular ``step`` is the median of the non-zero steps; a step above 1.5 times it is a gap; any other
    deviation above ``atol + rtol * step`` marks the series non-uniform. Nothing is averaged.
    """
    pos = np.asarray(positions, dtype=float)
    if pos.size < 2:
        return SpacingReport(positions=pos.tolist(), steps=[], step=0.0)
    steps = np.diff(pos)
    dup_mask = np.abs(steps) <= atol
    duplicates = pos[1:][dup_mask].tolist()
    real = steps[~dup_mask]
    step = float(np.median(real)) if real.size else 0.0
    gaps = [(int(i), float(s)) for i, s in enumerate(steps) if step > 0 and s > 1.5 * step]
    non_uniform = bool(real.size and np.any(np.abs(real - step) > atol + rtol * abs(step)))
    return SpacingReport(
        positions=pos.tolist(),
        steps=steps.tolist(),
        step=step,
        duplicates=duplicates,
        gaps=gaps,
        non_uniform=non_uniform,
    )
