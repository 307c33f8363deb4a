"""Batched intensity augmentations (``nn.Module``) for radiology.

Each module takes ``(B, C, *spatial)`` (2D or 3D) on any device, draws its per-sample parameters as
``(B,)`` tensors from a ``torch.Generator`` living on the input's device (seeded by ``seed``), applies
each sample with probability ``prob``, and returns a
:class:`~monai_ext.transforms.batch.base.BatchAugResult` ``(image, label, params)``.
Passing ``params`` back replays the call exactly; intensity modules pass ``label`` through unchanged.

Example:
    >>> import torch
    >>> from monai_ext.transforms.batch import BatchRandGaussianNoise
    >>> aug = BatchRandGaussianNoise(prob=0.5, std=0.1, seed=0)
    >>> out = aug(torch.zeros(4, 1, 8, 8, 8))
    >>> torch.equal(aug(torch.zeros(4, 1, 8, 8, 8), params=out.params).image, out.image)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from monai_ext.transforms.batch.base import BatchAugmentation, value_range
from monai_ext.transforms.functional import intensity as fi

__all__ = [
    "BatchHUWindow",
    "BatchRandGaussianNoise",
    "BatchRandGamma",
    "BatchRandBiasField",
    "BatchRandGaussianBlur",
    "BatchRandLowResolution",
    "BatchRandShiftIntensity",
]


class BatchHUWindow(BatchAugmentation):
    """Deterministic HU window / ``ScaleIntensityRange`` on a batch (label passes through).

    Example:
        >>> BatchHUWindow(-1000, 1000)(torch.zeros(1, 1, 2, 2)).image.unique().tolist()
        [0.5]
    """

    allow_integer = True

    def __init__(
        self,
        a_min: float,
        a_max: float,
        b_min: float = 0.0,
        b_max: float = 1.0,
        clip: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(prob=1.0, **kwargs)
        if a_max <= a_min:
            raise ValueError(f"BatchHUWindow: `a_max` must exceed `a_min`, got a_min={a_min}, a_max={a_max}.")
        self.a_min, self.a_max, self.b_min, self.b_max, self.clip = a_min, a_max, b_min, b_max, clip

    def apply(self, image, label, params):
        return fi.scale_intensity_range(
            image, self.a_min, self.a_max, self.b_min, self.b_max, self.clip
        ), label


class BatchRandGaussianNoise(BatchAugmentation):
    """Add N(mean, s) noise, ``s ~ U(0, std)`` per sample (or ``std`` if ``sample_std=False``).

    Noise is drawn on the device in the image dtype; ``params["noise_state"]`` holds the generator
    state so a replay draws the same noise.

    Example:
        >>> out = BatchRandGaussianNoise(std=0.1, seed=0)(torch.zeros(2, 1, 4, 4))
        >>> sorted(out.params)
        ['apply', 'noise_state', 'std']
    """

    supports_inplace = True

    def __init__(
        self, prob: float = 0.1, mean: float = 0.0, std: float = 0.1, sample_std: bool = True, **kwargs
    ):
        super().__init__(prob=prob, **kwargs)
        if std < 0:
            raise ValueError(f"BatchRandGaussianNoise: `std` must be >= 0, got {std}.")
        self.mean, self.std, self.sample_std = mean, std, sample_std

    def draw(self, image, generator):
        b, dev = image.shape[0], image.device
        std = (
            self._uniform(0.0, self.std, b, generator, dev) if self.sample_std else torch.full((b,), self.std)
        )
        return {"std": std.to(dev), "noise_state": generator.get_state()}

    def apply(self, image, label, params, inplace: bool = False):
        g = torch.Generator(device=image.device)
        g.set_state(params["noise_state"])
        own = self._gen is not None and self._gen.device == image.device
        fresh = own and torch.equal(self._gen.get_state(), params["noise_state"])
        std = (params["std"] * params["apply"]).to(image.dtype)
        mean = (self.mean * params["apply"]).to(image.dtype) if self.mean else 0.0
        inplace = inplace and image.is_floating_point()
        out = fi.add_gaussian_noise(image, std, mean, generator=g, out=image if inplace else None)
        if fresh:  # a new draw (not a replay): move the module's generator past this noise
            self._gen.set_state(g.get_state())
        return out, label


class BatchRandGamma(BatchAugmentation):
    """Gamma contrast on the per-sample min-max range, ``gamma ~ U(gamma)`` (MONAI ``RandAdjustContrast``).

    Example:
        >>> BatchRandGamma(gamma=(0.7, 1.5), seed=0)(torch.rand(2, 1, 4, 4)).image.shape
        torch.Size([2, 1, 4, 4])
    """

    def __init__(self, prob: float = 0.1, gamma: float | Sequence[float] = (0.5, 4.5), **kwargs):
        super().__init__(prob=prob, **kwargs)
        self.gamma = value_range(gamma, "gamma", "BatchRandGamma", low=1e-6)

    def draw(self, image, generator):
        return {"gamma": self._uniform(*self.gamma, image.shape[0], generator, image.device)}

    def apply(self, image, label, params):
        def run(x, idx):
            return fi.adjust_gamma(x, params["gamma"][idx], spatial_dims=x.ndim - 2)

        return self._on_drawn(params["apply"], image, run), label


class BatchRandBiasField(BatchAugmentation):
    """Multiply by ``exp`` of a random Legendre polynomial field of ``degree`` (MRI bias field).

    Coefficients are ``U(coeff_range)`` per sample, as MONAI ``RandBiasField``.

    Example:
        >>> BatchRandBiasField(degree=2, seed=0)(torch.ones(2, 1, 4, 4)).params["coeffs"].shape
        torch.Size([2, 6])
    """

    def __init__(
        self, prob: float = 0.1, degree: int = 3, coeff_range: Sequence[float] = (0.0, 0.1), **kwargs: Any
    ) -> None:
        super().__init__(prob=prob, **kwargs)
        if degree < 1:
            raise ValueError(f"BatchRandBiasField: `degree` must be >= 1, got {degree}.")
        self.degree, self.coeff_range = degree, value_range(coeff_range, "coeff_range", "BatchRandBiasField")

    def draw(self, image, generator):
        k = fi.num_bias_coeffs(image.ndim - 2, self.degree)
        lo, hi = self.coeff_range
        c = torch.rand(image.shape[0], k, generator=generator, device=image.device) * (hi - lo) + lo
        return {"coeffs": c}

    def apply(self, image, label, params):
        coeffs = params["coeffs"] * params["apply"][:, None]
        return fi.apply_bias_field(image, coeffs, self.degree, spatial_dims=image.ndim - 2), label


class BatchRandGaussianBlur(BatchAugmentation):
    """Separable Gaussian blur with ``sigma ~ U(sigma)`` voxels per sample (one grouped conv per axis).

    Example:
        >>> out = BatchRandGaussianBlur(sigma=(0.5, 1.0), seed=0)(torch.ones(2, 1, 6, 6))
        >>> out.image.allclose(torch.ones(1))
        True
    """

    def __init__(self, prob: float = 0.1, sigma: float | Sequence[float] = (0.5, 1.5), **kwargs: Any) -> None:
        super().__init__(prob=prob, **kwargs)
        self.sigma = value_range(sigma, "sigma", "BatchRandGaussianBlur", low=0.0)
        self.radius = max(1, int(4.0 * self.sigma[1] + 0.999))

    def draw(self, image, generator):
        return {"sigma": self._uniform(*self.sigma, image.shape[0], generator, image.device)}

    def apply(self, image, label, params):
        def run(x, idx):
            return fi.gaussian_blur(x, params["sigma"][idx], radius=self.radius, spatial_dims=x.ndim - 2)

        return self._on_drawn(params["apply"], image, run), label


class BatchRandLowResolution(BatchAugmentation):
    """Simulated low resolution: nearest down-sampling by ``zoom ~ U(zoom)``, linear up-sampling back.

    Example:
        >>> BatchRandLowResolution(zoom=(0.5, 1.0), seed=0)(torch.rand(2, 1, 8, 8)).image.shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, prob: float = 0.1, zoom: float | Sequence[float] = (0.5, 1.0), **kwargs: Any) -> None:
        super().__init__(prob=prob, **kwargs)
        self.zoom = value_range(zoom, "zoom", "BatchRandLowResolution", low=1e-3)
        if self.zoom[1] > 1.0:
            raise ValueError(f"BatchRandLowResolution: `zoom` must lie in (0, 1], got {zoom}.")

    def draw(self, image, generator):
        return {"zoom": self._uniform(*self.zoom, image.shape[0], generator, image.device)}

    def apply(self, image, label, params):
        def run(x, idx):
            return fi.simulate_low_resolution(x, params["zoom"][idx], spatial_dims=x.ndim - 2)

        return self._on_drawn(params["apply"], image, run), label


class BatchRandShiftIntensity(BatchAugmentation):
    """Add ``U(-offset, offset)`` (or ``U(offset)`` for a pair) to each selected sample (MONAI
    ``RandShiftIntensity`` per sample).

    Example:
        >>> out = BatchRandShiftIntensity(prob=1.0, offset=0.5, seed=0)(torch.zeros(2, 1, 4, 4))
        >>> bool((out.image[:, 0, 0, 0] == out.params["offset"]).all())
        True
    """

    def __init__(self, prob: float = 0.1, offset: float | Sequence[float] = 0.1, **kwargs: Any) -> None:
        super().__init__(prob=prob, **kwargs)
        rng = (-abs(float(offset)), abs(float(offset))) if isinstance(offset, int | float) else offset
        self.offset = value_range(rng, "offset", "BatchRandShiftIntensity")

    def draw(self, image, generator):
        return {"offset": self._uniform(*self.offset, image.shape[0], generator, image.device)}

    def apply(self, image, label, params):
        def run(x, idx):
            return fi.shift_intensity(x, params["offset"][idx])

        return self._on_drawn(params["apply"], image, run), label
