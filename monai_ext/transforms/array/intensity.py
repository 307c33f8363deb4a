"""MONAI-style array intensity transforms (one channel-first sample) over the torch kernels.

They accept torch tensors / MetaTensors (metadata is kept) or numpy arrays (converted to torch), run on
the input's device and compose with ``monai.transforms.Compose``. Random transforms draw their
parameters with MONAI's ``self.R`` (``set_random_state``), so seeded pipelines repeat exactly.

Example:
    >>> import torch
    >>> from monai.transforms import Compose
    >>> from monai_ext.transforms.array import HUWindow, RandGamma
    >>> t = Compose([HUWindow(-160, 240), RandGamma(prob=1.0)]).set_random_state(0)
    >>> t(torch.zeros(1, 4, 4, 4)).shape
    torch.Size([1, 4, 4, 4])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import RandomizableTransform, Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_tensor

from monai_ext.transforms.functional import intensity as fi

__all__ = [
    "HUWindow",
    "MultiWindowHU",
    "PercentileScale",
    "NonzeroZScore",
    "RandGamma",
    "RandLegendreBiasField",
    "RandDeviceGaussianNoise",
    "RandGaussianBlur",
    "RandLowResolution",
]


def to_torch(img: Any, name: str) -> torch.Tensor:
    """numpy / tensor / MetaTensor -> torch (MetaTensor kept); checks for a channel-first 2D/3D sample."""
    img = convert_to_tensor(img, track_meta=True)
    if img.ndim not in (3, 4):
        raise ValueError(
            f"{name}: `img` must be channel-first (C, H, W) or (C, D, H, W), got {tuple(img.shape)}."
        )
    return img


def plain(img: torch.Tensor) -> torch.Tensor:
    """The plain tensor under a MetaTensor (kernels run without metadata overhead)."""
    return img.as_tensor() if isinstance(img, MetaTensor) else img


def rewrap(out: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    """Give ``out`` the metadata of ``img`` if ``img`` is a MetaTensor."""
    if isinstance(img, MetaTensor):
        res = MetaTensor(out)
        res.copy_meta_from(img)
        return res
    return out


def _pair(v: float | Sequence[float], name: str, owner: str) -> tuple[float, float]:
    lo, hi = (float(v), float(v)) if isinstance(v, int | float) else (float(v[0]), float(v[1]))
    if hi < lo:
        raise ValueError(f"{owner}: `{name}` must be (min, max) with min <= max, got {v}.")
    return lo, hi


class HUWindow(Transform):
    """Clip / rescale a HU window ``[a_min, a_max]`` to ``[b_min, b_max]`` (MONAI ``ScaleIntensityRange``).

    Example:
        >>> HUWindow.from_window(level=40, width=400)(torch.tensor([[[40.0]]])).item()
        0.5
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, a_min: float, a_max: float, b_min: float = 0.0, b_max: float = 1.0, clip: bool = True):
        if a_max <= a_min:
            raise ValueError(f"HUWindow: `a_max` must exceed `a_min`, got a_min={a_min}, a_max={a_max}.")
        self.a_min, self.a_max, self.b_min, self.b_max, self.clip = a_min, a_max, b_min, b_max, clip

    @classmethod
    def from_window(cls, level: float, width: float, **kwargs: Any) -> HUWindow:
        """Build from a display window (level, width) in HU."""
        a_min, a_max = fi.window_to_range(level, width)
        return cls(a_min, a_max, **kwargs)

    def __call__(self, img: Any) -> torch.Tensor:
        img = to_torch(img, "HUWindow")
        return rewrap(
            fi.scale_intensity_range(plain(img), self.a_min, self.a_max, self.b_min, self.b_max, self.clip),
            img,
        )


