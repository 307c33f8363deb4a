"""Batched intensity augmentations (``nn.Module``) for radiology, plus the batch-layer base class.

Each module takes ``(B, C, *spatial)`` (2D or 3D) on any device, draws its per-sample parameters as
``(B,)`` tensors from a ``torch.Generator`` living on the input's device (seeded by ``seed``), applies
each sample with probability ``prob``, and returns a :class:`BatchAugResult` ``(image, label, params)``.
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
from typing import Any, NamedTuple

import torch
from torch import nn

from monai_ext.transforms.functional import intensity as fi

__all__ = [
    "BatchAugResult",
    "BatchAugmentation",
    "BatchHUWindow",
    "BatchRandGaussianNoise",
    "BatchRandGamma",
    "BatchRandBiasField",
    "BatchRandGaussianBlur",
    "BatchRandLowResolution",
]


class BatchAugResult(NamedTuple):
    """Output of a batch augmentation: the image, the label (or None) and the parameters to replay."""

    image: torch.Tensor
    label: torch.Tensor | None
    params: dict[str, Any]


def _range(
    v: float | Sequence[float], name: str, owner: str, low: float | None = None
) -> tuple[float, float]:
    lo, hi = (float(v), float(v)) if isinstance(v, int | float) else (float(v[0]), float(v[1]))
    if hi < lo or (low is not None and lo < low):
        raise ValueError(f"{owner}: `{name}` must be a (min, max) range with min <= max, got {v}.")
    return lo, hi


class BatchAugmentation(nn.Module):
    """Base class: validation, per-device seeded generator, per-sample ``prob`` and parameter replay.

    Subclasses implement ``draw(image, generator) -> dict`` and ``apply(image, label, params)``.
    ``check_finite=True`` rejects NaN/Inf images (one device sync per call; set False in hot loops
    that validate elsewhere, e.g. inside :class:`~monai_ext.transforms.batch.hook.BatchAugChain`).

    Example:
        >>> aug = BatchRandGamma(prob=1.0, gamma=(0.5, 2.0), seed=1)
        >>> aug(torch.rand(2, 1, 4, 4)).params["gamma"].shape
        torch.Size([2])
    """

    transforms_label = False
    allow_integer = False

    def __init__(
        self,
        prob: float = 1.0,
        seed: int | None = None,
        num_channels: int | None = None,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"{type(self).__name__}: `prob` must be in [0, 1], got {prob}.")
        self.prob = float(prob)
        self.seed = seed
        self.num_channels = num_channels
        self.check_finite = check_finite
        self._gen: torch.Generator | None = None

    def set_seed(self, seed: int | None) -> BatchAugmentation:
        """Reseed (drops the current generator)."""
        self.seed, self._gen = seed, None
        return self

    def generator(self, device: torch.device) -> torch.Generator:
        """The module's generator on ``device`` (created and seeded on first use)."""
        if self._gen is None or self._gen.device != device:
            seed = self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(seed)
        return self._gen

    def validate(self, image: torch.Tensor, label: torch.Tensor | None) -> None:
        """Raise a clear error for inputs this module cannot handle."""
        name = type(self).__name__
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"{name}: `image` must be a torch.Tensor, got {type(image).__name__}.")
        if image.ndim not in (4, 5):
            raise ValueError(
                f"{name}: `image` must be (B, C, H, W) or (B, C, D, H, W), got {tuple(image.shape)}."
            )
        if image.shape[0] == 0:
            raise ValueError(f"{name}: `image` batch is empty (B=0); expected at least one sample.")
        if self.num_channels is not None and image.shape[1] != self.num_channels:
            raise ValueError(f"{name}: `image` has {image.shape[1]} channels, expected {self.num_channels}.")
        if not image.is_floating_point() and not self.allow_integer:
            raise TypeError(f"{name}: `image` must be a floating tensor, got {image.dtype}.")
        if self.check_finite and image.is_floating_point() and not bool(torch.isfinite(image).all()):
            raise ValueError(f"{name}: `image` contains NaN or Inf values.")
        if label is not None:
            if not isinstance(label, torch.Tensor):
                raise TypeError(f"{name}: `label` must be a torch.Tensor, got {type(label).__name__}.")
            if (
                label.ndim != image.ndim
                or label.shape[0] != image.shape[0]
                or label.shape[2:] != image.shape[2:]
            ):
                raise ValueError(
                    f"{name}: `label` shape {tuple(label.shape)} does not match `image` shape "
                    f"{tuple(image.shape)}; expected the same batch size and spatial size."
                )

    def draw(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        """Draw per-sample parameters (subclasses)."""
        return {}

    def apply(
        self, image: torch.Tensor, label: torch.Tensor | None, params: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Apply with the given parameters (subclasses)."""
        raise NotImplementedError

    def run(
        self, image: torch.Tensor, label: torch.Tensor | None = None, params: dict[str, Any] | None = None
    ) -> BatchAugResult:
        """Draw (unless ``params`` is given) and apply, without validation."""
        if params is None:
            b, dev = image.shape[0], image.device
            g = self.generator(dev)
            if self.prob >= 1.0:
                apply = torch.ones(b, dtype=torch.bool, device=dev)
            else:
                apply = torch.rand(b, generator=g, device=dev) < self.prob
            params = {"apply": apply, **self.draw(image, g)}
        elif params["apply"].shape[0] != image.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: `params` are for {params['apply'].shape[0]} samples, "
                f"`image` has {image.shape[0]}."
            )
        out, lab = self.apply(image, label, params)
        return BatchAugResult(out, lab, params)

    def forward(
        self, image: torch.Tensor, label: torch.Tensor | None = None, params: dict[str, Any] | None = None
    ) -> BatchAugResult:
        """Validate, then draw (unless ``params`` is given) and apply."""
        self.validate(image, label)
        return self.run(image, label, params)

    @staticmethod
    def _mask(apply: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return apply.reshape(-1, *([1] * (x.ndim - 1)))

    def _uniform(self, lo: float, hi: float, b: int, g: torch.Generator, dev: torch.device) -> torch.Tensor:
        return torch.rand(b, generator=g, device=dev) * (hi - lo) + lo


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

    def apply(self, image, label, params):
        g = torch.Generator(device=image.device)
        g.set_state(params["noise_state"])
        own = self._gen is not None and self._gen.device == image.device
        fresh = own and torch.equal(self._gen.get_state(), params["noise_state"])
        std = (params["std"] * params["apply"]).to(image.dtype)
        mean = (self.mean * params["apply"]).to(image.dtype) if self.mean else 0.0
        out = fi.add_gaussian_noise(image, std, mean, generator=g)
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
        self.gamma = _range(gamma, "gamma", "BatchRandGamma", low=1e-6)

    def draw(self, image, generator):
        return {"gamma": self._uniform(*self.gamma, image.shape[0], generator, image.device)}

    def apply(self, image, label, params):
        out = fi.adjust_gamma(image, params["gamma"], spatial_dims=image.ndim - 2)
        return torch.where(self._mask(params["apply"], image), out, image), label


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
        self.degree, self.coeff_range = degree, _range(coeff_range, "coeff_range", "BatchRandBiasField")

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
        self.sigma = _range(sigma, "sigma", "BatchRandGaussianBlur", low=0.0)
        self.radius = max(1, int(4.0 * self.sigma[1] + 0.999))

    def draw(self, image, generator):
        return {"sigma": self._uniform(*self.sigma, image.shape[0], generator, image.device)}

    def apply(self, image, label, params):
        out = fi.gaussian_blur(image, params["sigma"], radius=self.radius, spatial_dims=image.ndim - 2)
        return torch.where(self._mask(params["apply"], image), out, image), label


class BatchRandLowResolution(BatchAugmentation):
    """Simulated low resolution: nearest down-sampling by ``zoom ~ U(zoom)``, linear up-sampling back.

    Example:
        >>> BatchRandLowResolution(zoom=(0.5, 1.0), seed=0)(torch.rand(2, 1, 8, 8)).image.shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, prob: float = 0.1, zoom: float | Sequence[float] = (0.5, 1.0), **kwargs: Any) -> None:
        super().__init__(prob=prob, **kwargs)
        self.zoom = _range(zoom, "zoom", "BatchRandLowResolution", low=1e-3)
        if self.zoom[1] > 1.0:
            raise ValueError(f"BatchRandLowResolution: `zoom` must lie in (0, 1], got {zoom}.")

    def draw(self, image, generator):
        return {"zoom": self._uniform(*self.zoom, image.shape[0], generator, image.device)}

    def apply(self, image, label, params):
        out = fi.simulate_low_resolution(image, params["zoom"], spatial_dims=image.ndim - 2)
        return torch.where(self._mask(params["apply"], image), out, image), label
