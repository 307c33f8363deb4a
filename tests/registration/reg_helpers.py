"""Shared data and geometry helpers for the registration tests."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from monai.data import MetaTensor

from monai_ext.data.synthetic._common import ras_affine, rng_for
from monai_ext.data.synthetic.mri_brain import synthesize_mri_brain_case

#: 8 degrees about an oblique axis, |t| = 6 mm (LPS, about the world origin = image centre)
ANGLE_DEG = 8.0
AXIS = (1.0, 2.0, 3.0)
TRANSLATION = (3.0, -4.0, 3.4641016)


def rotation(axis, deg: float) -> np.ndarray:
    a = np.asarray(axis, float)
    a = a / np.linalg.norm(a)
    th = math.radians(deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(th) * k + (1 - math.cos(th)) * k @ k


def known_transform(center_lps=(0.0, 0.0, 0.0)):
    """The ITK affine transform S used to make the moving image: moving(y) = fixed(S(y))."""
    import itk

    s = itk.AffineTransform[itk.D, 3].New()
    s.SetCenter([float(c) for c in center_lps])
    s.SetMatrix(itk.matrix_from_array(rotation(AXIS, ANGLE_DEG)))
    s.SetTranslation(list(TRANSLATION))
    return s


def rigid_errors(s_ras: np.ndarray, recovered_ras: np.ndarray, point_ras) -> tuple[float, float]:
    """Residual rotation (degrees) and displacement at ``point_ras`` (mm) of ``S o T`` (ideally identity)."""
    e = s_ras @ recovered_ras
    u, _, vt = np.linalg.svd(e[:3, :3])
    r = u @ vt
    angle = math.degrees(math.acos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)))
    p = np.append(np.asarray(point_ras, float), 1.0)
    return angle, float(np.linalg.norm((e @ p - p)[:3]))


def synthetic_brain(shape=(64, 64, 48), spacing=(3.0, 3.0, 3.0), seed: int = 0) -> dict[str, MetaTensor]:
    """One synthetic multi-sequence brain case as channel-first RAS MetaTensors (+ ``seg``)."""
    imgs, seg = synthesize_mri_brain_case(rng_for(seed, 0), shape, spacing)
    origin = [-(n - 1) / 2 * s for n, s in zip(shape, spacing)]
    aff = torch.as_tensor(ras_affine(spacing, origin), dtype=torch.float64)
    out = {k: MetaTensor(torch.as_tensor(v)[None], affine=aff.clone()) for k, v in imgs.items()}
    out["seg"] = MetaTensor(torch.as_tensor(seg)[None], affine=aff.clone())
    return out


def anatomical() -> MetaTensor:
    """nibabel's real ``anatomical.nii`` (33 x 41 x 25 MRI, 2 mm) as a channel-first MetaTensor."""
    import nibabel as nib
    from nibabel.testing import data_path

    img = nib.load(os.path.join(data_path, "anatomical.nii"))
    arr = np.asarray(img.get_fdata(), np.float32)
    return MetaTensor(torch.as_tensor(arr)[None], affine=torch.as_tensor(img.affine, dtype=torch.float64))


def remap(image: MetaTensor) -> MetaTensor:
    """Non-monotone intensity remap (x - mean)^2 of the foreground: only MI-type metrics cope."""
    x = image.as_tensor().float()
    m = float(x[x > 0.05 * float(x.max())].mean())
    return MetaTensor((x - m) ** 2, affine=image.affine.clone())


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))
