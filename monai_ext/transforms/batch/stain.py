"""Batched histology augmentations and normalisers (``nn.Module``) for (B, 3, H, W) batches on the device.

Random modules draw per-sample parameters as (B,) tensors from a ``torch.Generator`` on the input's
device (seeded by ``seed``; no host copies), apply them with probability ``prob`` per sample, keep
them in ``self.last_params`` and replay them with ``forward(x, params=...)``. Samples not drawn for
augmentation come back bit-identical. ``validate=True`` checks the value range once per batch
(one host sync; uint8 0..255 or float [0, 1]); set it False inside tight GPU loops.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

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


def _check(x: Tensor, name: str, validate: bool, rgb: bool = True) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a (B, C, H, W) batch tensor, got {shape}.")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: empty batch (B = 0).")
    if rgb and validate:
        F.check_rgb(x, f"{name}: input")


class _BatchRandom(nn.Module):
    """Shared machinery: device generator, per-sample ``prob``, ``last_params`` and replay."""

    name = ""
    rgb = True

    def __init__(self, prob: float = 0.5, seed: int | None = None, validate: bool = True) -> None:
        super().__init__()
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"{type(self).__name__}: `prob` must be in [0, 1], got {prob}.")
        self.prob, self.seed, self.validate = prob, seed, validate
        self._gen: torch.Generator | None = None
        self.last_params: dict[str, Tensor] | None = None

    def set_seed(self, seed: int | None) -> None:
        """Restart the random stream (on the next batch's device)."""
        self.seed, self._gen = seed, None

    def generator(self, device: torch.device) -> torch.Generator:
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device)
            if self.seed is None:
                self._gen.seed()
            else:
                self._gen.manual_seed(self.seed)
        return self._gen

    def _uniform(self, b: int, low: float, high: float, g: torch.Generator, dev, *shape: int) -> Tensor:
        return torch.rand((b, *shape), generator=g, device=dev) * (high - low) + low

    def sample(self, b: int, device: torch.device) -> dict[str, Tensor]:
        """Draw parameters for a batch of ``b``: always an ``apply`` (B,) bool entry."""
        g = self.generator(device)
        params = {"apply": torch.rand(b, generator=g, device=device) < self.prob}
        params.update(self._sample(b, g, device))
        return params

    def _sample(self, b: int, g: torch.Generator, device: torch.device) -> dict[str, Tensor]:
        raise NotImplementedError

    def _apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, params: dict[str, Tensor] | None = None) -> Tensor:
        _check(x, type(self).__name__, self.validate, self.rgb)
        if params is None:
            params = self.sample(x.shape[0], x.device)
        self.last_params = params
        out = self._apply(x, params)
        return torch.where(params["apply"].to(x.device)[:, None, None, None], out, x)