class MultiWindowHU(Transform):
    """One HU channel -> one channel per display window (e.g. soft tissue, lung, bone).

    Example:
        >>> MultiWindowHU(("soft_tissue", "lung", "bone"))(torch.zeros(1, 2, 2, 2)).shape
        torch.Size([3, 2, 2, 2])
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        windows: Sequence[str | tuple[float, float]] = ("soft_tissue", "lung", "bone"),
        b_min: float = 0.0,
        b_max: float = 1.0,
        clip: bool = True,
    ) -> None:
        self.windows, self.b_min, self.b_max, self.clip = list(windows), b_min, b_max, clip
        fi.multi_window_hu(torch.zeros(1, 1, 1), self.windows)  # validate names / widths now

    def __call__(self, img: Any) -> torch.Tensor:
        img = to_torch(img, "MultiWindowHU")
        if img.shape[0] != 1:
            raise ValueError(f"MultiWindowHU: `img` must have 1 channel (HU), got {img.shape[0]}.")
        return rewrap(
            fi.multi_window_hu(
                plain(img), self.windows, self.b_min, self.b_max, self.clip, spatial_dims=img.ndim - 1
            ),
            img,
        )


class PercentileScale(Transform):
    """Exact on-device percentile scaling (MONAI ``ScaleIntensityRangePercentiles``, any volume size).

    Example:
        >>> PercentileScale(0, 100)(torch.arange(5.0).reshape(1, 1, 5)).tolist()
        [[[0.0, 0.25, 0.5, 0.75, 1.0]]]
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        lower: float,
        upper: float,
        b_min: float = 0.0,
        b_max: float = 1.0,
        clip: bool = False,
        channel_wise: bool = False,
    ) -> None:
        if not 0.0 <= lower <= upper <= 100.0:
            raise ValueError(f"PercentileScale: need 0 <= lower <= upper <= 100, got {lower}, {upper}.")
        self.lower, self.upper, self.b_min, self.b_max = lower, upper, b_min, b_max
        self.clip, self.channel_wise = clip, channel_wise

    def __call__(self, img: Any) -> torch.Tensor:
        img = to_torch(img, "PercentileScale")
        out = fi.percentile_scale(
            plain(img),
            self.lower,
            self.upper,
            self.b_min,
            self.b_max,
            self.clip,
            self.channel_wise,
            img.ndim - 1,
        )
        return rewrap(out, img)


class NonzeroZScore(Transform):
    """Per-channel z-score over non-zero voxels (as ``NormalizeIntensity(nonzero=True, channel_wise=True)``).

    Example:
        >>> NonzeroZScore()(torch.tensor([[[0.0, 1.0, 3.0]]])).tolist()
        [[[0.0, -1.0, 1.0]]]
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, nonzero: bool = True, channel_wise: bool = True) -> None:
        self.nonzero, self.channel_wise = nonzero, channel_wise

    def __call__(self, img: Any) -> torch.Tensor:
        img = to_torch(img, "NonzeroZScore")
        return rewrap(
            fi.nonzero_zscore(plain(img), self.nonzero, self.channel_wise, spatial_dims=img.ndim - 1), img
        )


class RandGamma(RandomizableTransform):
    """Gamma contrast with ``gamma ~ U(gamma)`` on the min-max range (MONAI ``RandAdjustContrast``).

    Example:
        >>> RandGamma(prob=1.0, gamma=2.0)(torch.tensor([[[0.0, 0.5, 1.0]]])).round(decimals=3).tolist()
        [[[0.0, 0.25, 1.0]]]
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, prob: float = 0.1, gamma: float | Sequence[float] = (0.5, 4.5)) -> None:
        RandomizableTransform.__init__(self, prob)
        self.gamma_range = _pair(gamma, "gamma", "RandGamma")
        if self.gamma_range[0] <= 0:
            raise ValueError(f"RandGamma: `gamma` must be > 0, got {gamma}.")
        self.gamma = 1.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.gamma = float(self.R.uniform(*self.gamma_range))

    def __call__(self, img: Any, randomize: bool = True) -> torch.Tensor:
        img = to_torch(img, "RandGamma")
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        return rewrap(fi.adjust_gamma(plain(img), self.gamma, spatial_dims=img.ndim - 1), img)


