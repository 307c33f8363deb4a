"""Batched histology augmentations and normalisers (``nn.Module``) for (B, 3, H, W) batches on the device.

The random modules are :class:`~monai_ext.transforms.batch.base.BatchAugmentation` subclasses: they
draw per-sample parameters as (B,)-leading tensors from a ``torch.Generator`` on the input's device
(seeded by ``seed``; no host copies), apply them with probability ``prob`` per sample and return a
``BatchAugResult(image, label, params)``; ``forward(x, params=...)`` replays a call. Samples not drawn
for augmentation come back bit-identical. The RGB modules pass ``label`` through; ``BatchDihedral2D``
applies the same element to the label. ``check_finite=True`` checks the RGB value range once per
batch (one host sync; uint8 0..255 or float [0, 1], no NaN); set it False inside tight GPU loops.

The normalisers (:class:`BatchMacenkoNormalize`, :class:`BatchReinhardNormalize`) are deterministic
and return ``(images, passthrough (B,) bool)``.

Example:
    >>> import torch
    >>> from monai_ext.transforms.batch import BatchAugChain, BatchDihedral2D, BatchHEDJitter
    >>> chain = BatchAugChain([BatchHEDJitter(prob=0.5, seed=0), BatchDihedral2D(prob=0.5, seed=0)])
    >>> x, lab = torch.rand(4, 3, 8, 8), torch.zeros(4, 1, 8, 8, dtype=torch.long)
    >>> out = chain(x, lab)
    >>> torch.equal(chain(x, lab, params=out.params).image, out.image)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from monai_ext.transforms.batch.base import (
    BatchAugmentation,
    check_batch_image,
    check_batch_label,
    value_range,
)
from monai_ext.transforms.functional import stain as F

__all__ = [
    "BatchMacenkoNormalize",
    "BatchReinhardNormalize",
    "BatchHEDJitter",
    "BatchHSVJitter",
    "BatchRGBBrightnessContrast",
    "BatchRGBGaussianBlur",
    "BatchDihedral2D",
]


def _check_rgb_batch(x: Tensor, owner: str, check_values: bool) -> None:
    """(B, 3, H, W) uint8 or floating batch; with ``check_values`` also the RGB range (one sync)."""
    check_batch_image(x, owner, spatial_dims=(2,), num_channels=3, allow_integer=True, check_finite=False)
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise TypeError(
            f"{owner}: `image` must be uint8 (0..255) or floating point in [0, 1], got {x.dtype}."
        )
    if check_values:
        F.check_rgb(x, f"{owner}: `image`")


def _non_negative(owner: str, **values: float) -> None:
    for name, v in values.items():
        if v < 0:
            raise ValueError(f"{owner}: `{name}` must be >= 0, got {v}.")


class _RGBAugmentation(BatchAugmentation):
    """Per-sample RGB augmentation: (B, 3, H, W) uint8 or float [0, 1]; label passes through.

    Subclasses declare their parameters in ``ranges()`` (name -> ``(low, high, width)``, each drawn
    ``U(low, high)`` with shape ``(B,)`` or ``(B, width)``) and the ``kernel`` called as
    ``kernel(image, *params in that order, **kernel_kwargs())``.
    """

    allow_integer = True
    spatial_dims = (2,)
    kernel: Any = None

    def __init__(self, prob: float = 0.5, seed: int | None = None, check_finite: bool = True) -> None:
        super().__init__(prob=prob, seed=seed, num_channels=3, check_finite=check_finite)

    def ranges(self) -> dict[str, tuple[float, float, int | None]]:
        raise NotImplementedError

    def kernel_kwargs(self) -> dict[str, Any]:
        return {}

    def validate(self, image: Tensor, label: Tensor | None) -> None:
        """Shape, dtype and (with ``check_finite``) the RGB value range: uint8 0..255 or float [0, 1]."""
        _check_rgb_batch(image, type(self).__name__, self.check_finite)
        check_batch_label(label, image, type(self).__name__)

    def draw(self, image, generator):
        b, dev = image.shape[0], image.device
        return {
            name: self._uniform(lo, hi, b, generator, dev, *(() if width is None else (width,)))
            for name, (lo, hi, width) in self.ranges().items()
        }

    def apply(self, image, label, params):
        out = type(self).kernel(image, *(params[name] for name in self.ranges()), **self.kernel_kwargs())
        return self._blend(params["apply"], out, image), label


class BatchHEDJitter(_RGBAugmentation):
    """Tellez et al. 2018 HED augmentation per sample: ``alpha ~ U(1 - sigma, 1 + sigma)``,
    ``beta ~ U(-bias, bias)``, (B, 3) each, in scikit-image HED units.
    ``bias`` is in the current scikit-image HED units (``log(rgb) / log(1e-6)``); Tellez et al.'s
    0.05 was in the older ``-log(rgb + 2)`` units, where the same shift changes a tissue pixel about 4x
    less, so the default here is 0.01.

    Example:
        >>> out = BatchHEDJitter(prob=1.0, seed=0)(torch.rand(4, 3, 8, 8))
        >>> out.params["alpha"].shape
        torch.Size([4, 3])
    """

    kernel = F.hed_jitter

    def __init__(
        self,
        prob: float = 0.5,
        sigma: float = 0.05,
        bias: float = 0.01,
        seed: int | None = None,
        check_finite: bool = True,
    ) -> None:
        super().__init__(prob, seed, check_finite)
        _non_negative("BatchHEDJitter", sigma=sigma, bias=bias)
        self.sigma, self.bias = sigma, bias

    def ranges(self):
        return {"alpha": (1 - self.sigma, 1 + self.sigma, 3), "beta": (-self.bias, self.bias, 3)}


class BatchHSVJitter(_RGBAugmentation):
    """Per-sample hue shift ``U(-hue, hue)``, saturation / value factors ``U(1 - s, 1 + s)``.

    Example:
        >>> BatchHSVJitter(prob=1.0, seed=0)(torch.rand(2, 3, 8, 8)).image.shape
        torch.Size([2, 3, 8, 8])
    """

    kernel = F.hsv_jitter

    def __init__(
        self,
        prob: float = 0.5,
        hue: float = 0.05,
        saturation: float = 0.2,
        value: float = 0.2,
        seed: int | None = None,
        check_finite: bool = True,
    ) -> None:
        super().__init__(prob, seed, check_finite)
        _non_negative("BatchHSVJitter", hue=hue, saturation=saturation, value=value)
        self.hue, self.saturation, self.value = hue, saturation, value

    def ranges(self):
        return {
            "hue": (-self.hue, self.hue, None),
            "saturation": (1 - self.saturation, 1 + self.saturation, None),
            "value": (1 - self.value, 1 + self.value, None),
        }


class BatchRGBBrightnessContrast(_RGBAugmentation):
    """Per-sample brightness offset ``U(-brightness, brightness)`` and contrast ``U(1 - c, 1 + c)``.

    Example:
        >>> BatchRGBBrightnessContrast(prob=1.0, seed=0)(torch.rand(2, 3, 8, 8)).image.shape
        torch.Size([2, 3, 8, 8])
    """

    kernel = F.rgb_brightness_contrast

    def __init__(
        self,
        prob: float = 0.5,
        brightness: float = 0.1,
        contrast: float = 0.2,
        seed: int | None = None,
        check_finite: bool = True,
    ) -> None:
        super().__init__(prob, seed, check_finite)
        _non_negative("BatchRGBBrightnessContrast", brightness=brightness, contrast=contrast)
        self.brightness, self.contrast = brightness, contrast

    def ranges(self):
        return {
            "brightness": (-self.brightness, self.brightness, None),
            "contrast": (1 - self.contrast, 1 + self.contrast, None),
        }


class BatchRGBGaussianBlur(_RGBAugmentation):
    """Per-sample Gaussian blur, ``sigma ~ U(*sigma)`` pixels (kernel radius from the upper bound).

    Example:
        >>> BatchRGBGaussianBlur(prob=1.0, seed=0)(torch.rand(2, 3, 16, 16)).image.shape
        torch.Size([2, 3, 16, 16])
    """

    kernel = F.rgb_gaussian_blur

    def __init__(
        self,
        prob: float = 0.5,
        sigma: float | Sequence[float] = (0.1, 1.5),
        seed: int | None = None,
        check_finite: bool = True,
    ) -> None:
        super().__init__(prob, seed, check_finite)
        self.sigma = value_range(sigma, "sigma", "BatchRGBGaussianBlur", low=0.0)

    def ranges(self):
        return {"sigma": (*self.sigma, None)}

    def kernel_kwargs(self):
        return {"max_sigma": self.sigma[1]}


class BatchDihedral2D(BatchAugmentation):
    """Per-sample dihedral element ``k`` in 0..7 (square patches), the same for image and label.

    Any dtype and channel count for image and label (a pure index permutation, so labels stay
    exact); samples not drawn get ``k = 0`` (identity).

    Example:
        >>> out = BatchDihedral2D(prob=1.0, seed=0)(torch.rand(2, 3, 8, 8), torch.zeros(2, 1, 8, 8))
        >>> out.params["k"].shape, out.label.shape
        (torch.Size([2]), torch.Size([2, 1, 8, 8]))
    """

    transforms_label = True
    allow_integer = True
    spatial_dims = (2,)

    def __init__(self, prob: float = 0.5, seed: int | None = None, check_finite: bool = True) -> None:
        super().__init__(prob=prob, seed=seed, check_finite=check_finite)

    def validate(self, image, label):
        super().validate(image, label)
        if image.shape[-1] != image.shape[-2]:
            raise ValueError(
                f"BatchDihedral2D: `image` must be square (H == W) for per-sample rotations, "
                f"got {tuple(image.shape)}."
            )

    def draw(self, image, generator):
        return {"k": torch.randint(0, 8, (image.shape[0],), generator=generator, device=image.device)}

    def apply(self, image, label, params):
        k = torch.where(params["apply"], params["k"], 0)
        return F.dihedral_2d(image, k), None if label is None else F.dihedral_2d(label, k)


class BatchMacenkoNormalize(nn.Module):
    """Batched Macenko normalisation to target stains; returns ``(images, passthrough (B,) bool)``.

    Background-only / near-empty / flat / non-finite patches come back unchanged and are flagged.
    ``fit_target(image)`` sets the target from an image, ``fit_slide(region_or_tiles)`` fixes one
    slide-level stain matrix for later batches (seam-free tiles), ``reset_slide()`` goes back to
    per-patch fits. Targets are buffers, so ``.to(device)`` moves them.

    Example:
        >>> norm = BatchMacenkoNormalize()
        >>> out, passthrough = norm(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))
        >>> out.shape, passthrough.dtype
        (torch.Size([4, 3, 32, 32]), torch.bool)
    """

    def __init__(
        self,
        target_stains: Sequence | Tensor = F.DEFAULT_TARGET_HE,
        target_max_conc: Sequence | Tensor = F.DEFAULT_MAX_CONC,
        tli: float = 240.0,
        alpha: float = 1.0,
        beta: float = 0.2,
        od_floor: float = 0.08,
        conc_percentile: float = 99.0,
        min_tissue_fraction: float = 0.01,
        min_tissue_pixels: int = 64,
        exclude_ink: bool = True,
        validate: bool = True,
    ) -> None:
        super().__init__()
        ts, tm = F.macenko_target(target_stains, target_max_conc, "BatchMacenkoNormalize")
        self.register_buffer("target_stains", ts)
        self.register_buffer("target_max_conc", tm)
        self.kwargs = {
            "tli": tli,
            "alpha": alpha,
            "beta": beta,
            "od_floor": od_floor,
            "conc_percentile": conc_percentile,
            "min_tissue_fraction": min_tissue_fraction,
            "min_tissue_pixels": min_tissue_pixels,
            "exclude_ink": exclude_ink,
        }
        self.validate = validate
        self.slide_fit: F.MacenkoFit | None = None
        self.owner = "BatchMacenkoNormalize"  # the name in error messages (the array layer sets its own)

    def _pooled_fit(self, region: Tensor, method: str, arg: str) -> F.MacenkoFit:
        """Pooled fit of ``region`` (3, H, W) or (B, 3, H, W); raises (naming ``owner``) without tissue."""
        F.check_rgb(region, f"{self.owner}.{method}: `{arg}`")
        fit = F.macenko_fit(region, pool=True, **self.kwargs)
        if bool(fit.passthrough[0]):
            raise ValueError(f"{self.owner}.{method}: `{arg}` has too little tissue to fit stains.")
        return fit

    def fit_target(self, image: Tensor) -> BatchMacenkoNormalize:
        """Target stains / max concentrations from one image (3, H, W) or pooled tiles (B, 3, H, W)."""
        fit = self._pooled_fit(image, "fit_target", "image")
        self.target_stains.copy_(fit.stains[0].to(self.target_stains.device))
        self.target_max_conc.copy_(fit.max_conc[0].to(self.target_max_conc.device))
        return self

    def fit_slide(self, region: Tensor) -> F.MacenkoFit:
        """One stain matrix for a whole slide from a region (3, H, W) or tiles (B, 3, H, W)."""
        self.slide_fit = self._pooled_fit(region, "fit_slide", "region")
        return self.slide_fit

    def reset_slide(self) -> None:
        self.slide_fit = None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _check_rgb_batch(x, self.owner, self.validate)
        return F.macenko_normalize(
            x, self.target_stains, self.target_max_conc, fit=self.slide_fit, **self.kwargs
        )


class BatchReinhardNormalize(nn.Module):
    """Batched Reinhard (LAB mean / std) normalisation; returns ``(images, passthrough (B,) bool)``.

    Give the target LAB ``target_mean`` / ``target_std`` or build with ``from_target(image)``.

    Example:
        >>> norm = BatchReinhardNormalize((65.0, 25.0, -15.0), (15.0, 8.0, 6.0))
        >>> out, passthrough = norm(torch.rand(2, 3, 16, 16) * 0.8)
        >>> out.shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(
        self,
        target_mean: Sequence[float] | Tensor,
        target_std: Sequence[float] | Tensor,
        beta: float = 0.2,
        od_floor: float = 0.08,
        min_tissue_fraction: float = 0.01,
        min_tissue_pixels: int = 64,
        exclude_ink: bool = True,
        validate: bool = True,
    ) -> None:
        super().__init__()
        self.register_buffer("target_mean", torch.as_tensor(target_mean, dtype=torch.float32).reshape(3))
        self.register_buffer("target_std", torch.as_tensor(target_std, dtype=torch.float32).reshape(3))
        self.kwargs = {
            "beta": beta,
            "od_floor": od_floor,
            "min_tissue_fraction": min_tissue_fraction,
            "min_tissue_pixels": min_tissue_pixels,
            "exclude_ink": exclude_ink,
        }
        self.validate = validate
        self.slide_fit: F.ReinhardFit | None = None

    @classmethod
    def from_target(cls, image: Tensor, **kwargs) -> BatchReinhardNormalize:
        """Build with the target statistics of ``image`` (3, H, W) or pooled tiles."""
        return cls((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), **kwargs).fit_target(image)

    def fit_target(self, image: Tensor) -> BatchReinhardNormalize:
        """Target LAB statistics from an image (3, H, W) or pooled tiles."""
        F.check_rgb(image, "BatchReinhardNormalize.fit_target: `image`")
        fit = F.reinhard_fit(image, pool=True, **self.kwargs)
        if bool(fit.passthrough[0]):
            raise ValueError("BatchReinhardNormalize.fit_target: `image` has too little tissue.")
        self.target_mean.copy_(fit.mean[0])
        self.target_std.copy_(fit.std[0])
        return self

    def fit_slide(self, region: Tensor) -> F.ReinhardFit:
        """Source statistics for a whole slide from a region or tiles."""
        F.check_rgb(region, "BatchReinhardNormalize.fit_slide: `region`")
        fit = F.reinhard_fit(region, pool=True, **self.kwargs)
        if bool(fit.passthrough[0]):
            raise ValueError("BatchReinhardNormalize.fit_slide: `region` has too little tissue.")
        self.slide_fit = fit
        return fit

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _check_rgb_batch(x, "BatchReinhardNormalize", self.validate)
        kw = {} if self.slide_fit is not None else self.kwargs
        return F.reinhard_normalize(x, self.target_mean, self.target_std, fit=self.slide_fit, **kw)