class BatchHEDJitter(_BatchRandom):
    """Tellez et al. 2018 HED augmentation per sample: ``alpha ~ U(1 - sigma, 1 + sigma)``,
    ``beta ~ U(-bias, bias)``, (B, 3) each, in scikit-image HED units.

    Example:
        >>> aug = BatchHEDJitter(prob=1.0, seed=0)
        >>> y = aug(torch.rand(4, 3, 8, 8))
        >>> aug.last_params["alpha"].shape
        torch.Size([4, 3])
    """

    def __init__(
        self,
        prob: float = 0.5,
        sigma: float = 0.05,
        bias: float = 0.05,
        seed: int | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__(prob, seed, validate)
        self.sigma, self.bias = sigma, bias

    def _sample(self, b, g, device):
        return {
            "alpha": self._uniform(b, 1 - self.sigma, 1 + self.sigma, g, device, 3),
            "beta": self._uniform(b, -self.bias, self.bias, g, device, 3),
        }

    def _apply(self, x, params):
        return F.hed_jitter(x, params["alpha"], params["beta"])


class BatchHSVJitter(_BatchRandom):
    """Per-sample hue shift ``U(-hue, hue)``, saturation / value factors ``U(1 - s, 1 + s)``.

    Example:
        >>> BatchHSVJitter(prob=1.0, seed=0)(torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 3, 8, 8])
    """

    def __init__(
        self,
        prob: float = 0.5,
        hue: float = 0.05,
        saturation: float = 0.2,
        value: float = 0.2,
        seed: int | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__(prob, seed, validate)
        self.hue, self.saturation, self.value = hue, saturation, value

    def _sample(self, b, g, device):
        return {
            "hue": self._uniform(b, -self.hue, self.hue, g, device),
            "saturation": self._uniform(b, 1 - self.saturation, 1 + self.saturation, g, device),
            "value": self._uniform(b, 1 - self.value, 1 + self.value, g, device),
        }

    def _apply(self, x, params):
        return F.hsv_jitter(x, params["hue"], params["saturation"], params["value"])


class BatchRGBBrightnessContrast(_BatchRandom):
    """Per-sample brightness offset ``U(-brightness, brightness)`` and contrast ``U(1 - c, 1 + c)``.

    Example:
        >>> BatchRGBBrightnessContrast(prob=1.0, seed=0)(torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 3, 8, 8])
    """

    def __init__(
        self,
        prob: float = 0.5,
        brightness: float = 0.1,
        contrast: float = 0.2,
        seed: int | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__(prob, seed, validate)
        self.brightness, self.contrast = brightness, contrast

    def _sample(self, b, g, device):
        return {
            "brightness": self._uniform(b, -self.brightness, self.brightness, g, device),
            "contrast": self._uniform(b, 1 - self.contrast, 1 + self.contrast, g, device),
        }

    def _apply(self, x, params):
        return F.rgb_brightness_contrast(x, params["brightness"], params["contrast"])


class BatchRGBGaussianBlur(_BatchRandom):
    """Per-sample Gaussian blur, ``sigma ~ U(*sigma)`` pixels (kernel radius from the upper bound).

    Example:
        >>> BatchRGBGaussianBlur(prob=1.0, seed=0)(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(
        self,
        prob: float = 0.5,
        sigma: tuple[float, float] = (0.1, 1.5),
        seed: int | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__(prob, seed, validate)
        if len(sigma) != 2 or not 0 <= sigma[0] <= sigma[1]:
            raise ValueError(
                f"BatchRGBGaussianBlur: `sigma` must be (low, high), 0 <= low <= high, got {sigma}."
            )
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def _sample(self, b, g, device):
        return {"sigma": self._uniform(b, *self.sigma, g, device)}

    def _apply(self, x, params):
        return F.rgb_gaussian_blur(x, params["sigma"], max_sigma=self.sigma[1])


class BatchDihedral2D(_BatchRandom):
    """Per-sample dihedral element ``k`` in 0..7 (square patches), the same for image and label.

    ``forward(img, label=None, params=None)`` returns ``img`` or ``(img, label)``; any dtype and
    channel count (pure index permutation, so labels stay exact).

    Example:
        >>> aug = BatchDihedral2D(prob=1.0, seed=0)
        >>> img, lab = aug(torch.rand(2, 3, 8, 8), torch.zeros(2, 1, 8, 8))
        >>> aug.last_params["k"].shape
        torch.Size([2])
    """

    rgb = False

    def __init__(self, prob: float = 0.5, seed: int | None = None) -> None:
        super().__init__(prob, seed, validate=False)

    def _sample(self, b, g, device):
        return {"k": torch.randint(0, 8, (b,), generator=g, device=device)}

    def _apply(self, x, params):
        k = torch.where(params["apply"].to(x.device), params["k"].to(x.device), 0)
        return F.dihedral_2d(x, k)

    def forward(  # type: ignore[override]
        self, img: Tensor, label: Tensor | None = None, params: dict[str, Tensor] | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        _check(img, "BatchDihedral2D", False, False)
        if label is not None and (
            label.ndim != 4 or label.shape[0] != img.shape[0] or label.shape[2:] != img.shape[2:]
        ):
            raise ValueError(
                f"BatchDihedral2D: `label` must be (B, C', H, W) like `img` {tuple(img.shape)} in B, H, W; "
                f"got {tuple(label.shape)}"
            )
        if params is None:
            params = self.sample(img.shape[0], img.device)
        self.last_params = params
        out = self._apply(img, params)
        return out if label is None else (out, self._apply(label, params))


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
        ts = torch.as_tensor(target_stains, dtype=torch.float32)
        tm = torch.as_tensor(target_max_conc, dtype=torch.float32)
        if ts.shape != (3, 2) or tm.shape != (2,):
            raise ValueError(
                "BatchMacenkoNormalize: `target_stains` must be (3, 2) and `target_max_conc` (2,), got "
                f"{tuple(ts.shape)} and {tuple(tm.shape)}."
            )
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

    def fit_target(self, image: Tensor) -> BatchMacenkoNormalize:
        """Target stains / max concentrations from one image (3, H, W) or pooled tiles (B, 3, H, W)."""
        F.check_rgb(image, "BatchMacenkoNormalize.fit_target: `image`")
        fit = F.macenko_fit(image, pool=True, **self.kwargs)
        if bool(fit.passthrough[0]):
            raise ValueError("BatchMacenkoNormalize.fit_target: `image` has too little tissue to fit stains.")
        self.target_stains.copy_(fit.stains[0])
        self.target_max_conc.copy_(fit.max_conc[0])
        return self

    def fit_slide(self, region: Tensor) -> F.MacenkoFit:
        """One stain matrix for a whole slide from a region (3, H, W) or tiles (B, 3, H, W)."""
        F.check_rgb(region, "BatchMacenkoNormalize.fit_slide: `region`")
        fit = F.macenko_fit(region, pool=True, **self.kwargs)
        if bool(fit.passthrough[0]):
            raise ValueError("BatchMacenkoNormalize.fit_slide: `region` has too little tissue to fit stains.")
        self.slide_fit = fit
        return fit

    def reset_slide(self) -> None:
        self.slide_fit = None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _check(x, "BatchMacenkoNormalize", self.validate)
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
        _check(x, "BatchReinhardNormalize", self.validate)
        kw = {} if self.slide_fit is not None else self.kwargs
        return F.reinhard_normalize(x, self.target_mean, self.target_std, fit=self.slide_fit, **kw)
