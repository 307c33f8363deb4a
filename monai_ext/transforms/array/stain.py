"""MONAI array transforms for histology colour and geometry over :mod:`monai_ext.transforms.functional.stain`.

One channel-first RGB sample ``(3, H, W)`` per call (torch, numpy or MetaTensor; metadata is kept):
uint8 in 0..255 or float in [0, 1] (checked; float in [0, 255] is rejected). Random transforms draw
their parameters with MONAI's ``self.R`` in ``randomize()``; the batched, device-side counterparts
live in :mod:`monai_ext.transforms.batch.stain`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.transforms import InvertibleTransform, RandomizableTransform, Transform
from monai.utils import TraceKeys, TransformBackends, convert_to_dst_type, convert_to_tensor

from monai_ext.transforms.functional import stain as F

__all__ = [
    "HistoTissueMask",
    "MacenkoStainNormalize",
    "ReinhardStainNormalize",
    "RandHEDJitter",
    "RandHSVJitter",
    "RandRGBBrightnessContrast",
    "RandDihedral2D",
    "RandRGBGaussianBlur",
]


def _rgb(img: NdarrayOrTensor, name: str) -> torch.Tensor:
    """Plain torch tensor of one RGB sample, checked (shape, dtype, value range)."""
    t = convert_to_tensor(img, track_meta=False)
    if t.ndim != 3:
        raise ValueError(
            f"{name}: expected one channel-first RGB image (3, H, W), got shape {tuple(t.shape)}."
        )
    F.check_rgb(t, f"{name}: `img`")
    return t


def _back(out: torch.Tensor, img: NdarrayOrTensor) -> NdarrayOrTensor:
    return convert_to_dst_type(out, img, dtype=out.dtype)[0]


class HistoTissueMask(Transform):
    """Boolean (1, H, W) tissue mask of an RGB patch (OD threshold or saturation, pen ink excluded).

    Example:
        >>> HistoTissueMask()(torch.full((3, 4, 4), 255, dtype=torch.uint8)).any()
        tensor(False)
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        beta: float = 0.2,
        od_floor: float = 0.08,
        method: str = "od",
        saturation: float = 0.1,
        exclude_ink: bool = True,
    ):
        if method not in ("od", "saturation"):
            raise ValueError(f"HistoTissueMask: `method` must be 'od' or 'saturation', got {method!r}.")
        self.kwargs = {"beta": beta, "od_floor": od_floor, "method": method, "saturation": saturation}
        self.kwargs["exclude_ink"] = exclude_ink

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        m = F.tissue_mask(_rgb(img, "HistoTissueMask"), **self.kwargs)[None]
        return _back(m, img)