class RandLegendreBiasField(RandomizableTransform):
    """Multiply by ``exp`` of a random Legendre polynomial field (MRI bias field, as ``RandBiasField``).

    Example:
        >>> RandLegendreBiasField(prob=1.0, degree=2)(torch.ones(1, 4, 4)).shape
        torch.Size([1, 4, 4])
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, prob: float = 0.1, degree: int = 3, coeff_range: Sequence[float] = (0.0, 0.1)) -> None:
        RandomizableTransform.__init__(self, prob)
        if degree < 1:
            raise ValueError(f"RandLegendreBiasField: `degree` must be >= 1, got {degree}.")
        self.degree, self.coeff_range = degree, _pair(coeff_range, "coeff_range", "RandLegendreBiasField")
        self.coeffs: list[float] = []

    def randomize(self, data: Any = None, spatial_dims: int = 3) -> None:
        super().randomize(None)
        if self._do_transform:
            k = fi.num_bias_coeffs(spatial_dims, self.degree)
            self.coeffs = self.R.uniform(*self.coeff_range, size=k).tolist()

    def __call__(self, img: Any, randomize: bool = True) -> torch.Tensor:
        img = to_torch(img, "RandLegendreBiasField")
        if randomize:
            self.randomize(spatial_dims=img.ndim - 1)
        if not self._do_transform:
            return img
        coeffs = torch.tensor([self.coeffs], dtype=torch.float32).to(img.device, non_blocking=True)
        return rewrap(fi.apply_bias_field(plain(img), coeffs, self.degree, spatial_dims=img.ndim - 1), img)


class RandDeviceGaussianNoise(RandomizableTransform):
    """Gaussian noise drawn on the image's device in its dtype; ``std ~ U(0, std)`` if ``sample_std``.

    Example:
        >>> RandDeviceGaussianNoise(prob=1.0, std=0.0)(torch.zeros(1, 2, 2)).abs().max().item()
        0.0
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self, prob: float = 0.1, mean: float = 0.0, std: float = 0.1, sample_std: bool = True
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if std < 0:
            raise ValueError(f"RandDeviceGaussianNoise: `std` must be >= 0, got {std}.")
        self.mean, self.std, self.sample_std = mean, std, sample_std
        self._std, self._seed = std, 0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self._std = float(self.R.uniform(0, self.std)) if self.sample_std else self.std
            self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, img: Any, randomize: bool = True) -> torch.Tensor:
        img = to_torch(img, "RandDeviceGaussianNoise")
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        g = torch.Generator(device=img.device)
        g.manual_seed(self._seed)
        return rewrap(fi.add_gaussian_noise(plain(img), self._std, self.mean, generator=g), img)


class RandGaussianBlur(RandomizableTransform):
    """Separable Gaussian blur with ``sigma ~ U(sigma)`` voxels.

    Example:
        >>> RandGaussianBlur(prob=1.0)(torch.ones(1, 5, 5)).allclose(torch.ones(1))
        True
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, prob: float = 0.1, sigma: float | Sequence[float] = (0.5, 1.5)) -> None:
        RandomizableTransform.__init__(self, prob)
        self.sigma_range = _pair(sigma, "sigma", "RandGaussianBlur")
        self.sigma = self.sigma_range[0]

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.sigma = float(self.R.uniform(*self.sigma_range))

    def __call__(self, img: Any, randomize: bool = True) -> torch.Tensor:
        img = to_torch(img, "RandGaussianBlur")
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        return rewrap(fi.gaussian_blur(plain(img), self.sigma, spatial_dims=img.ndim - 1), img)


class RandLowResolution(RandomizableTransform):
    """Simulated low resolution with ``zoom ~ U(zoom)`` (nearest down, linear up).

    Example:
        >>> RandLowResolution(prob=1.0, zoom=0.5)(torch.rand(1, 8, 8)).shape
        torch.Size([1, 8, 8])
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, prob: float = 0.1, zoom: float | Sequence[float] = (0.5, 1.0)) -> None:
        RandomizableTransform.__init__(self, prob)
        self.zoom_range = _pair(zoom, "zoom", "RandLowResolution")
        if not 0 < self.zoom_range[0] <= self.zoom_range[1] <= 1:
            raise ValueError(f"RandLowResolution: `zoom` must lie in (0, 1], got {zoom}.")
        self.zoom = 1.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.zoom = float(self.R.uniform(*self.zoom_range))

    def __call__(self, img: Any, randomize: bool = True) -> torch.Tensor:
        img = to_torch(img, "RandLowResolution")
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        return rewrap(fi.simulate_low_resolution(plain(img), self.zoom, spatial_dims=img.ndim - 1), img)
