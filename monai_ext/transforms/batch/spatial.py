"""Batched spatial augmentations (``nn.Module``): random affine, elastic, flips and label-balanced crops.

Images are resampled with ``mode`` (bilinear), labels with ``label_mode`` (nearest) through the
*same* sampling grid and padding, so they stay aligned and integer-valued. Matrices and displacement
fields are built on the input's device for the whole batch (one ``affine_grid`` + ``grid_sample``).

Example:
    >>> import torch
    >>> from monai_ext.transforms.batch import BatchRandAffine
    >>> aug = BatchRandAffine(prob=1.0, rotate_range=0.3, seed=0)
    >>> img, lab = torch.rand(2, 1, 16, 16, 16), torch.randint(0, 3, (2, 1, 16, 16, 16))
    >>> out = aug(img, lab)
    >>> out.label.dtype, out.params["matrix"].shape
    (torch.int64, torch.Size([2, 4, 4]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from monai_ext.transforms.batch.base import BatchAugmentation, BatchAugResult
from monai_ext.transforms.functional import spatial as fs

__all__ = ["BatchRandAffine", "BatchRandElastic", "BatchRandFlip", "BatchRandRot90", "BatchLabelBalancedCrop"]


def _sym(v: float | Sequence[float] | None, n: int, name: str, owner: str) -> list[tuple[float, float]]:
    """MONAI-style ranges: x -> (-x, x); (a, b) pairs kept; one entry per parameter."""
    if v is None:
        return [(0.0, 0.0)] * n
    items = [v] * n if isinstance(v, int | float) else list(v)
    if len(items) == 1:
        items = items * n
    if len(items) != n:
        raise ValueError(f"{owner}: `{name}` needs 1 or {n} entries, got {len(items)}.")
    out = []
    for it in items:
        lo, hi = (
            (-abs(float(it)), abs(float(it))) if isinstance(it, int | float) else (float(it[0]), float(it[1]))
        )
        if hi < lo:
            raise ValueError(f"{owner}: `{name}` range {it} has min > max.")
        out.append((lo, hi))
    return out


def _draw(ranges: list[tuple[float, float]], b: int, g: torch.Generator, dev: torch.device) -> torch.Tensor:
    lo = torch.tensor([r[0] for r in ranges], dtype=torch.float32).to(dev, non_blocking=True)
    hi = torch.tensor([r[1] for r in ranges], dtype=torch.float32).to(dev, non_blocking=True)
    return torch.rand(b, len(ranges), generator=g, device=dev) * (hi - lo) + lo


class BatchRandAffine(BatchAugmentation):
    """Random rotate / shear / translate / scale per sample, MONAI ``RandAffine`` ranges and conventions.

    Args:
        prob: per-sample probability.
        rotate_range: radians; x -> U(-x, x) per axis (1 axis in 2D, 3 in 3D).
        shear_range: 2 (2D) or 6 (3D) shear coefficients.
        translate_range: voxels, per axis.
        scale_range: x -> scale factor ``1 + U(-x, x)`` per axis.
        mode / label_mode: interpolation for images / labels.
        padding_mode: ``zeros``, ``border`` or ``reflection``.
        seed, num_channels, check_finite: see :class:`BatchAugmentation`.

    ``params["matrix"]`` is ``(B, d+1, d+1)`` (identity where not applied), in MONAI ``Affine``'s
    convention, so ``monai.transforms.Affine(affine=matrix[i])`` reproduces sample ``i``.

    Example:
        >>> out = BatchRandAffine(rotate_range=0.2, scale_range=0.1, seed=0)(torch.rand(2, 1, 8, 8))
        >>> out.image.shape
        torch.Size([2, 1, 8, 8])
    """

    transforms_label = True

    def __init__(
        self,
        prob: float = 0.1,
        rotate_range: float | Sequence[Any] | None = None,
        shear_range: float | Sequence[Any] | None = None,
        translate_range: float | Sequence[Any] | None = None,
        scale_range: float | Sequence[Any] | None = None,
        mode: str = "bilinear",
        label_mode: str = "nearest",
        padding_mode: str = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(prob=prob, **kwargs)
        self.ranges = {
            "rotate": rotate_range,
            "shear": shear_range,
            "translate": translate_range,
            "scale": scale_range,
        }
        self.mode, self.label_mode, self.padding_mode = mode, label_mode, padding_mode
        errors = []
        for d in (3, 2):  # validate early: the ranges must fit 3D or 2D
            try:
                self._ranges(d)
                break
            except ValueError as e:
                errors.append(e)
        else:
            raise errors[0]

    def _ranges(self, d: int) -> dict[str, list[tuple[float, float]]]:
        widths = {"rotate": 1 if d == 2 else 3, "shear": 2 if d == 2 else 6, "translate": d, "scale": d}
        return {k: _sym(v, widths[k], f"{k}_range", "BatchRandAffine") for k, v in self.ranges.items()}

    def draw(self, image, generator):
        b, dev, d = image.shape[0], image.device, image.ndim - 2
        p = {k: _draw(r, b, generator, dev) for k, r in self._ranges(d).items()}
        p["scale"] = p["scale"] + 1.0
        return {"matrix": fs.affine_matrix(d, **p)}

    def apply(self, image, label, params):
        mat = params["matrix"].to(image.device)

        def warp(mode: str):
            return lambda x, idx: fs.affine_resample(x, mat[idx], mode, self.padding_mode)

        out = self._on_drawn(params["apply"], image, warp(self.mode))
        if label is not None:
            label = self._on_drawn(params["apply"], label, warp(self.label_mode))
        return out, label


class BatchRandElastic(BatchAugmentation):
    """Elastic deformation: random displacements on a ``control_points`` lattice, smoothly interpolated.

    Displacements are ``U(-magnitude, magnitude)`` voxels per control point and axis, interpolated
    (bicubic 2D / trilinear 3D) to the full grid; image and label share the grid.

    Example:
        >>> out = BatchRandElastic(magnitude=2.0, control_points=4, seed=0)(torch.rand(1, 1, 16, 16))
        >>> out.params["displacement"].shape
        torch.Size([1, 2, 4, 4])
    """

    transforms_label = True

    def __init__(
        self,
        prob: float = 0.1,
        magnitude: float = 4.0,
        control_points: int = 6,
        mode: str = "bilinear",
        label_mode: str = "nearest",
        padding_mode: str = "border",
        **kwargs: Any,
    ) -> None:
        super().__init__(prob=prob, **kwargs)
        if magnitude < 0 or control_points < 2:
            raise ValueError(
                "BatchRandElastic: need `magnitude` >= 0 and `control_points` >= 2, "
                f"got {magnitude}, {control_points}."
            )
        self.magnitude, self.control_points = float(magnitude), int(control_points)
        self.mode, self.label_mode, self.padding_mode = mode, label_mode, padding_mode

    def draw(self, image, generator):
        b, d = image.shape[0], image.ndim - 2
        shape = (b, d, *([self.control_points] * d))
        disp = (torch.rand(shape, generator=generator, device=image.device) * 2 - 1) * self.magnitude
        return {"displacement": disp}

    def apply(self, image, label, params):
        disp = params["displacement"] * self._mask(params["apply"], params["displacement"])
        out = fs.elastic_resample(image, disp, mode=self.mode, padding_mode=self.padding_mode)
        out = self._blend(params["apply"], out, image)
        if label is not None:
            lab = fs.elastic_resample(label, disp, mode=self.label_mode, padding_mode=self.padding_mode)
            label = self._blend(params["apply"], lab, label)
        return out, label


class BatchRandFlip(BatchAugmentation):
    """Flip each sample along each of ``spatial_axes`` with probability 0.5 (if the sample is selected).

    Example:
        >>> out = BatchRandFlip(prob=1.0, seed=0)(torch.rand(3, 1, 4, 4))
        >>> out.params["flags"].shape
        torch.Size([3, 2])
    """

    transforms_label = True

    def __init__(self, prob: float = 0.5, spatial_axes: Sequence[int] | None = None, **kwargs: Any) -> None:
        super().__init__(prob=prob, **kwargs)
        self.spatial_axes = None if spatial_axes is None else tuple(int(a) for a in spatial_axes)

    def draw(self, image, generator):
        b, d = image.shape[0], image.ndim - 2
        flags = torch.rand(b, d, generator=generator, device=image.device) < 0.5
        if self.spatial_axes is not None:
            if any(a < 0 or a >= d for a in self.spatial_axes):
                raise ValueError(f"BatchRandFlip: `spatial_axes` {self.spatial_axes} out of range for {d}D.")
            keep = torch.zeros(d, dtype=torch.bool)
            keep[list(self.spatial_axes)] = True
            flags = flags & keep.to(image.device)
        return {"flags": flags}

    def apply(self, image, label, params):
        flags = params["flags"] & params["apply"][:, None]
        out = fs.flip_per_sample(image, flags)
        return out, None if label is None else fs.flip_per_sample(label, flags)


class BatchRandRot90(BatchAugmentation):
    """Rotate each selected sample by ``k ~ U{1..max_k}`` quarter turns in the plane of ``spatial_axes``
    (MONAI ``RandRotate90`` per sample); image and label turn together.

    Example:
        >>> out = BatchRandRot90(prob=1.0, seed=0)(torch.rand(3, 1, 4, 4), torch.zeros(3, 1, 4, 4))
        >>> out.params["k"].shape, out.label.shape
        (torch.Size([3]), torch.Size([3, 1, 4, 4]))
    """

    transforms_label = True

    def __init__(
        self, prob: float = 0.1, max_k: int = 3, spatial_axes: Sequence[int] = (0, 1), **kwargs: Any
    ) -> None:
        super().__init__(prob=prob, **kwargs)
        if not 1 <= int(max_k) <= 3:
            raise ValueError(f"BatchRandRot90: `max_k` must be 1, 2 or 3, got {max_k}.")
        self.max_k, self.spatial_axes = int(max_k), tuple(int(a) for a in spatial_axes)

    def draw(self, image, generator):
        b = image.shape[0]
        return {"k": torch.randint(1, self.max_k + 1, (b,), generator=generator, device=image.device)}

    def apply(self, image, label, params):
        k = torch.where(params["apply"], params["k"], torch.zeros_like(params["k"]))
        out = fs.rot90_per_sample(image, k, self.spatial_axes)
        return out, None if label is None else fs.rot90_per_sample(label, k, self.spatial_axes)


class BatchLabelBalancedCrop(BatchAugmentation):
    """``num_samples`` crops per volume centred on classes drawn with ``ratios`` -> ``(B*N, C, *size)``.

    Two ratios are (positive, negative) as MONAI ``RandCropByPosNegLabel``; more are per class value as
    ``RandCropByLabelClasses``. Needs ``label``; the volumes stay on their device (no host sync).

    Example:
        >>> lab = torch.zeros(2, 1, 16, 16, dtype=torch.long)
        >>> lab[:, :, 4:8, 4:8] = 1
        >>> out = BatchLabelBalancedCrop((8, 8), num_samples=3, seed=0)(torch.rand(2, 1, 16, 16), lab)
        >>> out.image.shape, out.label.shape
        (torch.Size([6, 1, 8, 8]), torch.Size([6, 1, 8, 8]))
    """

    transforms_label = True
    allow_integer = True

    def __init__(
        self,
        spatial_size: Sequence[int],
        num_samples: int = 1,
        ratios: Sequence[float] = (1.0, 1.0),
        image_threshold: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(prob=1.0, **kwargs)
        if num_samples < 1:
            raise ValueError(f"BatchLabelBalancedCrop: `num_samples` must be >= 1, got {num_samples}.")
        self.spatial_size, self.num_samples = tuple(int(s) for s in spatial_size), num_samples
        self.ratios, self.image_threshold = tuple(float(r) for r in ratios), image_threshold

    def validate(self, image, label):
        super().validate(image, label)
        if label is None:
            raise ValueError("BatchLabelBalancedCrop: `label` is required to choose crop centres.")
        if label.shape[1] != 1:
            raise ValueError(f"BatchLabelBalancedCrop: `label` must have 1 channel, got {label.shape[1]}.")
        if len(self.spatial_size) != image.ndim - 2:
            raise ValueError(
                f"BatchLabelBalancedCrop: `spatial_size` {self.spatial_size} does not match "
                f"{image.ndim - 2}D input."
            )

    def draw(self, image, generator):
        raise RuntimeError("BatchLabelBalancedCrop draws from the label; call it with image and label.")

    def run(self, image, label=None, params=None, inplace: bool = False) -> BatchAugResult:
        if params is None:
            if label is None:
                raise ValueError("BatchLabelBalancedCrop: `label` is required to choose crop centres.")
            starts = fs.sample_crop_starts(
                label,
                self.spatial_size,
                self.num_samples,
                self.ratios,
                generator=self.generator(image.device),
                image=image if self.image_threshold is not None else None,
                image_threshold=self.image_threshold or 0.0,
            )
            params = {
                "apply": torch.ones(image.shape[0], dtype=torch.bool, device=image.device),
                "starts": starts,
            }
        out, lab = self.apply(image, label, params)
        return BatchAugResult(out, lab, params)

    def apply(self, image, label, params):
        out = fs.crop_patches(image, params["starts"], self.spatial_size)
        return out, None if label is None else fs.crop_patches(label, params["starts"], self.spatial_size)