class MacenkoStainNormalize(Transform):
    """Macenko stain normalisation of one patch to target stains (never raises on content).

    Background-only / near-empty / flat patches come back unchanged; ``self.passthrough`` holds the
    last call's flag. ``fit_target(image)`` sets the target from an image; ``fit_slide(region)`` fits
    one stain matrix on a large region (or a (B, 3, H, W) stack of tiles) and applies it to every
    later patch, so tiles of one slide show no seams. Not a clone of MONAI's ``NormalizeHEStains``
    (same maths and defaults, torch, any device, pass-through instead of errors).

    Example:
        >>> norm = MacenkoStainNormalize()
        >>> out = norm(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8))
        >>> out.shape, bool(norm.passthrough) in (True, False)
        (torch.Size([3, 32, 32]), True)
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        target_stains: Sequence | torch.Tensor = F.DEFAULT_TARGET_HE,
        target_max_conc: Sequence | torch.Tensor = F.DEFAULT_MAX_CONC,
        tli: float = 240.0,
        alpha: float = 1.0,
        beta: float = 0.2,
        od_floor: float = 0.08,
        conc_percentile: float = 99.0,
        min_tissue_fraction: float = 0.01,
        min_tissue_pixels: int = 64,
        exclude_ink: bool = True,
    ) -> None:
        self.target_stains, self.target_max_conc = F.macenko_target(
            target_stains, target_max_conc, "MacenkoStainNormalize"
        )
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
        self.slide_fit: F.MacenkoFit | None = None
        self.passthrough: torch.Tensor | None = None

    def fit_target(self, image: NdarrayOrTensor) -> MacenkoStainNormalize:
        """Take target stains and max concentrations from ``image`` (3, H, W); raises if it has no tissue."""
        fit = F.macenko_fit(_rgb(image, "MacenkoStainNormalize.fit_target")[None], **self.kwargs)
        if bool(fit.passthrough[0]):
            raise ValueError("MacenkoStainNormalize.fit_target: `image` has too little tissue to fit stains.")
        self.target_stains, self.target_max_conc = fit.stains[0].cpu(), fit.max_conc[0].cpu()
        return self

    def fit_slide(self, region: NdarrayOrTensor) -> F.MacenkoFit:
        """Fit one stain matrix on a slide region (3, H, W) or tiles (B, 3, H, W); used for later calls."""
        t = convert_to_tensor(region, track_meta=False)
        F.check_rgb(t, "MacenkoStainNormalize.fit_slide: `region`")
        fit = F.macenko_fit(t, pool=True, **self.kwargs)
        if bool(fit.passthrough[0]):
            raise ValueError("MacenkoStainNormalize.fit_slide: `region` has too little tissue to fit stains.")
        self.slide_fit = fit
        return fit

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        t = _rgb(img, "MacenkoStainNormalize")
        out, self.passthrough = F.macenko_normalize(
            t,
            self.target_stains.to(t.device),
            self.target_max_conc.to(t.device),
            fit=self.slide_fit,
            **self.kwargs,
        )
        return _back(out, img)


class ReinhardStainNormalize(Transform):
    """Reinhard colour normalisation (LAB mean / std over tissue) to a target; pass-through like Macenko.

    Give ``target_mean`` / ``target_std`` (LAB) or call ``fit_target(image)``; ``fit_slide(region)``
    fixes the source statistics for all later patches.

    Example:
        >>> norm = ReinhardStainNormalize(target_mean=(65.0, 25.0, -15.0), target_std=(15.0, 8.0, 6.0))
        >>> norm(torch.rand(3, 16, 16) * 0.8).shape
        torch.Size([3, 16, 16])
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        target_mean: Sequence[float] | None = None,
        target_std: Sequence[float] | None = None,
        beta: float = 0.2,
        od_floor: float = 0.08,
        min_tissue_fraction: float = 0.01,
        min_tissue_pixels: int = 64,
        exclude_ink: bool = True,
    ) -> None:
        self.target_mean = None if target_mean is None else torch.as_tensor(target_mean, dtype=torch.float32)
        self.target_std = None if target_std is None else torch.as_tensor(target_std, dtype=torch.float32)
        self.kwargs = {
            "beta": beta,
            "od_floor": od_floor,
            "min_tissue_fraction": min_tissue_fraction,
            "min_tissue_pixels": min_tissue_pixels,
            "exclude_ink": exclude_ink,
        }
        self.slide_fit: F.ReinhardFit | None = None
        self.passthrough: torch.Tensor | None = None

    def fit_target(self, image: NdarrayOrTensor) -> ReinhardStainNormalize:
        """Take the target LAB mean / std from ``image``; raises if it has no tissue."""
        fit = F.reinhard_fit(_rgb(image, "ReinhardStainNormalize.fit_target")[None], **self.kwargs)
        if bool(fit.passthrough[0]):
            raise ValueError("ReinhardStainNormalize.fit_target: `image` has too little tissue.")
        self.target_mean, self.target_std = fit.mean[0].cpu(), fit.std[0].cpu()
        return self

    def fit_slide(self, region: NdarrayOrTensor) -> F.ReinhardFit:
        """Fix source statistics from a slide region (3, H, W) or tiles (B, 3, H, W)."""
        t = convert_to_tensor(region, track_meta=False)
        F.check_rgb(t, "ReinhardStainNormalize.fit_slide: `region`")
        fit = F.reinhard_fit(t, pool=True, **self.kwargs)
        if bool(fit.passthrough[0]):
            raise ValueError("ReinhardStainNormalize.fit_slide: `region` has too little tissue.")
        self.slide_fit = fit
        return fit

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if self.target_mean is None or self.target_std is None:
            raise ValueError(
                "ReinhardStainNormalize: set `target_mean`/`target_std` or call fit_target() first."
            )
        t = _rgb(img, "ReinhardStainNormalize")
        kw = {} if self.slide_fit is not None else self.kwargs
        out, self.passthrough = F.reinhard_normalize(
            t, self.target_mean.to(t.device), self.target_std.to(t.device), fit=self.slide_fit, **kw
        )
        return _back(out, img)


class _RandColour(RandomizableTransform):
    """Shared call path: randomize, then a deterministic functional call with the drawn parameters."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]
    name = ""

    def _apply(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize(None)
        t = _rgb(img, self.name)
        if not self._do_transform:
            return img
        return _back(self._apply(t), img)


class RandHEDJitter(_RandColour):
    """HED stain augmentation (Tellez et al. 2018): per stain ``c' = alpha * c + beta`` in
    Ruifrok-Johnston HED space, ``alpha ~ U(1 - sigma, 1 + sigma)``, ``beta ~ U(-bias, bias)``.

    Example:
        >>> aug = RandHEDJitter(prob=1.0, sigma=0.05, bias=0.05)
        >>> aug.set_random_state(0)(torch.rand(3, 8, 8)).shape
        torch.Size([3, 8, 8])
    """

    name = "RandHEDJitter"

    def __init__(self, prob: float = 0.5, sigma: float = 0.05, bias: float = 0.05) -> None:
        super().__init__(prob)
        if sigma < 0 or bias < 0:
            raise ValueError(f"RandHEDJitter: `sigma` and `bias` must be >= 0, got {sigma}, {bias}.")
        self.sigma, self.bias = sigma, bias
        self.alpha, self.beta = np.ones(3), np.zeros(3)

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.alpha = self.R.uniform(1 - self.sigma, 1 + self.sigma, 3)
            self.beta = self.R.uniform(-self.bias, self.bias, 3)

    def _apply(self, t: torch.Tensor) -> torch.Tensor:
        return F.hed_jitter(t, torch.as_tensor(self.alpha), torch.as_tensor(self.beta))


class RandHSVJitter(_RandColour):
    """Random hue shift (``U(-hue, hue)`` turns), saturation and value factors (``U(1 - s, 1 + s)``).

    Example:
        >>> RandHSVJitter(prob=1.0).set_random_state(0)(torch.rand(3, 8, 8)).shape
        torch.Size([3, 8, 8])
    """

    name = "RandHSVJitter"

    def __init__(
        self, prob: float = 0.5, hue: float = 0.05, saturation: float = 0.2, value: float = 0.2
    ) -> None:
        super().__init__(prob)
        self.ranges = (hue, saturation, value)
        self.params = (0.0, 1.0, 1.0)

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if self._do_transform:
            h, s, v = self.ranges
            self.params = (self.R.uniform(-h, h), self.R.uniform(1 - s, 1 + s), self.R.uniform(1 - v, 1 + v))

    def _apply(self, t: torch.Tensor) -> torch.Tensor:
        return F.hsv_jitter(t, *self.params)


class RandRGBBrightnessContrast(_RandColour):
    """Random brightness offset ``U(-brightness, brightness)`` and contrast factor ``U(1 - c, 1 + c)``.

    Example:
        >>> RandRGBBrightnessContrast(prob=1.0).set_random_state(0)(torch.rand(3, 8, 8)).shape
        torch.Size([3, 8, 8])
    """

    name = "RandRGBBrightnessContrast"

    def __init__(self, prob: float = 0.5, brightness: float = 0.1, contrast: float = 0.2) -> None:
        super().__init__(prob)
        self.ranges = (brightness, contrast)
        self.params = (0.0, 1.0)

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if self._do_transform:
            b, c = self.ranges
            self.params = (self.R.uniform(-b, b), self.R.uniform(1 - c, 1 + c))

    def _apply(self, t: torch.Tensor) -> torch.Tensor:
        return F.rgb_brightness_contrast(t, *self.params)


class RandRGBGaussianBlur(_RandColour):
    """Gaussian blur with ``sigma ~ U(*sigma)`` (pixels), reflect padding.

    Example:
        >>> RandRGBGaussianBlur(prob=1.0).set_random_state(0)(torch.rand(3, 16, 16)).shape
        torch.Size([3, 16, 16])
    """

    name = "RandRGBGaussianBlur"

    def __init__(self, prob: float = 0.5, sigma: tuple[float, float] = (0.1, 1.5)) -> None:
        super().__init__(prob)
        if len(sigma) != 2 or not 0 <= sigma[0] <= sigma[1]:
            raise ValueError(
                f"RandRGBGaussianBlur: `sigma` must be (low, high) with 0 <= low <= high, got {sigma}."
            )
        self.sigma_range = (float(sigma[0]), float(sigma[1]))
        self.sigma = 0.0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.sigma = float(self.R.uniform(*self.sigma_range))

    def _apply(self, t: torch.Tensor) -> torch.Tensor:
        return F.rgb_gaussian_blur(t, self.sigma)


class RandDihedral2D(RandomizableTransform, InvertibleTransform):
    """One of the 8 dihedral elements (quarter turns, then an optional flip) of the last two dims.

    Any channel count and dtype (images and labels alike); invertible through MONAI's inverse
    machinery on MetaTensors (the affine is not updated: pixel-space augmentation for patches).

    Example:
        >>> aug = RandDihedral2D(prob=1.0).set_random_state(0)
        >>> x = torch.rand(1, 4, 4)
        >>> y = aug(x)
        >>> torch.equal(aug.inverse_k(y, aug.k), x)
        True
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, prob: float = 0.5) -> None:
        super().__init__(prob)
        self.k = 0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self.k = int(self.R.randint(8)) if self._do_transform else 0

    @staticmethod
    def inverse_k(img: torch.Tensor, k: int) -> torch.Tensor:
        """Undo element ``k`` (reflections are their own inverse, quarter turns reverse)."""
        return F.dihedral_2d(img, (4 - k) % 4 if k < 4 else k)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize(None)
        t = convert_to_tensor(img, track_meta=False)
        if t.ndim != 3:
            raise ValueError(f"RandDihedral2D: expected a (C, H, W) image, got shape {tuple(t.shape)}.")
        out = convert_to_dst_type(F.dihedral_2d(t, self.k) if self._do_transform else t, img)[0]
        if isinstance(out, torch.Tensor):
            self.push_transform(out, extra_info={"k": self.k})
        return out

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        info = self.pop_transform(data)
        if not info[TraceKeys.DO_TRANSFORM]:
            return data
        t = convert_to_tensor(data, track_meta=False)
        return convert_to_dst_type(self.inverse_k(t, int(info[TraceKeys.EXTRA_INFO]["k"])), data)[0]
